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

/// The daemon's routing of engine events, in-process: disconnects caused by delivering events,
/// FIEMAP failures, an operator's revoke. The engine's indexes are checked after each step.
final class RoutingTests: XCTestCase {
    /// A file on a filesystem with FIEMAP and leases: the guest's ext4 when set, else TMPDIR.
    func scratchFile(size: Int = 4 << 20) throws -> (ScratchDirectory, String, FileDescriptor) {
        let scratch = try ScratchDirectory(in: Facility.ext4.value)
        let path = try scratch.file("data", size: size)
        return (scratch, path, try FileDescriptor.open(FilePath(path), .readWrite))
    }

    func spawn(_ tool: String, _ arguments: [String]) throws -> Process {
        try Subprocess.start(tool, arguments)
    }

    func names(_ events: [Event]) -> [String] {
        events.map { "\($0.name.rawValue) \($0.region.map(String.init) ?? "-")" }
    }

    func testEventsForClientsThatDoNotReadAreBoundedInTotalBytesAcrossClients() throws {
        let (scratch, path, fd) = try scratchFile(size: 8 << 20)
        defer { try? fd.close(); _ = scratch }
        // Only the total can stop them: the per-client bounds and the stall bound are far off.
        let daemon = try InProcessDaemon {
            $0.maxQueuedBytes = 65_536
            $0.maxQueuedBytesPerClient = 64 << 20
            $0.maxQueuedMessages = 1_000_000
            $0.clientStallMillis = 600_000
            $0.quiesceMillis = 200
        }
        daemon.registrar.inode = try FileFacts.inspect(fd).inode
        let slow = try (0..<3).map { _ in try daemon.connect() }
        for (index, client) in slow.enumerated() {
            _ = try (0..<500).map { try client.register(fd, offset: UInt64(index * 500 + $0) * 4096).region }
            client.reading = false
            var small: Int32 = 1
            let session = try XCTUnwrap(client.session)
            XCTAssertEqual(setsockopt(session.descriptor.rawValue, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size)), 0)
        }
        // 1 500 revoking events of about 95 bytes: twice the 64 KiB bound, queued in all.
        let reader = try spawn("/bin/cat", [path])
        XCTAssertTrue(daemon.drive(seconds: 25) { slow.contains { $0.session == nil } && !reader.isRunning },
                      "no client was disconnected by the total bound")
        reader.waitUntilExit()
        let queued = daemon.daemon.sessions.values.reduce(UInt64(0)) { $0 + $1.outboxBytes }
        XCTAssertLessThanOrEqual(queued, 65_536 + UInt64(Codec.maxMessageBytes), "queued for all clients")
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }

    func testSlowClientDisconnectedWhileItsFileIsRevokedLeavesEveryRegionRightAndTheIndexesAgreeing() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        // Acks, not the deadline, end this revocation: the bystander's are the ones awaited.
        // (The deadline is long because the recording registrar reads /proc/self/maps at each
        // deregistration: slow under the guests' emulated CPU.)
        let daemon = try InProcessDaemon { $0.maxQueuedMessages = 4; $0.quiesceMillis = 30_000 }
        daemon.registrar.inode = try FileFacts.inspect(fd).inode
        let slow = try daemon.connect()
        let bystander = try daemon.connect()
        let slowRegions = try (0..<60).map { try slow.register(fd, offset: UInt64($0) * 4096).region }
        let kept = try (300..<302).map { try bystander.register(fd, offset: UInt64($0) * 4096).region }
        XCTAssertEqual(daemon.engine.indexProblems(), [])
        // The slow client stops reading, and its socket takes only a few packets.
        var small: Int32 = 1
        slow.reading = false
        let session = try XCTUnwrap(slow.session)
        XCTAssertEqual(setsockopt(session.descriptor.rawValue, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size)), 0)

        let start = Date()
        let reader = try spawn("/bin/cat", [path])
        // 60 revoking events cannot reach the slow client: it is disconnected while they are
        // routed, and its regions go while the file's revocation waits for the bystander.
        XCTAssertTrue(daemon.drive(seconds: 25) { slow.session == nil && bystander.events.count >= 2 && daemon.engine.indexProblems().isEmpty },
                      "slow client still connected, or \(names(bystander.events)), or \(daemon.engine.indexProblems())")
        XCTAssertEqual(daemon.engine.list(owner: slow.owner), [])
        XCTAssertEqual(daemon.engine.list(owner: bystander.owner).map(\.id.rawValue), kept)
        XCTAssertEqual(daemon.engine.list(owner: bystander.owner).map(\.state), [.revoking, .revoking])
        XCTAssertEqual(daemon.engine.usage(uid: getuid()), { var u = Usage(); u.regions = 2; u.bytes = 8192; return u }())
        XCTAssertTrue(reader.isRunning, "the reader must wait for the bystander's acks")

        for region in kept { _ = try bystander.request(.ack(region: region)) }
        XCTAssertTrue(daemon.drive(seconds: 25) { !reader.isRunning && bystander.events.count >= 6 }, "\(names(bystander.events))")
        reader.waitUntilExit()
        XCTAssertEqual(reader.terminationStatus, 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 25, "acks, not the 30 s deadline, must end the revocation")
        XCTAssertEqual(names(bystander.events), kept.map { "revoking \($0)" } + kept.map { "revoked \($0)" } + kept.map { "restored \($0)" })
        XCTAssertEqual(daemon.engine.list().map(\.state), [.registered, .registered])
        XCTAssertEqual(daemon.engine.indexProblems(), [])
        XCTAssertEqual(daemon.daemon.sessions.count, 1)

        // Every MR went while the lease and its mapping were still in place.
        let deregistrations = daemon.registrar.steps.filter { $0.hasPrefix("deregister") }
        XCTAssertEqual(deregistrations.count, slowRegions.count + kept.count)
        XCTAssertEqual(Set(deregistrations), ["deregister lease=true mapped=true"])
        // What the slow client got before the cut: replies, then only its own revoking events.
        try slow.pump()
        XCTAssertTrue(slow.closedByDaemon)
        XCTAssertTrue(slow.events.allSatisfy { $0.name == .revoking && $0.region.map(slowRegions.contains) == true }, "\(names(slow.events))")
    }

    func testFIEMAPFailureAtRestoreIsReportedAsLayoutUnknownNotUnchanged() throws {
        let (scratch, path, fd) = try scratchFile(size: 1 << 20)
        defer { try? fd.close(); _ = scratch }
        let failing = Switch()
        let reader = ExtentReader { fd, backing throws(Errno) in
            if failing.on { throw .ioError }
            return try ExtentReader.fiemap.read(fd, backing)
        }
        let daemon = try InProcessDaemon(extentReader: reader) { $0.quiesceMillis = 50 }
        let client = try daemon.connect()
        let region = try client.register(fd, offset: 0, length: 65536).region
        guard case .verify(let before) = try client.request(.verify(region: region)) else { return XCTFail("verify") }
        XCTAssertEqual(before.layout, .unchanged)

        failing.on = true
        let breaker = try spawn("/bin/cat", [path])
        XCTAssertTrue(daemon.drive { client.events.contains { $0.name == .restored } }, "\(names(client.events))")
        breaker.waitUntilExit()
        guard case .restored(let restored) = client.events.last else { return XCTFail("\(names(client.events))") }
        XCTAssertEqual(restored.layout, .unknown, "the daemon could not read the extents: it must not say unchanged")
        XCTAssertTrue(restored.layoutChanged, "the boolean errs on the safe side")

        // Even once FIEMAP works again, the baseline was never read: still unknown.
        failing.on = false
        guard case .verify(let after) = try client.request(.verify(region: region)) else { return XCTFail("verify") }
        XCTAssertEqual(after.layout, .unknown)
        XCTAssertTrue(after.layoutChanged)
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }

    func testOperatorsRevokeTellsTheOwnerLostWithReasonRevoked() throws {
        let (scratch, _, fd) = try scratchFile(size: 1 << 20)
        defer { try? fd.close(); _ = scratch }
        let daemon = try InProcessDaemon()
        let client = try daemon.connect()
        let gone = try client.register(fd, offset: 0).region
        let stays = try client.register(fd, offset: 4096).region
        daemon.daemon.route(try daemon.engine.revoke(RegionID(gone)))
        XCTAssertTrue(daemon.drive { !client.events.isEmpty })
        guard case .lost(let lost) = client.events.first else { return XCTFail("\(names(client.events))") }
        XCTAssertEqual(lost.region, gone)
        XCTAssertEqual(lost.reason, .revoked)
        guard case .list(let list) = try client.request(.list(after: nil)) else { return XCTFail("list") }
        XCTAssertEqual(list.regions.map(\.region), [stays])
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }
}

/// A flag the test flips while the engine's extent reader (a @Sendable closure) reads it; one
/// thread only.
final class Switch: @unchecked Sendable {
    var on = false
}
