import Glibc
import LinuxFile
import MRLeaseEngine
import XCTest

@testable import MRLeaseDaemon

/// The stall clock on the daemon's own time (`Daemon.currentTime`), which a timer pass run
/// ahead of the monotonic clock moves forward.
final class StallClockTests: XCTestCase {
    /// Found by the sequence fuzzer: events sent during a pass of `fireTimers(now:)` an hour
    /// ahead filled a client's socket, its stall clock started on the monotonic clock, and the
    /// same pass (an hour "later") cut the client before it could read a byte.
    func testAClockStartedAtATimerPassAheadOfTheClockRunsFromThatPass() throws {
        let daemon = try InProcessDaemon { $0.clientStallMillis = 1000 }
        let client = try daemon.connect()
        _ = try client.request(.stats)
        client.reading = false
        let session = try XCTUnwrap(client.session)
        var small: Int32 = 1
        XCTAssertEqual(setsockopt(session.descriptor.rawValue, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size)), 0)

        let ahead = Engine.now() + 3_600_000_000_000
        daemon.daemon.fireTimers(now: ahead)
        XCTAssertGreaterThanOrEqual(daemon.daemon.currentTime(), ahead)
        // Packets the client does not read, until the daemon has to queue one: its clock starts.
        let packet = [UInt8](repeating: UInt8(ascii: " "), count: 2048)
        var sent = 0
        while session.outbox.isEmpty, sent < 10_000 {
            XCTAssertTrue(daemon.daemon.send(packet, to: session, what: "test packets"))
            sent += 1
        }
        let since = try XCTUnwrap(session.stalledSince, "queued after \(sent) packets, yet no stall clock")
        XCTAssertGreaterThanOrEqual(since, ahead)

        daemon.daemon.fireTimers(now: ahead)
        XCTAssertNotNil(client.session, "cut by the pass its clock started at")
        daemon.daemon.fireTimers(now: since + 999_000_000)
        XCTAssertNotNil(client.session, "cut before client-stall-ms ran out")
        daemon.daemon.fireTimers(now: since + 1_000_000_000)
        XCTAssertNil(client.session, "still connected after client-stall-ms without reading")
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }
}
