import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import XCTest

@testable import MRLeaseEngine
import MRLeasePolicy

/// Layout policy `follow`, on the recording registrar (which offers ODP): what the engine does
/// with following regions, their file's lease and its layout changes. Bookkeeping only: that an
/// ODP MR really follows the file is shown with rxe in the 7.3.4 guest (FollowVMTests).
final class FollowHostTests: XCTestCase {
    var events: [(OwnerID, EngineEvent)] = []
    let owner = OwnerID(1)

    func scratchFile(size: Int = 1 << 20) throws -> (ScratchDirectory, String, FileDescriptor) {
        let scratch = try ScratchDirectory(in: Facility.ext4.value)
        let path = try scratch.file("data", size: size)
        return (scratch, path, try FileDescriptor.open(FilePath(path), .readWrite))
    }

    func drive(_ engine: Engine, seconds: Double = 10, until done: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        while !done() && Date() < deadline {
            events += engine.poll(timeout: .milliseconds(10)).map { ($0.owner, $0.event) }
        }
    }

    func names() -> [String] { events.map(\.1.summary) }

    /// Runs a tool to its end while the engine is driven (a breaker must never wait for it).
    func run(_ tool: String, _ arguments: [String], engine: Engine) throws -> TimeInterval {
        let start = Date()
        let child = try Subprocess.start(tool, arguments)
        drive(engine) { !child.isRunning }
        child.waitUntilExit()
        XCTAssertEqual(child.terminationStatus, 0, "\(tool) \(arguments)")
        return Date().timeIntervalSince(start)
    }

    func testAFileWhoseRegionsFollowHoldsNoLeaseAndItsRangesChangesAreToldWithTheSameKeys() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let (registrar, engine) = try recordingEngine(for: fd)
        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 65536, access: [.read, .write], layoutPolicy: .follow)
        XCTAssertEqual(region.strategy, .odp)
        XCTAssertEqual(region.layoutPolicy, .follow)
        XCTAssertFalse(RecordingRegistrar.leaseHeld(inode: registrar.inode), "a file whose regions all follow holds no lease")
        XCTAssertEqual(engine.statistics().leasesHeld, 0)

        // Another process extends the file (past the region: its blocks stay), then punches a
        // hole in the region: nothing is revoked; the punch is told, with the file's size.
        _ = try run("/usr/bin/perl", ["-e", "truncate($ARGV[0], 2 << 20) or die $!", path], engine: engine)
        _ = try run("/usr/bin/fallocate", ["-p", "-o", "4096", "-l", "8192", path], engine: engine)
        drive(engine) { !events.isEmpty }
        drive(engine, seconds: 0.2) { false }
        XCTAssertEqual(names(), ["layout \(region.id) changed \(2 << 20)"])
        XCTAssertEqual(engine.info(region.id)?.keys, region.keys, "a following region keeps its keys")
        XCTAssertEqual(engine.info(region.id)?.generation, 1)
        XCTAssertEqual(engine.info(region.id)?.state, .registered)
        XCTAssertEqual(registrar.steps.filter { $0.hasPrefix("deregister") }, [], "no MR went")
        XCTAssertEqual(try engine.verify(region.id).layout, .unchanged, "verify compares against what the owner was told")
        XCTAssertEqual(engine.statistics().breaksHandled, 0)
        XCTAssertEqual(engine.statistics().layoutChangesFollowed, 1)
        XCTAssertEqual(engine.indexProblems(), [])
    }

    func testAShrinkBelowAFollowingRegionLosesItAndItsMR() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        let engine = try Engine(registrar: registrar)
        let kept = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write], layoutPolicy: .follow)
        let cut = try engine.register(owner: owner, fd: fd, offset: 65536, length: 4096, access: [.read, .write], layoutPolicy: .follow)
        _ = try run("/usr/bin/perl", ["-e", "truncate($ARGV[0], 8192) or die $!", path], engine: engine)
        drive(engine) { !events.isEmpty }
        XCTAssertEqual(names(), ["lost \(cut.id) range-truncated"])
        XCTAssertEqual(registrar.steps.filter { $0.hasPrefix("deregister") }.count, 1, "the lost region's MR went, the other's stayed")
        XCTAssertEqual(engine.list().map(\.id), [kept.id])
        XCTAssertEqual(engine.info(kept.id)?.keys, kept.keys)
        XCTAssertEqual(engine.usage(uid: 0).regions, 1)
        XCTAssertEqual(engine.indexProblems(), [])
    }

    func testAFileWithPinnedAndFollowingRegionsRevokesOnlyThePinnedOnes() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let (registrar, engine) = try recordingEngine(for: fd)
        let follows = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write], layoutPolicy: .follow)
        XCTAssertFalse(RecordingRegistrar.leaseHeld(inode: registrar.inode))
        let pinned = try engine.register(owner: owner, fd: fd, offset: 8192, length: 4096, access: [.read, .write],
                                         preference: .pinned, layoutPolicy: .follow)
        XCTAssertEqual(pinned.layoutPolicy, .revoke, "a pinned region always revokes")
        XCTAssertTrue(RecordingRegistrar.leaseHeld(inode: registrar.inode), "the pinned region's lease")

        // A reader opens the file: the break revokes and restores the pinned region alone.
        _ = try run("/bin/cat", [path], engine: engine)
        drive(engine) { events.contains { if case .restored = $0.1 { true } else { false } } }
        XCTAssertEqual(names(), ["revoking \(pinned.id)", "revoked \(pinned.id)", "restored \(pinned.id)"])
        XCTAssertEqual(engine.info(follows.id)?.keys, follows.keys)
        XCTAssertEqual(engine.info(follows.id)?.generation, 1)
        XCTAssertEqual(engine.info(pinned.id)?.generation, 2)
        XCTAssertEqual(registrar.steps.filter { $0.hasPrefix("deregister") }.count, 1, "only the pinned MR was deregistered")

        // The pinned region goes: the lease goes with it, the following region stays.
        _ = try engine.deregister(pinned.id)
        XCTAssertFalse(RecordingRegistrar.leaseHeld(inode: registrar.inode), "no lease for following regions alone")
        XCTAssertEqual(engine.list().map(\.id), [follows.id])
        XCTAssertEqual(engine.indexProblems(), [])
    }

    func testAPinnedRegionLostToAShrinkLeavesTheFileToItsFollowingRegions() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        registrar.inode = try FileFacts.inspect(fd).inode
        let engine = try Engine(registrar: registrar, configuration: .init(timing: .init(quiesce: 10_000_000)))
        let follows = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write], layoutPolicy: .follow)
        let pinned = try engine.register(owner: owner, fd: fd, offset: 65536, length: 4096, access: [.read, .write], preference: .pinned)
        _ = try run("/usr/bin/perl", ["-e", "truncate($ARGV[0], 8192) or die $!", path], engine: engine)
        drive(engine) { events.contains { if case .lost = $0.1 { true } else { false } } }
        XCTAssertEqual(names(), ["revoking \(pinned.id)", "revoked \(pinned.id)", "lost \(pinned.id) range-truncated"])
        XCTAssertEqual(engine.list().map(\.id), [follows.id])
        XCTAssertFalse(RecordingRegistrar.leaseHeld(inode: registrar.inode))
        XCTAssertEqual(engine.indexProblems(), [])
        // The file takes registrations again, following and pinned.
        let again = try engine.register(owner: owner, fd: fd, offset: 4096, length: 4096, access: [.read, .write], preference: .pinned)
        XCTAssertTrue(RecordingRegistrar.leaseHeld(inode: registrar.inode))
        XCTAssertEqual(engine.list().map(\.id), [follows.id, again.id])
        XCTAssertEqual(engine.indexProblems(), [])
    }
}
