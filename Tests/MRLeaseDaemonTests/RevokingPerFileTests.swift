import Foundation
import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

@testable import MRLeaseDaemon

/// `revoking-file` and `ack` of a file (docs/protocol.md §5), in-process: one event per file for
/// a connection that asked, `revoking` per region for one that did not, on the same file.
final class RevokingPerFileTests: XCTestCase {
    func scratchFile() throws -> (ScratchDirectory, String, FileDescriptor) {
        let scratch = try ScratchDirectory(in: Facility.ext4.value)
        let path = try scratch.file("data", size: 4 << 20)
        return (scratch, path, try FileDescriptor.open(FilePath(path), .readWrite))
    }

    func testOneEventPerFileForAConnectionThatAskedAndItsOneAckCoversThemAll() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let daemon = try InProcessDaemon { $0.quiesceMillis = 30_000 }
        daemon.registrar.inode = try FileFacts.inspect(fd).inode
        let perFile = try daemon.connect(), perRegion = try daemon.connect()
        guard case .hello(let hello) = try perFile.request(.hello(.init(revokingPerFile: true))) else { return XCTFail("hello") }
        XCTAssertTrue(hello.revokingPerFile)
        guard case .hello(let plain) = try perRegion.request(.hello(.init())) else { return XCTFail("hello") }
        XCTAssertFalse(plain.revokingPerFile)
        // perFile's ids come in two runs around perRegion's.
        let first = try (0..<5).map { try perFile.register(fd, offset: UInt64($0) * 4096).region }
        let other = try (5..<7).map { try perRegion.register(fd, offset: UInt64($0) * 4096).region }
        let last = try perFile.register(fd, offset: 7 * 4096).region
        guard case .list(let page) = try perFile.request(.list(after: nil)), let file = page.regions.first?.file else { return XCTFail("list") }

        let reader = try Subprocess.start("/bin/cat", [path])
        XCTAssertTrue(daemon.drive(seconds: 25) { perFile.events.count >= 1 && perRegion.events.count >= 2 },
                      "\(perFile.events) \(perRegion.events)")
        guard perFile.events.count == 1, case .revokingFile(let event) = perFile.events[0] else {
            return XCTFail("one revoking-file expected: \(perFile.events)")
        }
        XCTAssertEqual(event.file, file)
        XCTAssertEqual(event.runs, [first[0]...first[4], last...last])
        XCTAssertEqual(event.count, 6)
        XCTAssertEqual(event.reason, .leaseBreak)
        XCTAssertFalse(event.more)
        XCTAssertEqual(perRegion.events.map(\.name), [.revoking, .revoking])
        XCTAssertEqual(perRegion.events.compactMap(\.region), other)
        XCTAssertEqual(daemon.engine.indexProblems(), [])

        // perFile's one ack covers its six; the reader still waits for perRegion's two.
        _ = try perFile.request(.ackFile(file))
        XCTAssertEqual(daemon.engine.indexProblems(), [])
        XCTAssertTrue(reader.isRunning, "the reader must wait for the other connection's acks")
        XCTAssertThrowsError(try perRegion.request(.ackFile(file)), "ack of a file without revokingPerFile") {
            XCTAssertEqual(($0 as? ProtocolError)?.code, .badRequest, "\($0)")
        }
        _ = try perRegion.request(.ackRegions(other))
        XCTAssertTrue(daemon.drive(seconds: 25) { !reader.isRunning && perFile.events.count >= 13 }, "\(perFile.events)")
        reader.waitUntilExit()
        XCTAssertEqual(reader.terminationStatus, 0)
        // The rest comes per region, after the unlock.
        let ids = first + [last]
        XCTAssertEqual(perFile.events.dropFirst().map { "\($0.name.rawValue) \($0.region ?? 0)" },
                       ids.map { "revoked \($0)" } + ids.map { "restored \($0)" })
        // A late ack of the file, and one of a file with nothing of this connection's, succeed.
        _ = try perFile.request(.ackFile(file))
        _ = try perFile.request(.ackFile("1:2:3"))
        XCTAssertEqual(daemon.engine.list().map(\.state), Array(repeating: .registered, count: 8))
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }

    /// Deregistering a region whose ack is outstanding counts as its ack; the file's ack then
    /// covers the rest, and the revocation runs at once.
    func testAFileAckAfterSomeRegionsWentEndsTheWait() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let daemon = try InProcessDaemon { $0.quiesceMillis = 30_000 }
        daemon.registrar.inode = try FileFacts.inspect(fd).inode
        let client = try daemon.connect()
        _ = try client.request(.hello(.init(revokingPerFile: true)))
        let ids = try (0..<4).map { try client.register(fd, offset: UInt64($0) * 4096).region }
        let reader = try Subprocess.start("/bin/cat", [path])
        XCTAssertTrue(daemon.drive(seconds: 25) { !client.events.isEmpty })
        guard case .revokingFile(let event) = client.events.first else { return XCTFail("\(client.events)") }
        _ = try client.request(.deregister(region: ids[1]))
        _ = try client.request(.ackRegions([ids[2]]))
        XCTAssertEqual(daemon.engine.indexProblems(), [])
        XCTAssertTrue(reader.isRunning)
        _ = try client.request(.ackFile(event.file))
        XCTAssertTrue(daemon.drive(seconds: 25) { !reader.isRunning }, "the file's ack must end the wait")
        reader.waitUntilExit()
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }
}
