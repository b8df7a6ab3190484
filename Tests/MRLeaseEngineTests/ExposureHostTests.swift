import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import Verbs
import XCTest

@testable import MRLeaseEngine
import MRLeasePolicy

/// The engine is the one place exposures are withdrawn (issue 18): when a revocation begins,
/// before the owner hears `revoking` and while the lease and the region's MR are still there;
/// never for a region that follows the file.
final class ExposureHostTests: XCTestCase {
    /// An exposure that notes, when withdrawn, whether the lease was still held and how many
    /// MRs the registrar had deregistered by then.
    final class NotingExposure: RegionExposure {
        let registrar: RecordingRegistrar
        private(set) var isWithdrawn = false
        private(set) var withdrawals = 0
        private(set) var leaseHeldAtWithdrawal: Bool?
        private(set) var deregistrationsBefore: Int?

        init(registrar: RecordingRegistrar) { self.registrar = registrar }

        func withdraw() throws(VerbsError) {
            guard !isWithdrawn else { return }
            isWithdrawn = true
            withdrawals += 1
            leaseHeldAtWithdrawal = RecordingRegistrar.leaseHeld(inode: registrar.inode)
            deregistrationsBefore = registrar.steps.filter { $0.hasPrefix("deregister") }.count
        }
    }

    let owner = OwnerID(1)
    var events: [EngineEvent] = []

    func drive(_ engine: Engine, seconds: Double = 10, until done: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        while !done() && Date() < deadline { events += engine.poll(timeout: .milliseconds(10)).map(\.event) }
    }

    func testARevocationWithdrawsTheExposuresBeforeTheOwnerHearsAndBeforeAnyMRGoes() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let (registrar, engine) = try recordingEngine(for: fd)
        let guarded = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write], layoutPolicy: .revoke)
        let following = try engine.register(owner: owner, fd: fd, offset: 8192, length: 4096, access: [.read, .write], layoutPolicy: .follow)
        var exposures: [RegionID: NotingExposure] = [:]
        for region in [guarded, following] {
            let target = try XCTUnwrap(try engine.exposureTarget(region.id))
            let exposure = NotingExposure(registrar: registrar)
            try engine.expose(region.id, generation: target.generation, exposure)
            exposures[region.id] = exposure
        }

        // Another process opens the file for writing: the lease breaks.
        let child = try Subprocess.start("/usr/bin/perl", ["-e", "open(my $f, '+<', $ARGV[0]) or die $!", path])
        drive(engine) { events.contains { if case .revoking = $0 { true } else { false } } }
        let withdrawn = try XCTUnwrap(exposures[guarded.id])
        XCTAssertTrue(withdrawn.isWithdrawn, "withdrawn by the time the owner hears revoking")
        XCTAssertEqual(withdrawn.leaseHeldAtWithdrawal, true)
        XCTAssertEqual(withdrawn.deregistrationsBefore, 0, "before any MR is deregistered")
        XCTAssertFalse(exposures[following.id]?.isWithdrawn ?? true, "a following region's exposure stays")

        events += try engine.acknowledge(guarded.id).map(\.event)
        drive(engine) { !child.isRunning && events.contains { if case .restored = $0 { true } else { false } } }
        child.waitUntilExit()
        XCTAssertEqual(withdrawn.withdrawals, 1)
        XCTAssertFalse(exposures[following.id]?.isWithdrawn ?? true, "nor at the unlock or the restoration")
        XCTAssertEqual(events.map(\.summary), ["revoking \(guarded.id)", "revoked \(guarded.id)", "restored \(guarded.id)"])
    }
}

/// The engine's time is an input (`Configuration.clock`): a deadline passes when the clock
/// says so, not when a test has slept through it.
final class EngineClockTests: XCTestCase {
    final class TestClock: @unchecked Sendable {
        private let lock = NSLock()
        private var nanos: UInt64 = Engine.now()
        var now: UInt64 { lock.withLock { nanos } }
        func advance(_ by: UInt64) { lock.withLock { nanos += by } }
    }

    func testTheQuiesceDeadlinePassesByTheEnginesClock() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let clock = TestClock()
        // A minute to quiesce: a test that slept through it would take a minute.
        let engine = try Engine(registrar: RecordingRegistrar(),
                                configuration: .init(timing: .init(quiesce: 60_000_000_000), clock: { clock.now }))
        let region = try engine.register(owner: OwnerID(1), fd: fd, offset: 0, length: 4096, access: [.read, .write], layoutPolicy: .revoke)
        let start = Date()
        let reader = try Subprocess.start("/bin/cat", [path])
        var events: [EngineEvent] = []
        func drive(until done: () -> Bool) {
            let deadline = Date().addingTimeInterval(10)
            while !done() && Date() < deadline { events += engine.poll(timeout: .milliseconds(10)).map(\.event) }
        }
        drive { events.contains { if case .revoking = $0 { true } else { false } } }
        // The owner never acknowledges; half a second of real time changes nothing.
        drive { Date().timeIntervalSince(start) > 0.5 }
        XCTAssertTrue(reader.isRunning, "the reader waits for the quiesce deadline")
        XCTAssertEqual(events.map(\.summary), ["revoking \(region.id)"])

        clock.advance(61_000_000_000)
        drive { !reader.isRunning }
        reader.waitUntilExit()
        XCTAssertEqual(reader.terminationStatus, 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "the clock, not a minute of sleep, ended the revocation")
        XCTAssertTrue(events.contains { if case .revoked = $0 { true } else { false } }, "\(events.map(\.summary))")
    }
}

/// A 1 MiB file on a filesystem with FIEMAP and leases (the guest's ext4 when set, else
/// TMPDIR), open read-write.
func scratchFile() throws -> (ScratchDirectory, String, FileDescriptor) {
    let scratch = try ScratchDirectory(in: Facility.ext4.value)
    let path = try scratch.file("data", size: 1 << 20)
    return (scratch, path, try FileDescriptor.open(FilePath(path), .readWrite))
}

/// An engine on a recording registrar that knows `fd`'s inode (to see its lease in /proc/locks).
func recordingEngine(for fd: FileDescriptor) throws -> (RecordingRegistrar, Engine) {
    let registrar = RecordingRegistrar()
    registrar.inode = try FileFacts.inspect(fd).inode
    return (registrar, try Engine(registrar: registrar))
}
