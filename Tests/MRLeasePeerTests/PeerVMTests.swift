import Foundation
import MRLeaseGrant
import TestSupport
import XCTest

@testable import MRLeasePeer

/// The peer library against `TestResponder` on the guest's rxe1 (192.0.2.1): both ends in one
/// process, the responder on its own thread. Checks the library's behaviour, not the daemon's.
final class PeerVMTests: XCTestCase {
    private func responder(length: Int = 1 << 20, access: GrantAccess = .all, alignment: UInt32 = 1) throws -> TestResponder {
        let responder = try TestResponder(address: try Facility.rdmaCMAddress.require(), length: length, access: access, alignment: alignment)
        addTeardownBlock { responder.stop() }
        return responder
    }

    private func bytes(_ responder: TestResponder, at offset: Int, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: responder.memory + offset, count: count))
    }

    private func word(_ responder: TestResponder, at offset: Int) -> UInt64 {
        responder.memory.load(fromByteOffset: offset, as: UInt64.self)
    }

    private func qpAndCMIDCounts() throws -> [Int] {
        [try RDMAResources.entries("qp").count, try RDMAResources.entries("cm_id").count]
    }

    func testWritesAndReadsRoundTripThroughTheRespondersMemoryInRoundsLargerThanTheStagingBuffer() throws {
        let responder = try responder()
        let before = try qpAndCMIDCounts()
        var options = PeerOptions()
        options.stagingBytes = 64 << 10
        options.workRequestBytes = 16 << 10
        let peer = try Peer(descriptor: responder.descriptor, options: options)
        XCTAssertEqual(peer.terms.generation, 1)
        XCTAssertEqual(peer.terms.rkey, responder.rkey)
        XCTAssertEqual(peer.terms.length, UInt64(responder.length))
        XCTAssertEqual(peer.terms.access, .all)

        let pattern = PeerPattern.seeded(11)
        let offset = 4096 + 3, count = 200_000  // three staging rounds plus a tail, 13 work requests
        try peer.write(pattern.bytes(at: UInt64(offset), count: count), at: UInt64(offset))
        try peer.persist()
        XCTAssertEqual(bytes(responder, at: offset, count: count), pattern.bytes(at: UInt64(offset), count: count), "the write landed byte for byte")
        XCTAssertEqual(bytes(responder, at: offset - 3, count: 3), [0, 0, 0], "nothing before the offset changed")
        XCTAssertEqual(bytes(responder, at: offset + count, count: 3), [0, 0, 0], "nothing after the end changed")

        let local: [UInt8] = Array("written by the responder itself".utf8)
        local.withUnsafeBytes { (responder.memory + 777_777).copyMemory(from: $0.baseAddress!, byteCount: local.count) }
        XCTAssertEqual(try peer.read(count: local.count, at: 777_777), local, "a read returns what the memory holds")
        XCTAssertEqual(try peer.read(count: count, at: UInt64(offset)), pattern.bytes(at: UInt64(offset), count: count))
        XCTAssertEqual(peer.statistics.reconnects, 0)
        peer.close()
        XCTAssertThrowsError(try peer.read(count: 1, at: 0)) { XCTAssertTrue("\($0)".contains("the peer is closed"), "\($0)") }
        // The responder answers the disconnect; its id and QP go with it.
        let deadline = Date().addingTimeInterval(5)
        while try qpAndCMIDCounts() != before, Date() < deadline { usleep(10_000) }
        XCTAssertEqual(try qpAndCMIDCounts(), before, "the peer's QP and cm_id (and the responder's) outlived close()")
    }

    func testCompareAndSwapAndFetchAddChangeTheRemoteWordAndReturnItsOldValue() throws {
        let responder = try responder()
        responder.memory.storeBytes(of: UInt64(5), toByteOffset: 64, as: UInt64.self)
        let peer = try Peer(descriptor: responder.descriptor)
        XCTAssertEqual(try peer.compareAndSwap(at: 64, expected: 5, desired: 9), 5)
        XCTAssertEqual(word(responder, at: 64), 9)
        XCTAssertEqual(try peer.compareAndSwap(at: 64, expected: 5, desired: 1), 9, "no swap: the word was not 5")
        XCTAssertEqual(word(responder, at: 64), 9)
        XCTAssertEqual(try peer.fetchAdd(at: 64, add: 3), 9)
        XCTAssertEqual(try peer.fetchAdd(at: 64, add: UInt64.max), 12, "adding 2^64-1 wraps to -1")
        XCTAssertEqual(word(responder, at: 64), 11)
        XCTAssertThrowsError(try peer.fetchAdd(at: 60, add: 1)) { error in
            guard case .refused(.fetchAdd, .atomicMisaligned(60)) = error as? PeerError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(word(responder, at: 56), 0, "the refused atomic touched nothing")
        peer.close()
    }

    func testOnA4096AlignedGrantUnalignedTransfersAreRefusedAndNothingIsWritten() throws {
        let responder = try responder(alignment: 4096)
        responder.memory.initializeMemory(as: UInt8.self, repeating: 0xEE, count: responder.length)
        let peer = try Peer(descriptor: responder.descriptor)
        XCTAssertEqual(peer.terms.transferAlignment, 4096)
        for (offset, count) in [(4096, 100), (100, 4096), (4097, 8191)] {
            XCTAssertThrowsError(try peer.write([UInt8](repeating: 1, count: count), at: UInt64(offset))) { error in
                guard case .refused(.write, .misaligned(UInt64(offset), UInt64(count), 4096)) = error as? PeerError else { return XCTFail("\(error)") }
                XCTAssertTrue("\(error)".contains("align both to 4096"), "\(error)")
            }
            XCTAssertThrowsError(try peer.read(count: count, at: UInt64(offset)), "an unaligned read is refused too")
        }
        XCTAssertTrue(bytes(responder, at: 0, count: responder.length).allSatisfy { $0 == 0xEE }, "a refused transfer wrote something")
        try peer.write([UInt8](repeating: 0x42, count: 8192), at: 8192)
        try peer.persist()
        XCTAssertEqual(bytes(responder, at: 8192, count: 8192), [UInt8](repeating: 0x42, count: 8192))
        XCTAssertEqual(bytes(responder, at: 8191, count: 1), [0xEE])
        XCTAssertThrowsError(try peer.write([1], at: UInt64(responder.length))) { error in
            guard case .refused(.write, .outOfBounds) = error as? PeerError else { return XCTFail("\(error)") }
        }
        peer.close()

        let readOnly = try self.responder(length: 8192, access: .read)
        let reader = try Peer(descriptor: readOnly.descriptor)
        XCTAssertThrowsError(try reader.write([1], at: 0)) { error in
            guard case .refused(.write, .notGranted(needed: .write, granted: .read)) = error as? PeerError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(try reader.read(count: 8192, at: 0), [UInt8](repeating: 0, count: 8192))
        reader.close()
    }

    func testAfterARevocationThePeerReconnectsByItselfAndItsWritesLandUnderTheNewGeneration() throws {
        let responder = try responder()
        let peer = try Peer(descriptor: responder.descriptor)
        let oldRkey = peer.terms.rkey
        var value: UInt64 = 0
        func writeNext() throws {
            value += 1
            try peer.write(withUnsafeBytes(of: value) { Array($0) }, at: 0)
        }
        for _ in 0..<5 { try writeNext() }
        try responder.revoke(whileDown: .reject(RejectPrivateData(reason: .regionRevoking, retryAfterMilliseconds: 20)), downFor: 0.3)
        let revokedAt = MonotonicClock.now()
        // Every write succeeds: the revocation is a delay, not an error.
        while peer.terms.generation == 1, MonotonicClock.now() - revokedAt < 10 { try writeNext() }
        for _ in 0..<5 { try writeNext() }
        try peer.persist()
        XCTAssertEqual(peer.terms.generation, 2)
        XCTAssertEqual(peer.terms.rkey, responder.rkey)
        XCTAssertNotEqual(peer.terms.rkey, oldRkey, "the new registration's rkey")
        XCTAssertEqual(word(responder, at: 0), value, "the last write landed under the new generation")
        let statistics = peer.statistics
        XCTAssertEqual(statistics.reconnects, 1)
        XCTAssertEqual(statistics.generations, [1, 2])
        XCTAssertGreaterThanOrEqual(statistics.failedAttempts, 1, "the peer was rejected with region-revoking at least once")
        let broke = try XCTUnwrap(statistics.lastBreak), back = try XCTUnwrap(statistics.firstSuccessAfterReconnect)
        XCTAssertGreaterThanOrEqual(back - broke, 0.2, "the write waited for the restoration")
        print("peer revocation: cause \(statistics.lastBreakCause ?? "?"), break to first success \(Int((back - broke) * 1000)) ms, "
              + "\(statistics.failedAttempts) rejected attempts; responder events \(responder.events)")
        XCTAssertTrue(responder.events.contains("reject regionRevoking"), "\(responder.events)")

        // An atomic after a revocation the peer has already seen is carried out once.
        responder.memory.storeBytes(of: UInt64(100), toByteOffset: 8, as: UInt64.self)
        try responder.revoke(whileDown: .reject(RejectPrivateData(reason: .regionRevoking, retryAfterMilliseconds: 10)), downFor: 0.1)
        usleep(300_000)  // the DISCONNECTED reaches the peer's channel
        XCTAssertEqual(try peer.fetchAdd(at: 8, add: 1), 100)
        XCTAssertEqual(word(responder, at: 8), 101, "executed exactly once")
        XCTAssertEqual(peer.terms.generation, 3)
        peer.close()
    }

    /// The MR goes without a disconnect: the responder NAKs (REM_ACCESS_ERR), which says the
    /// request was not executed, so even an atomic is retried once the region is back.
    func testARemoteAccessErrorIsARevocationAndARetriedAtomicRunsOnce() throws {
        let responder = try responder()
        responder.memory.storeBytes(of: UInt64(40), toByteOffset: 16, as: UInt64.self)
        let peer = try Peer(descriptor: responder.descriptor)
        try peer.write([1, 2, 3, 4], at: 100)
        try responder.deregisterOnly(downFor: 0.3)
        XCTAssertEqual(try peer.fetchAdd(at: 16, add: 2), 40)
        XCTAssertEqual(word(responder, at: 16), 42, "executed exactly once")
        XCTAssertEqual(peer.terms.generation, 2)
        XCTAssertTrue(peer.statistics.lastBreakCause?.contains("status 10") == true, "\(peer.statistics)")
        try responder.deregisterOnly(downFor: 0.2)
        XCTAssertEqual(try peer.read(count: 4, at: 100), [1, 2, 3, 4], "a read after a NAK is retried too")
        XCTAssertEqual(peer.statistics.reconnects, 2)
        peer.close()
    }

    /// An atomic whose request went unanswered may have run: the peer reconnects and says so
    /// instead of running it again.
    func testAnAtomicLostInFlightIsNotRepeatedAndThePeerIsUsableAfterwards() throws {
        let responder = try responder()
        responder.memory.storeBytes(of: UInt64(7), toByteOffset: 24, as: UInt64.self)
        var options = PeerOptions()
        options.completionTimeout = 1
        let peer = try Peer(descriptor: responder.descriptor, options: options)
        XCTAssertEqual(try peer.fetchAdd(at: 24, add: 1), 7)
        try responder.dropQueuePairsSilently()
        XCTAssertThrowsError(try peer.compareAndSwap(at: 24, expected: 8, desired: 100)) { error in
            guard case .atomicOutcomeUnknown(.compareAndSwap, _, let generation) = error as? PeerError else { return XCTFail("\(error)") }
            XCTAssertEqual(generation, 1, "reconnected to the same registration")
            XCTAssertTrue("\(error)".contains("read the word and decide"), "\(error)")
        }
        XCTAssertEqual(word(responder, at: 24), 8, "the request never reached a QP, and was not repeated")
        XCTAssertTrue(peer.isConnected, "connected again before throwing")
        XCTAssertEqual(try peer.compareAndSwap(at: 24, expected: 8, desired: 100), 8, "the application decides and retries")
        XCTAssertEqual(word(responder, at: 24), 100)
        peer.close()
    }

    func testFinalRejectsSurfaceWithTheirReasonAndRetryableOnesAreRetriedUntilAccepted() throws {
        let responder = try responder()
        for reason: RejectReason in [.regionLost, .revoked, .unknownGrant, .expired] {
            responder.setAnswer(.reject(RejectPrivateData(reason: reason)))
            let started = MonotonicClock.now()
            XCTAssertThrowsError(try Peer(descriptor: responder.descriptor)) { error in
                guard case .connectFailed("connect", .rejected(let reject)) = error as? PeerError, reject.reason == reason else {
                    return XCTFail("\(reason): \(error)")
                }
                XCTAssertTrue("\(error)".contains(ConnectFailure.wireName(reason)), "\(error)")
            }
            XCTAssertLessThan(MonotonicClock.now() - started, 2, "a final reject is not retried")
        }
        responder.setAnswer(.accept)
        var wrongSecret = responder.descriptor
        wrongSecret.secret = try GrantSecret.random()
        XCTAssertThrowsError(try Peer(descriptor: wrongSecret)) { error in
            guard case .connectFailed(_, .rejected(let reject)) = error as? PeerError, reject.reason == .badSecret else { return XCTFail("\(error)") }
        }

        // busy, then accepted: the peer waits it out.
        try responder.revoke(whileDown: .reject(RejectPrivateData(reason: .busy, retryAfterMilliseconds: 30)), downFor: 0.3)
        let waited = try Peer(descriptor: responder.descriptor)
        XCTAssertEqual(waited.terms.generation, 2)
        XCTAssertGreaterThanOrEqual(waited.statistics.failedAttempts, 2)

        // Revoked, then lost: the next write throws region-lost instead of retrying forever.
        try responder.revoke(whileDown: .reject(RejectPrivateData(reason: .regionLost)), downFor: nil)
        usleep(100_000)
        XCTAssertThrowsError(try waited.write([1], at: 0)) { error in
            guard case .connectFailed(let operation, .rejected(let reject)) = error as? PeerError, reject.reason == .regionLost else { return XCTFail("\(error)") }
            XCTAssertEqual(operation, "write (reconnecting)")
        }

        // Retryable for ever: the reconnect timeout ends it.
        responder.setAnswer(.reject(RejectPrivateData(reason: .regionRevoking, retryAfterMilliseconds: 50)))
        var options = PeerOptions()
        options.reconnectTimeout = 0.5
        let started = MonotonicClock.now()
        XCTAssertThrowsError(try Peer(descriptor: responder.descriptor, options: options)) { error in
            guard case .reconnectTimedOut(_, _, let attempts, .rejected(let reject)) = error as? PeerError,
                  reject.reason == .regionRevoking, attempts >= 3 else { return XCTFail("\(error)") }
        }
        XCTAssertLessThan(MonotonicClock.now() - started, 3)
    }

    func testAConnectToAPortNobodyListensOnFailsAtOnceAsTheCMsReject() throws {
        let responder = try responder()
        let stale = responder.descriptor
        responder.stop()  // its listener goes: nobody listens on the descriptor's port now
        let started = MonotonicClock.now()
        XCTAssertThrowsError(try Peer(descriptor: stale)) { error in
            guard case .connectFailed(_, .rejectedByCM(8)) = error as? PeerError else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("nobody listens"), "\(error)")
        }
        XCTAssertLessThan(MonotonicClock.now() - started, 2)
    }
}
