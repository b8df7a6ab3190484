import Dispatch
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

/// Issue 19, "large ranges off the loop": a pinned registration of at least `offload-pin-bytes`
/// is pinned on the worker thread while the loop serves everyone else; its own client's next
/// request waits for its reply. The worker here is the daemon's `ThreadRunner` with a gate the
/// test opens, standing in for a pin that takes as long as the test likes (ordering and
/// bookkeeping; the guest suites and `mrleased-bench --large-registration` pin for real).
final class LargeRegistrationTests: XCTestCase {
    let gate = DispatchSemaphore(value: 0)

    func daemon() throws -> (InProcessDaemon, ScratchDirectory, String, FileDescriptor) {
        let daemon = try InProcessDaemon {
            $0.offloadPinBytes = 65536
            $0.quiesceMillis = 10
        }
        var logger = daemon.daemon.logger
        logger.logLevel = .warning
        let runner = try ThreadRunner<PinJob>(name: "test-pins", logger: logger) { [gate] job in
            gate.wait()
            job.run()
        }
        daemon.daemon.pins = runner
        try daemon.daemon.watch(XCTUnwrap(runner.descriptor), as: .pins)
        let scratch = try ScratchDirectory(in: Facility.ext4.value)
        let path = try scratch.file("data", size: 4 << 20)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        daemon.registrar.inode = try FileFacts.inspect(fd).inode
        return (daemon, scratch, path, fd)
    }

    /// Sends a request without waiting for its reply; returns its id.
    @discardableResult
    func send(_ request: Request, from client: InProcessClient, fd: FileDescriptor? = nil) throws -> UInt64 {
        let id = client.nextID
        client.nextID += 1
        try client.socket.send(Codec.encode(request, id: id), fds: fd.map { [$0] } ?? [])
        return id
    }

    func largePin(_ offset: UInt64 = 0) -> Request {
        .register(.init(offset: offset, length: 1 << 20, access: [.read, .write], strategy: .pinned))
    }

    func testOtherClientsAreServedWhileALargePinIsMadeAndItsClientWaitsForItsReply() throws {
        let (daemon, scratch, _, fd) = try daemon()
        defer { try? fd.close(); _ = scratch }
        let pinning = try daemon.connect(), other = try daemon.connect()
        let register = try send(largePin(), from: pinning, fd: fd)
        XCTAssertTrue(daemon.drive { pinning.session?.registration != nil }, "the pin went to the worker")

        // Another client is answered meanwhile, and can register a small range of its own.
        guard case .stats = try other.request(.stats) else { return XCTFail("stats") }
        let small = try other.register(fd, offset: 2 << 20)
        // The pinning client's next request waits behind its registration.
        let stats = try send(.stats, from: pinning)
        daemon.drive(seconds: 0.3) { false }
        XCTAssertEqual(pinning.replies.map(\.id), [], "nothing answered while its pin is under way")
        XCTAssertEqual(daemon.registrar.steps.filter { $0.hasPrefix("register") }.count, 1, "only the small one is registered yet")

        gate.signal()
        XCTAssertTrue(daemon.drive { pinning.replies.count == 2 }, "\(pinning.replies)")
        XCTAssertEqual(pinning.replies.map(\.id), [register, stats], "the reply, then the request that waited")
        guard case .success(.register(let made)) = pinning.replies[0].outcome else { return XCTFail("\(pinning.replies[0])") }
        XCTAssertEqual(made.strategy, .pinned)
        XCTAssertEqual(made.length, 1 << 20)
        XCTAssertNil(pinning.session?.registration)
        XCTAssertEqual(daemon.engine.list().map(\.id.rawValue).sorted(), [small.region, made.region].sorted())
        XCTAssertEqual(daemon.engine.indexProblems(), [])
        let times = daemon.daemon.requestTimes[.register]
        XCTAssertEqual(times?.count, 2, "both registrations are timed, the pinned one to its reply")
    }

    func testABreakDuringThePinIsAnsweredAtOnceAndTheClientToldToRegisterAgain() throws {
        let (daemon, scratch, path, fd) = try daemon()
        defer { try? fd.close(); _ = scratch }
        let client = try daemon.connect()
        let register = try send(largePin(), from: client, fd: fd)
        XCTAssertTrue(daemon.drive { client.session?.registration != nil })

        let reader = try Subprocess.start("/bin/cat", [path])
        XCTAssertTrue(daemon.drive { !reader.isRunning }, "the break is answered while the worker still pins")
        reader.waitUntilExit()
        XCTAssertEqual(reader.terminationStatus, 0)

        gate.signal()
        XCTAssertTrue(daemon.drive { !client.replies.isEmpty })
        XCTAssertEqual(client.replies.first?.id, register)
        guard case .failure(let error)? = client.replies.first?.outcome else { return XCTFail("\(client.replies)") }
        XCTAssertEqual(error.code, .fileBusy)
        XCTAssertTrue(error.message.contains("Register it again"), error.message)
        XCTAssertEqual(daemon.registrar.steps.count, 2, "\(daemon.registrar.steps)")
        XCTAssertTrue(daemon.registrar.steps[1].hasPrefix("deregister"), "the pinned MR went: \(daemon.registrar.steps)")
        XCTAssertEqual(daemon.engine.statistics().files, 0)
        // And the client is read again.
        guard case .stats = try client.request(.stats) else { return XCTFail("stats") }
    }

    func testAClientThatLeavesDuringItsPinCostsNothing() throws {
        let (daemon, scratch, _, fd) = try daemon()
        defer { try? fd.close(); _ = scratch }
        let leaving = try daemon.connect()
        try send(largePin(), from: leaving, fd: fd)
        XCTAssertTrue(daemon.drive { leaving.session?.registration != nil })
        leaving.reading = false
        try leaving.socket.close()
        XCTAssertTrue(daemon.drive { leaving.session == nil }, "the hang-up is seen while the pin is under way")

        gate.signal()
        XCTAssertTrue(daemon.drive { daemon.registrar.steps.count == 2 }, "\(daemon.registrar.steps)")
        XCTAssertTrue(daemon.registrar.steps[1].hasPrefix("deregister"), "\(daemon.registrar.steps)")
        XCTAssertEqual(daemon.engine.statistics().files, 0)
        XCTAssertFalse(RecordingRegistrar.leaseHeld(inode: daemon.registrar.inode))
    }

    func testARestorationPinsOnTheWorkerWhileOthersAreServedAndItsOwnerHearsWhenItIsIn() throws {
        let (daemon, scratch, path, fd) = try daemon()
        defer { try? fd.close(); _ = scratch }
        let owner = try daemon.connect(), other = try daemon.connect()
        let register = try send(largePin(), from: owner, fd: fd)
        gate.signal()
        XCTAssertTrue(daemon.drive { owner.replies.contains { $0.id == register } })
        guard case .success(.register(let made))? = owner.replies.first?.outcome else { return XCTFail("\(owner.replies)") }

        let reader = try Subprocess.start("/bin/cat", [path])
        XCTAssertTrue(daemon.drive { !reader.isRunning && owner.events.count >= 2 }, "\(owner.events)")
        reader.waitUntilExit()
        // The restoration's pin waits at the gate: revoked, not yet restored, and the loop serves.
        daemon.drive(seconds: 0.2) { false }
        XCTAssertEqual(owner.events.map(\.name), [.revoking, .revoked])
        XCTAssertTrue(RecordingRegistrar.leaseHeld(inode: daemon.registrar.inode), "the lease is taken again before the pin")
        guard case .stats = try other.request(.stats) else { return XCTFail("stats") }
        guard case .stats = try owner.request(.stats) else { return XCTFail("stats") }

        gate.signal()
        XCTAssertTrue(daemon.drive { owner.events.count >= 3 }, "\(owner.events)")
        XCTAssertEqual(owner.events.map(\.name), [.revoking, .revoked, .restored])
        XCTAssertEqual(owner.events.last?.region, made.region)
        XCTAssertEqual(daemon.engine.info(RegionID(made.region))?.generation, 2)
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }
}
