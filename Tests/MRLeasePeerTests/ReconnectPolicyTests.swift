import MRLeaseGrant
import SystemPackage
import Verbs
import XCTest

@testable import MRLeasePeer

/// Backoff, reject classification and completion verdicts: what decides whether a peer retries.
final class ReconnectPolicyTests: XCTestCase {
    func testBackoffStartsAt10MsDoublesAndStopsAt1s() {
        var backoff = ReconnectBackoff()
        let delays = (0..<10).map { _ in backoff.delayAfterFailure(elapsed: 0)! }
        XCTAssertEqual(delays, [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0])
        XCTAssertEqual(backoff.attempts, 10)
    }

    func testBackoffHonoursTheRejectsRetryAfterAndGivesUpAtTheTimeout() {
        var backoff = ReconnectBackoff(initial: 0.01, cap: 1, timeout: 2)
        XCTAssertEqual(backoff.delayAfterFailure(elapsed: 0, retryAfterMillis: 250), 0.25, "the hint beats a shorter backoff")
        XCTAssertEqual(backoff.delayAfterFailure(elapsed: 0.3, retryAfterMillis: 5), 0.02, "a shorter hint does not shorten the backoff")
        XCTAssertNil(backoff.delayAfterFailure(elapsed: 1.99), "the next attempt would start after the timeout")
        var never = ReconnectBackoff(timeout: 0)
        XCTAssertNil(never.delayAfterFailure(elapsed: 0), "timeout 0: no retry at all")
    }

    func testAnMrleasedRejectIsClassifiedByItsReasonAndOnlyTheTransientOnesAreRetried() throws {
        for reason in RejectReason.allCases {
            var padded = RejectPrivateData(reason: reason, retryAfterMilliseconds: 40).encoded()
            padded += [UInt8](repeating: 0, count: PrivateDataLimit.reject - padded.count)
            let failure = ConnectFailure.reject(status: 28, privateData: padded)
            XCTAssertEqual(failure, .rejected(RejectPrivateData(reason: reason, retryAfterMilliseconds: 40)))
            XCTAssertEqual(failure.isRetryable, [.tooManyPeers, .regionRevoking, .busy].contains(reason), "\(reason)")
            XCTAssertEqual(failure.retryAfterMillis, 40)
            XCTAssertTrue("\(failure)".contains(ConnectFailure.wireName(reason)), "\(failure)")
        }
        let lost = "\(PeerError.connectFailed(operation: "write (reconnecting)", .rejected(RejectPrivateData(reason: .regionLost))))"
        XCTAssertEqual(lost, "write (reconnecting): mrleased rejected the connection: region-lost (the region is gone for good (lost after a revocation, or deregistered))")
    }

    func testARejectWithoutTheMagicCameFromTheCMAndIsFinal() {
        let zeros = [UInt8](repeating: 0, count: PrivateDataLimit.reject)
        let failure = ConnectFailure.reject(status: 8, privateData: zeros)
        XCTAssertEqual(failure, .rejectedByCM(status: 8))
        XCTAssertFalse(failure.isRetryable)
        XCTAssertTrue("\(failure)".contains("nobody listens"), "\(failure)")
        XCTAssertEqual(ConnectFailure.reject(status: 28, privateData: []), .rejectedByCM(status: 28), "no private data at all")
        XCTAssertEqual(ConnectFailure.reject(status: 28, privateData: [0x4D, 0x4C, 1, 3, 0, 99, 0, 0, 0, 0, 0, 0]),
                       .unreadableReject(GrantFormatError(.reject, .unknownReason(99))), "mrleased's magic, a reason unknown here")
        XCTAssertFalse(ConnectFailure.unreadableReject(GrantFormatError(.reject, .unknownReason(99))).isRetryable)
        XCTAssertTrue(ConnectFailure.transport("ADDR_ERROR").isRetryable)
        XCTAssertTrue(ConnectFailure.timedOut("no answer").isRetryable)
        XCTAssertFalse(ConnectFailure.local("rdma_create_event_channel").isRetryable)
    }

    func testAnAcceptIsUsedOnlyWhenItDecodesAndNamesTheRequestedGrant() throws {
        let accept = try AcceptPrivateData(access: .all, remoteAddress: 4096, length: 8192, rkey: 7, transferAlignment: 1, generation: 2, grantID: 5)
        var padded = accept.encoded()
        padded += [UInt8](repeating: 0, count: PrivateDataLimit.accept - padded.count)
        XCTAssertEqual(try ConnectFailure.accept(padded, grantID: 5).get(), accept)
        guard case .failure(.badAccept(let other)) = ConnectFailure.accept(padded, grantID: 6) else { return XCTFail("another grant's accept was used") }
        XCTAssertTrue(other.contains("for grant 5, not 6"), other)
        guard case .failure(.badAccept(let garbage)) = ConnectFailure.accept([1, 2, 3], grantID: 5) else { return XCTFail("garbage was used") }
        XCTAssertTrue(garbage.contains("accept"), garbage)
        XCTAssertFalse(ConnectFailure.badAccept("x").isRetryable)
    }

    func testCompletionStatusesThatARevocationCausesAreRetriedAndOnlyANakIsKnownNotExecuted() {
        // ibv_wc_status: 5 WR_FLUSH_ERR, 10 REM_ACCESS_ERR, 12 RETRY_EXC_ERR, 13 RNR_RETRY_EXC_ERR.
        XCTAssertEqual(CompletionVerdict(status: 5), .connectionLost(mayHaveExecuted: true))
        XCTAssertEqual(CompletionVerdict(status: 12), .connectionLost(mayHaveExecuted: true))
        XCTAssertEqual(CompletionVerdict(status: 13), .connectionLost(mayHaveExecuted: true))
        XCTAssertEqual(CompletionVerdict(status: 10), .connectionLost(mayHaveExecuted: false))
        // 1 LOC_LEN_ERR, 4 LOC_PROT_ERR, 9 REM_INV_REQ_ERR: our bug or a bad request, not a revocation.
        for status: UInt32 in [1, 2, 4, 8, 9] { XCTAssertEqual(CompletionVerdict(status: status), .fault, "status \(status)") }
    }

    func testErrorsNameTheOperationAndWhatToDo() {
        let timedOut = "\(PeerError.reconnectTimedOut(operation: "read (reconnecting)", seconds: 30.04, attempts: 37, last: .rejected(RejectPrivateData(reason: .regionRevoking))))"
        XCTAssertTrue(timedOut.hasPrefix("read (reconnecting): gave up after 37 connection attempts in 30.0 s"), timedOut)
        XCTAssertTrue(timedOut.contains("region-revoking") && timedOut.contains("reconnectTimeout"), timedOut)
        let unknown = "\(PeerError.atomicOutcomeUnknown(operation: .fetchAdd, completion: "transport retry counter exceeded", generation: 4))"
        XCTAssertTrue(unknown.hasPrefix("fetch-add: the connection broke while the atomic was in flight"), unknown)
        XCTAssertTrue(unknown.contains("not repeated") && unknown.contains("generation 4") && unknown.contains("read the word"), unknown)
    }

    /// A link going down and up makes rdma_resolve_addr fail with the network's errno for a
    /// while (measured on 7.3.4: ENETUNREACH): retried until the reconnect timeout, not the
    /// end of the peer; any other failed call on this host still is.
    func testAResolveThatTheNetworkRefusesIsRetriedAndOneThisHostRefusesIsNot() {
        for errno in [Errno.networkUnreachable, .networkDown, .noRouteToHost, .addressNotAvailable] {
            let failure = ConnectFailure.resolving(VerbsError(op: "rdma_resolve_addr", errno: errno), step: "resolving 192.0.2.1:7471")
            XCTAssertTrue(failure.isRetryable, "\(errno.symbolicName): \(failure)")
            XCTAssertTrue("\(failure)".contains(errno.symbolicName), "\(failure)")
        }
        for errno in [Errno.operationNotSupportedByDevice, .noMemory, .invalidArgument] {
            XCTAssertFalse(ConnectFailure.resolving(VerbsError(op: "rdma_resolve_addr", errno: errno), step: "resolving").isRetryable,
                           errno.symbolicName)
        }
    }
}
