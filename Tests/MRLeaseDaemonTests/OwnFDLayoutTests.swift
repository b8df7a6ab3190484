import CLinux
import Foundation
import Glibc
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

@testable import MRLeaseDaemon

/// What a client hears on the wire when it changes its registered file through its own fd
/// (which breaks no lease) or unlinks it: in-process daemon, recording registrar.
final class OwnFDLayoutTests: XCTestCase {
    func scratchFile() throws -> (ScratchDirectory, String, FileDescriptor) {
        let scratch = try ScratchDirectory(in: Facility.ext4.value)
        let path = try scratch.file("data", size: 1 << 20)
        return (scratch, path, try FileDescriptor.open(FilePath(path), .readWrite))
    }

    /// An in-process daemon whose client registered [0, 64 KiB) of a scratch file through its
    /// fd, then punched a hole in the first page through that fd (no lease breaks) and got the
    /// three events that makes; with the `stats` from before the punch, and the scratch
    /// directory to keep until the test ends.
    func punchThroughTheOwnersFD() throws -> (InProcessDaemon, InProcessClient, Registration, before: Statistics, ScratchDirectory) {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close() }
        let daemon = try InProcessDaemon()
        daemon.registrar.inode = try FileFacts.inspect(fd).inode
        let client = try daemon.connect()
        let region = try client.register(fd, offset: 0, length: 65536)
        let before = try stats(client)
        XCTAssertEqual(mrl_fallocate(fd.rawValue, MRL_FALLOC_FL_PUNCH_HOLE | MRL_FALLOC_FL_KEEP_SIZE, 0, 4096), 0)
        XCTAssertTrue(daemon.drive { client.events.count >= 3 }, "\(client.events)")
        return (daemon, client, region, before, scratch)
    }

    func stats(_ client: InProcessClient) throws -> Statistics {
        let reply = try client.request(.stats)
        if case .stats(let stats) = reply { return stats }
        return try XCTUnwrap(nil, "stats answered \(reply)")
    }

    func testHelloSaysHowLayoutChangesThroughTheClientsFDAreCaught() throws {
        let daemon = try InProcessDaemon()
        let client = try daemon.connect()
        guard case .hello(let hello) = try client.request(.hello(.init(clientName: "layout"))) else { return XCTFail("no hello") }
        XCTAssertEqual(hello.layoutProtection, .inotifyDetect)
    }

    func testPunchThroughTheClientsFDIsRevokedWithoutQuiesceAndRestoredWithReasonLayoutChanged() throws {
        let (daemon, client, region, _, scratch) = try punchThroughTheOwnersFD()
        defer { _ = scratch }
        guard client.events.count == 3, case .revoking(let revoking) = client.events[0],
              case .restored(let restored) = client.events[2] else { return XCTFail("\(client.events)") }
        XCTAssertEqual(revoking.reason, .layoutChanged)
        XCTAssertEqual(revoking.deadlineMillis, 0, "no quiesce: the MR already disagrees with the file")
        XCTAssertEqual(client.events[1], .revoked(region: region.region))
        XCTAssertEqual(restored.layout, .changed)
        XCTAssertNotEqual(restored.rkey, region.rkey)
        // An ack after the fact is accepted and changes nothing.
        XCTAssertEqual(try client.request(.ack(region: region.region)), .ack)
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }

    func testStatsCountsTheLayoutChangeAndTheChecksThatFoundIt() throws {
        let (daemon, client, _, before, scratch) = try punchThroughTheOwnersFD()
        defer { _ = (daemon, scratch) }  // the daemon answers the stats below
        XCTAssertEqual(before.layoutChangesHandled, 0)
        let after = try stats(client)
        XCTAssertEqual(after.layoutChangesHandled, 1)
        XCTAssertEqual(after.breaksHandled, 0, "no lease broke: the change came through the leased open file")
        XCTAssertGreaterThan(try XCTUnwrap(after.layoutChecks), try XCTUnwrap(before.layoutChecks), "the check that found it")
    }

    func testUnlinkOfARegisteredFileSendsUnlinkedOnceAndKeepsTheRegion() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let daemon = try InProcessDaemon()
        let client = try daemon.connect()
        let region = try client.register(fd, offset: 0)
        XCTAssertEqual(unlink(path), 0)
        XCTAssertTrue(daemon.drive { !client.events.isEmpty })
        daemon.drive(seconds: 0.2) { false }
        XCTAssertEqual(client.events, [.unlinked(region: region.region)])
        guard case .list(let list) = try client.request(.list(after: nil)) else { return XCTFail("no list") }
        XCTAssertEqual(list.regions.map(\.state), [.registered])
        XCTAssertEqual(try client.request(.deregister(region: region.region)), .deregister)
    }
}
