import Dispatch
import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeaseGrant
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import TestSupport
import Verbs
import XCTest

@testable import MRLeaseDaemon

/// A maker that runs its jobs only when the test says so: a grant's MR being registered for
/// as long as the test likes, with the loop going on meanwhile.
final class DeferredExposureMaker: JobRunner {
    let verbs: any PeerVerbs
    private(set) var submitted: [ExposureJob] = []
    private var done: [ExposureJob] = []
    init(verbs: any PeerVerbs) { self.verbs = verbs }
    var descriptor: FileDescriptor? { nil }
    func submit(_ job: ExposureJob) { submitted.append(job) }
    /// Runs every submitted job; the daemon takes them at its next `exposuresMade`.
    func runAll() {
        for job in submitted { job.run(on: verbs) }
        done += submitted
        submitted = []
    }
    func finished() -> [ExposureJob] { defer { done = [] }; return done }
    func shutDown() { done += submitted; submitted = [] }
}

/// Issue 18, item 3: peers are admitted without the loop waiting for the grant's MR. Checked on
/// a recording rdma_cm (ordering and bookkeeping, never RDMA working: the guest suites run the
/// worker thread against rxe on every connect).
final class ExposureMakerTests: XCTestCase {
    let peers = RecordingPeerVerbs()

    func listening(maxPeers: UInt64 = 2, _ configure: (inout DaemonConfiguration) -> Void = { _ in })
        throws -> (InProcessDaemon, InProcessClient, Registration, GrantResult, DeferredExposureMaker) {
        let daemon = try InProcessDaemon(peerVerbs: peers) { configuration in
            configuration.listen = [GrantEndpoint(host: "192.0.2.1", port: 7471)!]
            configure(&configuration)
        }
        let maker = DeferredExposureMaker(verbs: peers)
        daemon.daemon.peers!.maker = maker
        let client = try daemon.connect()
        let fd = try FileDescriptor.open(FilePath(try daemon.scratch.file("data", size: 65536)), .readWrite)
        addTeardownBlock { try? fd.close() }
        let region = try client.register(fd, offset: 0)
        guard case .grant(let made) = try client.request(.grant(.init(region: region.region, maxPeers: maxPeers))) else {
            throw TestFailure("grant answered with another type")
        }
        return (daemon, client, region, made, maker)
    }

    func connectRequest(_ made: GrantResult) throws -> RecordingPeerVerbs.ID {
        peers.connect(privateData: ConnectPrivateData(try GrantDescriptor(text: made.descriptor)).encoded())
    }

    /// The daemon takes what the maker finished, as its loop does when the worker's eventfd
    /// is readable.
    func takeFinished(_ daemon: InProcessDaemon) {
        daemon.daemon.peers!.exposuresMade(engine: daemon.engine, now: Engine.now())
    }

    func testConnectsWaitForTheGrantsMRWhileTheLoopServesAndAreAcceptedOnOneMR() throws {
        let (daemon, client, _, made, maker) = try listening()
        let first = try connectRequest(made)
        daemon.drive(seconds: 5) { maker.submitted.count == 1 }
        let second = try connectRequest(made)
        daemon.drive(seconds: 0.2) { second.accepted != nil || second.rejected != nil }
        XCTAssertEqual(maker.submitted.count, 1, "one job for the grant's generation, whoever connects meanwhile")
        XCTAssertEqual(daemon.daemon.peers!.registering[made.grant]?.waiting.count, 2)
        XCTAssertTrue([first, second].allSatisfy { $0.accepted == nil && $0.rejected == nil }, "nothing answered before the MR exists")
        // The loop is not waiting for the registration: the owner's requests are answered.
        guard case .stats(let stats) = try client.request(.stats) else { return XCTFail("stats") }
        XCTAssertEqual(stats.grants, 1)
        // A third takes more than the grant's two slots: the waiting ones count.
        let third = try connectRequest(made)
        daemon.drive(seconds: 5) { third.rejected != nil }
        XCTAssertEqual(try RejectPrivateData(decoding: try XCTUnwrap(third.rejected)).reason, .tooManyPeers)

        maker.runAll()
        takeFinished(daemon)
        let accepts = try [first, second].map { try AcceptPrivateData(decoding: try XCTUnwrap($0.accepted)) }
        XCTAssertEqual(Set(accepts.map(\.rkey)).count, 1, "both on the grant's one MR")
        XCTAssertEqual(peers.domains.count, 1)
        XCTAssertEqual(daemon.daemon.peers!.peerCount, 2)
        XCTAssertNil(daemon.daemon.peers!.registering[made.grant])
    }

    /// A revocation that begins while the grant's MR is being made: what the job made is closed
    /// (never handed to a peer, never exposed), and its connect is held and admitted on the
    /// restored generation with a new MR.
    func testARevocationWhileTheMRIsMadeClosesItAndTheConnectIsAdmittedOnTheNextGeneration() throws {
        let (daemon, client, region, made, maker) = try listening { $0.quiesceMillis = 30_000 }
        let id = try connectRequest(made)
        daemon.drive(seconds: 5) { maker.submitted.count == 1 }

        let reader = try Subprocess.start("/bin/cat", [daemon.scratch.path + "/data"])
        daemon.drive(seconds: 5) { client.events.contains { if case .revoking = $0 { true } else { false } } }
        maker.runAll()
        takeFinished(daemon)
        XCTAssertEqual(peers.domains.first?.isClosed, true, "made for a generation that is being revoked: closed")
        XCTAssertNil(id.accepted)
        XCTAssertNil(id.rejected, "held while the region is revoked")

        _ = try client.request(.ack(region: region.region))
        XCTAssertTrue(daemon.drive(seconds: 5) { !reader.isRunning && maker.submitted.count == 1 }, "a job for the new generation")
        maker.runAll()
        takeFinished(daemon)
        let accept = try AcceptPrivateData(decoding: try XCTUnwrap(id.accepted))
        XCTAssertEqual(accept.generation, 2)
        XCTAssertEqual(peers.domains.count, 2)
        XCTAssertEqual(peers.domains.last?.isClosed, false)
    }

    /// The grant ends while its MR is being made: the waiting connect is rejected with why,
    /// and what the job made is closed when it finishes.
    func testAGrantRevokedWhileItsMRIsMadeRejectsTheWaitingAndClosesWhatWasMade() throws {
        let (daemon, client, _, made, maker) = try listening()
        let id = try connectRequest(made)
        daemon.drive(seconds: 5) { maker.submitted.count == 1 }
        _ = try client.request(.revokeGrant(grant: made.grant))
        XCTAssertEqual(try RejectPrivateData(decoding: try XCTUnwrap(id.rejected)).reason, .revoked)
        XCTAssertTrue(id.isDestroyed)
        maker.runAll()
        takeFinished(daemon)
        XCTAssertEqual(peers.domains.map(\.isClosed), [true])
        XCTAssertEqual(daemon.daemon.peers!.peerCount, 0)
    }

    /// A waiting peer that gives up (its CM rejects ours, timing out) frees its slot.
    func testAWaitingPeerThatGivesUpFreesItsSlot() throws {
        let (daemon, _, _, made, maker) = try listening(maxPeers: 1)
        let gaveUp = try connectRequest(made)
        daemon.drive(seconds: 5) { maker.submitted.count == 1 }
        peers.queue(PeerCMEvent(kind: .rejected, id: gaveUp))
        daemon.drive(seconds: 5) { gaveUp.isDestroyed }
        XCTAssertTrue(gaveUp.isDestroyed)
        let next = try connectRequest(made)
        daemon.drive(seconds: 0.2) { next.rejected != nil }
        XCTAssertNil(next.rejected, "the slot is free again")
        maker.runAll()
        takeFinished(daemon)
        XCTAssertNotNil(next.accepted)
        XCTAssertNil(gaveUp.accepted)
    }

    /// A refused registration (ENOMEM, say) rejects the waiting peers `busy` with a retry hint,
    /// and the next connect tries again.
    func testARefusedGrantMRRejectsTheWaitingBusyAndTheNextConnectTriesAgain() throws {
        let (daemon, _, _, made, maker) = try listening()
        let id = try connectRequest(made)
        daemon.drive(seconds: 5) { maker.submitted.count == 1 }
        peers.refuseRegistration = .noMemory
        maker.runAll()
        takeFinished(daemon)
        let reject = try RejectPrivateData(decoding: try XCTUnwrap(id.rejected))
        XCTAssertEqual(reject.reason, .busy)
        XCTAssertEqual(reject.retryAfterMilliseconds, 1000)
        peers.refuseRegistration = nil
        let again = try connectRequest(made)
        daemon.drive(seconds: 5) { maker.submitted.count == 1 }
        maker.runAll()
        takeFinished(daemon)
        XCTAssertNotNil(again.accepted)
    }
}

/// The worker thread itself, with verbs that make plain objects (safe from any thread).
final class ThreadRunnerTests: XCTestCase {
    final class PlainVerbs: PeerVerbs, @unchecked Sendable {
        final class PD: PeerPD {
            var closed = false
            func register(address: UnsafeMutableRawPointer, length: Int, access: AccessFlags) throws(VerbsError) -> any PeerMR {
                MR(address: UInt64(UInt(bitPattern: address)))
            }
            func createQueuePair(on connection: any PeerCMID) throws(VerbsError) -> AnyObject { self }
            func close() throws(VerbsError) { closed = true }
        }
        final class MR: PeerMR {
            let address: UInt64
            let rkey: UInt32 = 7
            init(address: UInt64) { self.address = address }
            func deregister() throws(VerbsError) {}
        }
        var deviceName: String { "plain" }
        var activeMTU: Int { 4096 }
        var descriptor: FileDescriptor { FileDescriptor(rawValue: -1) }
        func listen(on endpoint: GrantEndpoint) throws(VerbsError) -> (id: any PeerCMID, port: UInt16, device: String?) {
            throw VerbsError(op: "listen", errno: .notSupported)
        }
        func nextEvent() throws(VerbsError) -> PeerCMEvent? { nil }
        func makePD() throws(VerbsError) -> any PeerPD { PD() }
    }

    func testJobsRunOnTheWorkerInOrderAndTheEventFDSaysWhen() throws {
        let verbs = PlainVerbs()
        let maker = try ThreadRunner<ExposureJob>(name: "test-exposures", logger: .init(label: "test")) { $0.run(on: verbs) }
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 3 * 4096, alignment: 4096)
        defer { memory.deallocate() }
        let jobs = (0..<3).map {
            ExposureJob(grant: UInt64($0), region: RegionID(1), generation: 1, address: memory + $0 * 4096, length: 4096, flags: [.localWrite])
        }
        for job in jobs { maker.submit(job) }
        var finished: [ExposureJob] = []
        let deadline = Engine.now() + 10_000_000_000
        while finished.count < 3, Engine.now() < deadline {
            var ready = pollfd(fd: try XCTUnwrap(maker.descriptor).rawValue, events: Int16(POLLIN), revents: 0)
            _ = poll(&ready, 1, 1000)
            finished += maker.finished()
        }
        XCTAssertEqual(finished.map(\.grant), [0, 1, 2])
        for (job, offset) in zip(finished, [0, 4096, 8192]) {
            guard case .success(let made)? = job.made else { return XCTFail("job \(job.grant): \(String(describing: job.made))") }
            XCTAssertEqual(made.memory.address, UInt64(UInt(bitPattern: memory)) + UInt64(offset))
        }
        maker.shutDown()
        XCTAssertEqual(maker.finished().count, 0, "nothing left over: every job was taken")
    }

    func testShutDownWithoutAnyJobReturnsAtOnce() throws {
        let verbs = PlainVerbs()
        let maker = try ThreadRunner<ExposureJob>(name: "test-exposures", logger: .init(label: "test")) { $0.run(on: verbs) }
        maker.shutDown()
        XCTAssertEqual(maker.finished().count, 0)
    }
}
