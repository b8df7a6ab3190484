import Foundation
import Glibc
import LinuxFile
import MRLeaseProtocol
import TestSupport
import XCTest

/// A client that sends requests and never reads its replies: the daemon queues what the socket
/// will not take, and must bound that in bytes (per client and in total), not only in messages.
final class MemoryBoundTests: XCTestCase {
    /// A `hello` the daemon answers with an `unsupported-version` error of a few hundred bytes
    /// (it echoes at most 16 of the versions: every reply fits one packet).
    static let bigHello = Codec.encode(.hello(.init(clientName: "reader-never", versions: Array(2...17))), id: 1)

    /// Sends `bigHello` up to `count` times without reading; returns how many went before the
    /// daemon dropped the connection, or nil if it never did.
    func flood(_ socket: UnixSocket, count: Int) -> Int? {
        for sent in 0..<count {
            do { try socket.send(Self.bigHello) } catch { return sent }
        }
        return nil
    }

    func floodClients(_ daemon: RunningDaemon, clients: Int, count: Int) throws -> [Int?] {
        let sockets = try (0..<clients).map { _ in try UnixSocket.connect(path: daemon.socketPath) }
        return sockets.map { flood($0, count: count) }
    }

    func testClientsThatNeverReadAreDisconnectedPastTheirByteBoundAndTheDaemonsRSSStaysBounded() throws {
        // The message count bound out of the way: only bytes can stop these clients.
        let daemon = try RunningDaemon(environment: ["MRLEASED_MAX_QUEUED_BYTES_PER_CLIENT": "65536",
                                                     "MRLEASED_MAX_QUEUED_MESSAGES": "1000000"])
        let before = try DaemonWire.rssKiB(daemon.pid)
        let sent = try floodClients(daemon, clients: 4, count: 20_000)
        let after = try DaemonWire.rssKiB(daemon.pid)
        print("[measure] 4 clients × 20 000 hellos, never reading: daemon VmRSS \(before) KiB → \(after) KiB; requests before disconnect: \(sent)")
        for (index, count) in sent.enumerated() {
            XCTAssertNotNil(count, "client \(index) sent 20 000 requests without reading a reply and was never disconnected")
        }
        XCTAssertLessThan(after - before, 24 * 1024, "RSS grew \(after - before) KiB")
        XCTAssertTrue(daemon.log.contains("max-queued-bytes-per-client"), "the log names the bound: \(daemon.log.suffix(2000))")
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testTheDaemonsTotalQueuedBytesAreBoundedAcrossClients() throws {
        let daemon = try RunningDaemon(environment: ["MRLEASED_MAX_QUEUED_BYTES": "524288", "MRLEASED_MAX_QUEUED_BYTES_PER_CLIENT": "67108864",
                                                     "MRLEASED_MAX_QUEUED_MESSAGES": "1000000",
                                                     "MRLEASED_LOG_LEVEL": "debug"])
        let sent = try floodClients(daemon, clients: 3, count: 20_000)
        print("[measure] total bound 512 KiB, 3 clients never reading: requests before disconnect \(sent)")
        for (index, count) in sent.enumerated() { XCTAssertNotNil(count, "client \(index) was never disconnected") }
        XCTAssertTrue(daemon.log.contains("max-queued-bytes"), daemon.log.suffix(2000).description)
        XCTAssertEqual(daemon.stop(), 0)
    }
}
