import CLinux
import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import Verbs
import XCTest

@testable import MRLeaseEngine
import MRLeasePolicy

/// Issue 19, "large ranges off the loop": a pinned registration of at least `offloadPinBytes`
/// comes back as a `PinJob`; the engine goes on (a lease break during the pin is answered at
/// once) and the job's MR becomes a region only if the lease it began under held throughout.
/// Checked with the recording registrar (ordering and bookkeeping; the guest suites pin for real).
final class PinJobHostTests: XCTestCase {
    let owner = OwnerID(1)

    func engine(for fd: FileDescriptor) throws -> (RecordingRegistrar, Engine) {
        let registrar = RecordingRegistrar()
        registrar.inode = try FileFacts.inspect(fd).inode
        return (registrar, try Engine(registrar: registrar, configuration: .init(offloadPinBytes: 65536)))
    }

    func start(_ engine: Engine, _ fd: FileDescriptor, offset: UInt64 = 0, length: UInt64) throws -> RegistrationStep {
        let facts = try FileFacts.inspect(fd)
        let plan = try RegistrationPlan.make(file: PlannedFile(facts), mode: .readWrite, offset: offset, length: length, access: [.read, .write],
                                             preference: .pinned, layoutPolicy: .revoke, device: engine.device, lessee: .privileged,
                                             pageSize: UInt64(SharedMapping.pageSize)).get()
        return try engine.startRegistration(owner: owner, uid: 0, fd: fd, facts: facts, plan: plan)
    }

    func job(_ step: RegistrationStep) throws -> PinJob {
        guard case .pinning(let job) = step else { throw TestFailure("registered on the caller's thread: \(step)") }
        return job
    }

    func testAPinBelowTheSizeIsMadeAtOnceAndOneAboveIsLeftToAWorker() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let (registrar, engine) = try engine(for: fd)
        guard case .registered(let small) = try start(engine, fd, length: 4096) else { return XCTFail("a 4 KiB pin was left to a worker") }
        XCTAssertEqual(small.strategy, .pinned)
        let job = try job(try start(engine, fd, offset: 65536, length: 262_144))
        XCTAssertEqual(registrar.steps, ["register pinned"], "the large pin is not made by startRegistration")
        XCTAssertFalse(job.hasRun)
        job.run()
        guard case .registered(let large) = try engine.finishRegistration(job) else { return XCTFail("finished into another pin") }
        XCTAssertEqual(registrar.steps, ["register pinned", "register pinned"])
        XCTAssertEqual(large.strategy, .pinned)
        XCTAssertEqual(large.offset, 65536)
        XCTAssertEqual(large.length, 262_144)
        XCTAssertNotNil(large.keys)
        XCTAssertEqual(engine.regionIDs(owner: owner).sorted(), [small.id, large.id])
        XCTAssertTrue(RecordingRegistrar.leaseHeld(inode: registrar.inode))
        XCTAssertEqual(engine.indexProblems(), [])
    }

    func testABreakDuringThePinIsAnsweredAtOnceAndThePinIsThrownAway() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let (registrar, engine) = try engine(for: fd)
        let job = try job(try start(engine, fd, length: 262_144))
        XCTAssertTrue(RecordingRegistrar.leaseHeld(inode: registrar.inode), "the lease is taken before the pin begins")

        // Another process opens the file for writing while the worker pins: nothing of the
        // file's is registered yet, so the lease goes at once.
        let breaker = try Subprocess.start("/usr/bin/perl", ["-e", "open(my $f, '+<', $ARGV[0]) or die $!", path])
        var events: [EngineNotice] = []
        let deadline = Date().addingTimeInterval(10)
        while breaker.isRunning && Date() < deadline { events += engine.poll(timeout: .milliseconds(10)) }
        breaker.waitUntilExit()
        XCTAssertEqual(breaker.terminationStatus, 0, "the breaker's open went through")
        XCTAssertEqual(events, [], "nobody holds a region of the file to be told")
        XCTAssertLessThan(engine.statistics().breakToUnlock.maxMicros, 1_000_000, "answered without waiting for the pin")

        job.run()
        XCTAssertThrowsError(try engine.finishRegistration(job)) { error in
            guard case EngineError.interrupted(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("Register it again"), message)
        }
        XCTAssertEqual(registrar.steps.first, "register pinned")
        XCTAssertEqual(registrar.steps.count, 2)
        XCTAssertTrue(registrar.steps.last?.hasPrefix("deregister") ?? false, "the pinned MR goes: \(registrar.steps)")
        XCTAssertEqual(engine.statistics().files, 0, "the file is let go")
        XCTAssertEqual(RecordingRegistrar.mappings(ofInode: registrar.inode), 0, "and its window unmapped")
        XCTAssertEqual(engine.indexProblems(), [])
    }

    func testAnAbandonedPinIsDeregisteredAndItsFileLetGo() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let (registrar, engine) = try engine(for: fd)
        let job = try job(try start(engine, fd, length: 262_144))
        // The file stays tracked, leased and mapped while the pin is under way.
        XCTAssertEqual(engine.statistics().files, 1)
        XCTAssertEqual(engine.indexProblems(), [])
        job.run()
        engine.abandon(job)
        XCTAssertEqual(registrar.steps.count, 2)
        XCTAssertTrue(registrar.steps.last?.hasPrefix("deregister lease=true mapped=true") ?? false,
                      "deregistered while its lease and mapping were still there: \(registrar.steps)")
        XCTAssertEqual(engine.statistics().files, 0)
        XCTAssertFalse(RecordingRegistrar.leaseHeld(inode: registrar.inode))
        XCTAssertEqual(RecordingRegistrar.mappings(ofInode: registrar.inode), 0)
    }

    func testARefusedPinFallsThroughLikeOneMadeOnTheLoop() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let (registrar, engine) = try engine(for: fd)
        // The kernel's answer to a writable pin of a page-cache file on 6.5 and later.
        registrar.refuse = [[.localWrite]: .badAddress]
        let job = try job(try start(engine, fd, length: 262_144))
        job.run()
        XCTAssertThrowsError(try engine.finishRegistration(job)) { error in
            guard case EngineError.refused(let refusal) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(refusal.errno, .badAddress, refusal.message)
        }
        XCTAssertEqual(engine.statistics().files, 0)
        XCTAssertFalse(RecordingRegistrar.leaseHeld(inode: registrar.inode))
        XCTAssertEqual(engine.indexProblems(), [])
    }
}

/// The same for restorations: a large pinned region's MR is made again on a worker while the
/// file's lifecycle waits, and a break in the meantime lets the lease go at once.
final class PinnedRestorationHostTests: XCTestCase {
    let owner = OwnerID(1)
    var events: [EngineEvent] = []
    var pins: [PinJob] = []

    func registered(_ engine: Engine, _ fd: FileDescriptor, length: UInt64) throws -> RegionInfo {
        let facts = try FileFacts.inspect(fd)
        let plan = try RegistrationPlan.make(file: PlannedFile(facts), mode: .readWrite, offset: 0, length: length, access: [.read, .write],
                                             preference: .pinned, layoutPolicy: .revoke, device: engine.device, lessee: .privileged,
                                             pageSize: UInt64(SharedMapping.pageSize)).get()
        guard case .pinning(let job) = try engine.startRegistration(owner: owner, uid: 0, fd: fd, facts: facts, plan: plan) else {
            throw TestFailure("registered on the caller's thread")
        }
        job.run()
        guard case .registered(let info) = try engine.finishRegistration(job) else { throw TestFailure("finished into another pin") }
        return info
    }

    /// An engine that pins 64 KiB and more on a worker (quick to quiesce and to retry), and a
    /// 256 KiB pinned region of `fd` registered through it.
    func registeredLargeRegion(_ fd: FileDescriptor) throws -> (RecordingRegistrar, Engine, RegionInfo) {
        let registrar = RecordingRegistrar()
        registrar.inode = try FileFacts.inspect(fd).inode
        let engine = try Engine(registrar: registrar, configuration: .init(timing: .init(quiesce: 10_000_000, initialBackoff: 50_000_000),
                                                                            offloadPinBytes: 65536))
        return (registrar, engine, try registered(engine, fd, length: 262_144))
    }

    /// Drives the engine until `done`, collecting its events and the pins it starts.
    func drive(_ engine: Engine, until done: () -> Bool) {
        let deadline = Date().addingTimeInterval(10)
        while !done() && Date() < deadline {
            events += engine.poll(timeout: .milliseconds(10)).map(\.event)
            pins += engine.takeStartedPins()
        }
    }

    func testALargeRegionIsRestoredOnAWorkerAndItsOwnerToldWhenThePinIsIn() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let (registrar, engine, region) = try registeredLargeRegion(fd)
        let reader = try Subprocess.start("/bin/cat", [path])
        drive(engine) { !pins.isEmpty }
        reader.waitUntilExit()
        XCTAssertEqual(events.map(\.summary), ["revoking \(region.id)", "revoked \(region.id)"], "no restored before the pin is in")
        XCTAssertEqual(pins.count, 1)
        XCTAssertTrue(RecordingRegistrar.leaseHeld(inode: registrar.inode), "the lease is taken again before the pin")
        XCTAssertEqual(engine.info(region.id)?.state, .revoked)
        XCTAssertEqual(engine.indexProblems(), [])

        pins[0].run()
        events += engine.finishRestoration(pins[0]).map(\.event)
        XCTAssertEqual(events.last?.summary, "restored \(region.id)")
        let restored = try XCTUnwrap(engine.info(region.id))
        XCTAssertEqual(restored.state, .registered)
        XCTAssertEqual(restored.generation, 2)
        XCTAssertNotEqual(restored.keys, region.keys)
        XCTAssertEqual(engine.statistics().bytesByStrategy.pinned, 262_144)
        XCTAssertEqual(engine.indexProblems(), [])
    }

    func testABreakWhileTheRestorationWaitsForItsPinIsAnsweredAtOnce() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let (registrar, engine, region) = try registeredLargeRegion(fd)
        let first = try Subprocess.start("/bin/cat", [path])
        drive(engine) { !pins.isEmpty }
        first.waitUntilExit()

        // A second opener while the first pin is still on the worker: the lease goes at once.
        let second = try Subprocess.start("/bin/cat", [path])
        drive(engine) { !second.isRunning }
        second.waitUntilExit()
        XCTAssertEqual(second.terminationStatus, 0)
        XCTAssertFalse(second.isRunning, "answered without waiting for the pin")
        XCTAssertEqual(events.map(\.summary), ["revoking \(region.id)", "revoked \(region.id)"])
        // The stale pin comes in: deregistered, and nobody hears of it.
        pins[0].run()
        XCTAssertEqual(engine.finishRestoration(pins[0]), [])
        XCTAssertTrue(registrar.steps.last?.hasPrefix("deregister") ?? false, "\(registrar.steps)")
        XCTAssertEqual(engine.info(region.id)?.state, .revoked)
        XCTAssertEqual(engine.indexProblems(), [])

        // The next attempt pins anew, and that one restores.
        drive(engine) { pins.count == 2 }
        XCTAssertEqual(pins.count, 2)
        pins[1].run()
        events += engine.finishRestoration(pins[1]).map(\.event)
        XCTAssertEqual(events.map(\.summary), ["revoking \(region.id)", "revoked \(region.id)", "restored \(region.id)"])
        XCTAssertEqual(engine.info(region.id)?.generation, 2, "one restoration counted, not the one the break ended")
        XCTAssertEqual(engine.indexProblems(), [])
    }
}

/// A hole punched through the owner's own fd (IN_MODIFY, no lease break) while a large pin is under
/// way is compared once the pin is in, and what it changed is told: through a timer pass, whose
/// events reach their owners (the registration's own call routes none).
final class TouchedWhilePinningHostTests: XCTestCase {
    func testAHolePunchedDuringThePinRevokesAndRestoresTheNewRegionAtTheNextPass() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        registrar.inode = try FileFacts.inspect(fd).inode
        let engine = try Engine(registrar: registrar, configuration: .init(layoutCheckInterval: 0, offloadPinBytes: 65536))
        let facts = try FileFacts.inspect(fd)
        let plan = try RegistrationPlan.make(file: PlannedFile(facts), mode: .readWrite, offset: 0, length: 262_144, access: [.read, .write],
                                             preference: .pinned, layoutPolicy: .revoke, device: engine.device, lessee: .privileged,
                                             pageSize: UInt64(SharedMapping.pageSize)).get()
        guard case .pinning(let job) = try engine.startRegistration(owner: OwnerID(1), uid: 0, fd: fd, facts: facts, plan: plan) else {
            return XCTFail("registered on the caller's thread")
        }
        // The owner punches a hole under the range being pinned, through its own fd.
        XCTAssertEqual(mrl_fallocate(fd.rawValue, MRL_FALLOC_FL_PUNCH_HOLE | MRL_FALLOC_FL_KEEP_SIZE, 65536, 65536), 0)
        var events = engine.poll(timeout: .milliseconds(100)).map(\.event)
        XCTAssertEqual(events, [], "nothing to tell before the pin is in")
        job.run()
        guard case .registered(let region) = try engine.finishRegistration(job) else { return XCTFail("finished into another pin") }
        let deadline = Date().addingTimeInterval(10)
        while !events.contains(where: { if case .restored = $0 { true } else { false } }) && Date() < deadline {
            events += engine.poll(timeout: .milliseconds(10)).map(\.event)
            // Its restoration pins on the worker too.
            for restoring in engine.takeStartedPins() {
                restoring.run()
                events += engine.finishRestoration(restoring).map(\.event)
            }
        }
        XCTAssertEqual(events.map(\.summary), ["revoking \(region.id)", "revoked \(region.id)", "restored \(region.id)"])
        XCTAssertEqual(engine.indexProblems(), [])
    }
}
