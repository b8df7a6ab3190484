import Foundation
import MRLeaseEngine
import MRLeaseGrant
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import TestSupport
import Verbs
import XCTest

@testable import MRLeaseDaemon

/// The grant rules without a device: who is admitted and why not (GrantBook), the `listen`
/// setting, and what `grant` answers on a daemon that does not serve peers. The rdma_cm side
/// runs in the guests (DaemonVMTests.RemoteAccessVMTests).
final class GrantTests: XCTestCase {
    let endpoint = GrantEndpoint(address: .ipv4(0xC000_0201), port: 7471)

    func record(_ book: inout GrantBook, maxPeers: Int = 1, expiresAt: UInt64? = nil) throws -> GrantRecord {
        let grant = GrantRecord(id: try book.makeID(), owner: OwnerID(1), region: RegionID(1), secret: try GrantSecret.random(),
                                access: [.read, .write], maxPeers: maxPeers, expiresAt: expiresAt, endpoint: endpoint)
        book.add(grant)
        return grant
    }

    /// Slots are the peer service's to count: none taken here, unless a test says otherwise.
    func reason(_ admission: Admission) -> RejectReason? {
        if case .rejected(let reason) = admission { return reason }
        return nil
    }

    func testAdmissionChecksTheSecretBeforeAnythingElseAndEachRejectHasItsReason() throws {
        var book = GrantBook()
        let grant = try record(&book, maxPeers: 1, expiresAt: 1_000)
        let good = ConnectPrivateData(grant.descriptor).encoded()
        guard case .admitted(let admitted) = book.admit(good, now: 10) else { return XCTFail("the right secret was refused") }
        XCTAssertTrue(admitted === grant)
        XCTAssertEqual(reason(book.admit(good + [UInt8](repeating: 0, count: 24), now: 10)), nil, "zero padding to 56 bytes is what the CM delivers")

        let wrong = ConnectPrivateData(grantID: grant.id, secret: try GrantSecret.random()).encoded()
        // Expired, but a wrong secret does not learn it.
        XCTAssertEqual(reason(book.admit(wrong, now: 5_000)), .badSecret)
        XCTAssertEqual(reason(book.admit(good, now: 1_000)), .expired, "at the expiry instant")
        XCTAssertEqual(reason(book.admit(ConnectPrivateData(grantID: 4242, secret: grant.secret).encoded(), now: 10)), .unknownGrant)
        XCTAssertEqual(reason(book.admit([], now: 10)), .malformed)
        XCTAssertEqual(reason(book.admit(Array(good.prefix(31)), now: 10)), .malformed, "one byte short")
        XCTAssertEqual(reason(book.admit(good + [1], now: 10)), .malformed, "a non-zero byte after the layout")
        var future = good
        future[2] = 2
        XCTAssertEqual(reason(book.admit(future, now: 10)), .unsupportedVersion)
        // The slots the peer service counts for this grant: its one slot taken, too many peers.
        XCTAssertEqual(reason(book.admit(good, now: 10, taken: { $0 == grant.id ? 1 : 0 })), .tooManyPeers)
    }

    func testEndedGrantsAreRememberedWithTheirReasonAndTheOldestAreForgotten() throws {
        var book = GrantBook()
        let revoked = try record(&book)
        let expired = try record(&book)
        let gone = try record(&book)
        let owner = try record(&book)
        book.end(revoked.id, .revoked)
        book.end(expired.id, .expired)
        book.end(gone.id, .regionGone)
        book.end(owner.id, .ownerGone)
        XCTAssertEqual(reason(book.admit(ConnectPrivateData(revoked.descriptor).encoded(), now: 0)), .revoked, "a secret replayed after revoke-grant")
        XCTAssertEqual(reason(book.admit(ConnectPrivateData(expired.descriptor).encoded(), now: 0)), .expired)
        XCTAssertEqual(reason(book.admit(ConnectPrivateData(gone.descriptor).encoded(), now: 0)), .regionLost)
        XCTAssertEqual(reason(book.admit(ConnectPrivateData(owner.descriptor).encoded(), now: 0)), .unknownGrant)
        XCTAssertNil(book.end(revoked.id, .revoked), "ending twice does nothing")
        for _ in 0..<GrantBook.endedLimit {
            let filler = try record(&book)
            book.end(filler.id, .revoked)
        }
        XCTAssertEqual(reason(book.admit(ConnectPrivateData(revoked.descriptor).encoded(), now: 0)), .unknownGrant, "forgotten past the limit")
    }

    func testAnEndedGrantChecksTheSecretBeforeItSaysHowItEnded() throws {
        var book = GrantBook()
        let ends: [GrantEnd] = [.revoked, .expired, .regionGone, .ownerGone]
        for end in ends {
            let grant = try record(&book)
            book.end(grant.id, end)
            let wrong = ConnectPrivateData(grantID: grant.id, secret: try GrantSecret.random()).encoded()
            XCTAssertEqual(reason(book.admit(wrong, now: 0)), .badSecret, "\(end): a wrong secret learns nothing of how the grant ended")
            XCTAssertEqual(reason(book.admit(ConnectPrivateData(grant.descriptor).encoded(), now: 0)), end.rejectReason,
                           "\(end): the right secret hears why")
        }
    }

    func testGrantIDsAreRandomNonZeroAndNeverThoseOfALiveOrRememberedGrant() throws {
        // A source that repeats itself: 0 and ids in use are drawn again.
        var draws: [UInt64] = [0, 5, 5, 0, 5, 9, 5, 9, 11]
        var book = GrantBook(ids: { draws.removeFirst() })
        let first = try record(&book)
        XCTAssertEqual(first.id, 5, "0 is never an id")
        book.end(first.id, .revoked)
        XCTAssertEqual(try record(&book).id, 9, "an ended grant's id is not reused while it is remembered")
        XCTAssertEqual(try record(&book).id, 11, "nor a live one's")
        // The real source: 64 random ids, no two alike, none sequential.
        var random = GrantBook()
        let ids = try (0..<64).map { _ in try record(&random).id }
        XCTAssertEqual(Set(ids).count, 64)
        XCTAssertFalse(zip(ids, ids.dropFirst()).allSatisfy { $1 == $0 &+ 1 }, "ids are not a counter: \(ids)")
    }

    func testGrantsAreCountedPerRegionAndPerUIDUntilTheyEnd() throws {
        var book = GrantBook()
        func make(uid: UInt32, region: UInt64) throws -> GrantRecord {
            let grant = GrantRecord(id: try book.makeID(), owner: OwnerID(UInt64(uid)), uid: uid, region: RegionID(region),
                                    secret: try GrantSecret.random(), access: [.read], maxPeers: 1, expiresAt: nil, endpoint: endpoint)
            book.add(grant)
            return grant
        }
        let a = try make(uid: 1000, region: 1)
        _ = try make(uid: 1000, region: 2)
        _ = try make(uid: 1001, region: 1)
        XCTAssertEqual(book.count(on: RegionID(1)), 2)
        XCTAssertEqual(book.count(ofUID: 1000), 2)
        book.end(a.id, .revoked)
        XCTAssertEqual(book.count(on: RegionID(1)), 1)
        XCTAssertEqual(book.count(ofUID: 1000), 1)
        XCTAssertEqual(book.count(ofUID: 1002), 0)
    }

    func testGrantFlagsKeepTheRegionsPinningAndCutRemoteRights() {
        let odpWrite: AccessFlags = [.onDemand, .localWrite, .remoteWrite, .remoteRead]
        XCTAssertEqual(PeerService.flags(for: [.read], registeredWith: odpWrite), [.onDemand, .localWrite, .remoteRead],
                       "LOCAL_WRITE stays: it decides how the pages are taken")
        XCTAssertEqual(PeerService.flags(for: [.write], registeredWith: [.remoteRead]), [.localWrite, .remoteWrite],
                       "the kernel wants LOCAL_WRITE with REMOTE_WRITE")
        XCTAssertEqual(PeerService.flags(for: [.atomic], registeredWith: [.localWrite, .remoteAtomic, .remoteWrite]), [.localWrite, .remoteAtomic])
    }

    func testGrantAccessBitsAreTheWireWordsBothWays() {
        XCTAssertEqual(GrantAccess([.read]).rawValue, 1)
        XCTAssertEqual(GrantAccess([.write]).rawValue, 2)
        XCTAssertEqual(GrantAccess([.atomic]).rawValue, 4)
        for words in [Set<Access>(), [.read], [.read, .write], [.write, .atomic], Set(Access.allCases)] {
            XCTAssertEqual(GrantAccess(words).wire, words)
        }
    }

    func testListenTakesLiteralEndpointsAndRefusesNames() throws {
        var parsed = DaemonConfiguration()
        try parsed.apply(file: "listen = 192.0.2.1:7471, [fd00:77::1]:0\n", name: "test.conf")
        XCTAssertEqual(parsed.listen.map(\.description), ["192.0.2.1:7471", "[fd00:77::1]:0"])
        for bad in ["localhost:7471", "192.0.2.1", "192.0.2.1:70000", "fd00::1:7471", "[fd00::1]7471"] {
            XCTAssertThrowsError(try parsed.apply(file: "listen = \(bad)\n", name: "test.conf"), bad) { error in
                XCTAssertTrue("\(error)".contains("test.conf:1: listen: '\(bad)' is not ADDR:PORT"), "\(error)")
            }
        }
        try parsed.apply(environment: ["MRLEASED_LISTEN": ""])
        XCTAssertEqual(parsed.listen, [], "empty: no listener")
    }

    func testGrantOnADaemonThatDoesNotListenSaysHowToTurnItOn() throws {
        let daemon = try InProcessDaemon()
        let client = try daemon.connect()
        let path = try daemon.scratch.file("data", size: 65536)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let region = try client.register(fd, offset: 0)
        XCTAssertThrowsError(try client.request(.grant(.init(region: region.region)))) { error in
            XCTAssertEqual((error as? ProtocolError)?.code, .remoteAccessUnavailable)
            XCTAssertTrue("\(error)".contains("listen = ADDR:PORT"), "\(error)")
        }
        XCTAssertThrowsError(try client.request(.revokeGrant(grant: 1))) { error in
            XCTAssertEqual((error as? ProtocolError)?.code, .unknownGrant)
        }
        guard case .hello(let hello) = try client.request(.hello(.init())) else { return XCTFail("hello") }
        XCTAssertEqual(hello.endpoints, [])
        guard case .list(let list) = try client.request(.list(after: nil)) else { return XCTFail("list") }
        XCTAssertNil(list.regions.first?.grants, "no listener, no grants field")
        XCTAssertEqual(list.regions.first?.generation, 1)
    }

    func testGrantRequestFieldsAreChecked() throws {
        func decode(_ text: String) throws -> Request { try Codec.decodeRequest(Array(text.utf8)).1 }
        XCTAssertEqual(try decode(#"{"v":1,"type":"grant","id":1,"region":3}"#), .grant(.init(region: 3)))
        for (text, message) in [
            (#"{"v":1,"type":"grant","id":1,"region":3,"access":[]}"#, "must list at least one"),
            (#"{"v":1,"type":"grant","id":1,"region":3,"access":["read","read"]}"#, "twice"),
            (#"{"v":1,"type":"grant","id":1,"region":3,"maxPeers":0}"#, "must be 1 to 1024"),
            (#"{"v":1,"type":"grant","id":1,"region":3,"maxPeers":1025}"#, "must be 1 to 1024"),
            (#"{"v":1,"type":"grant","id":1,"region":3,"expiresInMillis":0}"#, "must be 1 to 315360000000"),
            (#"{"v":1,"type":"grant","id":1,"region":3,"expiresInMillis":18446744073709551615}"#, "must be 1 to 315360000000"),
            (#"{"v":1,"type":"revoke-grant","id":1}"#, "missing field \"grant\""),
        ] {
            XCTAssertThrowsError(try decode(text), text) { error in
                XCTAssertEqual((error as? ProtocolError)?.code, .badRequest)
                XCTAssertTrue("\(error)".contains(message), "\(error)")
            }
        }
    }
}

extension GrantBook {
    /// `admit` with no slot taken (these tests are about the secret, expiry and ends).
    func admit(_ request: [UInt8], now: UInt64) -> Admission { admit(request, now: now, taken: { _ in 0 }) }
}
