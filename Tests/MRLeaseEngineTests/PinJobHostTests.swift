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
