import Foundation
import LinuxFile
import MRLeaseGrant
import MRLeaseProtocol
import SystemPackage
import TestSupport
import Verbs
import XCTest

/// Remote access end to end on the guest's rxe1 (192.0.2.1 on dummy0): the daemon listens,
/// a client grants a region, a peer (bare rdma_cm and verbs, `RawPeer`) connects with the
/// descriptor and reaches exactly that region, and nothing else.
final class RemoteAccessVMTests: XCTestCase {
    var daemon: RunningDaemon!
    var owner: RawClient!
    var scratch: ScratchDirectory!

    override func setUpWithError() throws {
        daemon = try PeerDaemon.start()
        owner = try RawClient(path: daemon.socketPath)
        scratch = try ScratchDirectory(in: try Facility.writable(.ext4).require())
    }

    override func tearDown() {
        owner?.close()
        PeerDaemon.stop(daemon, after: self)
    }

    /// The endpoint hello reports, with the port the kernel picked.
    func endpoint() throws -> GrantEndpoint {
        guard case .success(.hello(let hello)) = try owner.request(.hello(.init(clientName: "remote-test"))) else { throw TestFailure("hello") }
        let text = try XCTUnwrap(hello.endpoints?.first, "hello lists no endpoint")
        return try XCTUnwrap(GrantEndpoint(parsing: text))
    }

    func grant(_ region: UInt64, access: Set<Access>? = nil, expiresInMillis: UInt64? = nil, maxPeers: UInt64? = nil) throws -> GrantResult {
        let outcome = try owner.request(.grant(.init(region: region, access: access, expiresInMillis: expiresInMillis, maxPeers: maxPeers)))
        guard case .success(.grant(let result)) = outcome else { throw TestFailure("grant: \(outcome)") }
        return result
    }

    /// The scratch files' fill byte (ScratchDirectory.file).
    static let fill: UInt8 = 0x5A
    func untouched(_ count: Int) -> [UInt8] { [UInt8](repeating: Self.fill, count: count) }

    /// `actual == expected`, reported as the first differing offset and the count, not the bytes.
    func assertBytes(_ actual: [UInt8], _ expected: [UInt8], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        guard actual != expected else { return }
        let differing = zip(actual, expected).enumerated().filter { $0.element.0 != $0.element.1 }
        XCTFail("\(message): \(differing.count) of \(expected.count) bytes differ (lengths \(actual.count)/\(expected.count)), the first at \(differing.first?.offset ?? min(actual.count, expected.count))", file: file, line: line)
    }

    func pattern(_ count: Int, seed: UInt8) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ Int(seed)) } }

    /// The file's bytes through `fd`, the owner's own open file (the one the daemon leased): a
    /// new open by this process would break the lease and revoke the region.
    func fileBytes(_ fd: FileDescriptor, at offset: Int, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let got = try bytes.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: Int64(offset), into: $0) }
        XCTAssertEqual(got, count, "short read")
        return bytes
    }

    /// The file's bytes as another process sees them (`dd`), once nothing holds a lease on it.
    func bytesSeenByAnotherProcess(_ path: String, at offset: Int, count: Int) throws -> [UInt8] {
        let result = try Subprocess.run("/usr/bin/od", ["-An", "-v", "-tx1", "-j\(offset)", "-N\(count)", path])
        XCTAssertEqual(result.status, 0, result.stderr)
        return result.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { UInt8($0, radix: 16) }
    }

    func testPeerWritesAndReadsExactlyTheGrantedRange() throws {
        let here = try endpoint()
        XCTAssertNotEqual(here.port, 0)
        let path = try scratch.file("data", size: 1 << 20)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        // The region starts 64 KiB into the file: a peer's offset 0 is the file's 65536.
        let region = try owner.register(fd, offset: 65536, length: 65536)
        let granted = try grant(region.region)
        XCTAssertTrue(granted.descriptor.hasPrefix("mrlg"))
        XCTAssertEqual(granted.access, [.read, .write])
        let descriptor = try GrantDescriptor(text: granted.descriptor)
        XCTAssertEqual(descriptor.endpoint, here)

        let peer = try RawPeer(descriptor: descriptor)
        let accept = try XCTUnwrap(peer.accept, "not accepted: \(peer.outcome)")
        XCTAssertEqual(accept.length, 65536)
        XCTAssertEqual(accept.generation, 1)
        XCTAssertEqual(accept.grantID, granted.grant)
        XCTAssertEqual(accept.access, [.read, .write])
        XCTAssertEqual(UInt64(accept.transferAlignment), granted.alignment)
        XCTAssertNotEqual(accept.rkey, region.rkey, "the grant's MR is its own (its own PD), not the region's own (which lives in the region PD)")
        try owner.waitForEvents { $0.contains { $0.name == .peerConnected } }

        // Aligned on every device: whole pages at a page boundary.
        let data = pattern(8192, seed: 0x41)
        let wrote = try peer.write(data, at: 4096)
        XCTAssertTrue(wrote.isSuccess, wrote.statusText)
        let (back, done) = try peer.read(8192, at: 4096)
        XCTAssertTrue(done.isSuccess, done.statusText)
        assertBytes(back, data, "READ-after-WRITE returns what was written")
        assertBytes(try fileBytes(fd, at: 65536 + 4096, count: 8192), data, "the bytes are in the file at region offset + 4096")
        assertBytes(try fileBytes(fd, at: 65536, count: 4096), untouched(4096), "nothing before them changed")

        // A local pwrite is what a peer's READ returns.
        let local = pattern(4096, seed: 0x77)
        _ = try local.withUnsafeBytes { try fd.writeAll(toAbsoluteOffset: 65536 + 32768, $0) }
        let (seen, readDone) = try peer.read(4096, at: 32768)
        XCTAssertTrue(readDone.isSuccess, readDone.statusText)
        assertBytes(seen, local, "a peer READ returns what a local pwrite put there")

        if accept.transferAlignment == 1 {
            // Pinned (6.1): any offset lands intact.
            let odd = pattern(333, seed: 0x99)
            XCTAssertTrue(try peer.write(odd, at: 100).isSuccess)
            assertBytes(try fileBytes(fd, at: 65536 + 100, count: 333), odd, "file bytes")
        } else {
            XCTAssertEqual(accept.transferAlignment, 4096, "an ODP device whose unaligned copies corrupt (the self-test) asks for pages")
        }

        guard case .success(.list(let list)) = try owner.request(.list(after: nil)) else { return XCTFail("list") }
        let shown = try XCTUnwrap(list.regions.first?.grants?.first)
        XCTAssertEqual(shown.grant, granted.grant)
        XCTAssertEqual(shown.peers.count, 1)
        let listBytes = String(decoding: Codec.encodeList(id: 1, regions: list.regions), as: UTF8.self)
        XCTAssertFalse(listBytes.contains(granted.descriptor), "list never shows the descriptor")
        XCTAssertFalse(daemon.log.contains(granted.descriptor), "the log never holds the descriptor")

        try peer.disconnect()
        try owner.waitForEvents { events in
            events.contains { if case .peerDisconnected(let gone) = $0 { return gone.reason == .peer }; return false }
        }
        // Another process, once the owner is gone and the lease with it.
        owner.close()
        owner = nil
        try fd.close()
        usleep(200_000)
        assertBytes(try bytesSeenByAnotherProcess(path, at: 65536 + 4096, count: 8192), data, "another process reads the peer's bytes at that offset")
    }

    func testPeerOfOneGrantCannotReachAnotherRegion() throws {
        let path = try scratch.file("data", size: 1 << 20)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let a = try owner.register(fd, offset: 0, length: 65536)
        let b = try owner.register(fd, offset: 131072, length: 65536)
        let peerA = try RawPeer(descriptor: try GrantDescriptor(text: try grant(a.region).descriptor))
        let peerB = try RawPeer(descriptor: try GrantDescriptor(text: try grant(b.region).descriptor))
        let acceptB = try XCTUnwrap(peerB.accept)
        XCTAssertNotNil(peerA.accept)
        let data = pattern(4096, seed: 0x10)
        // B's grant keys, B's registration keys: neither works on A's connection.
        let withGrantKeys = try peerA.write(data, at: 0, remoteAddress: acceptB.remoteAddress, rkey: acceptB.rkey)
        XCTAssertFalse(withGrantKeys.isSuccess, "a peer of grant A reached region B with B's grant keys")
        let another = try RawPeer(descriptor: try GrantDescriptor(text: try grant(a.region, maxPeers: 2).descriptor))
        let withRegionKeys = try another.write(data, at: 0, remoteAddress: b.address, rkey: b.rkey)
        XCTAssertFalse(withRegionKeys.isSuccess, "a peer of grant A reached region B with the client's own rkey")
        assertBytes(try fileBytes(fd, at: 131072, count: 65536), untouched(65536), "nothing changed in region B")
        print("isolation: completion statuses \(withGrantKeys.statusText) / \(withRegionKeys.statusText)")
    }

    func testRejectsCarryTheirReasonAndChangeNothing() throws {
        let here = try endpoint()
        let path = try scratch.file("data", size: 65536)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let region = try owner.register(fd, offset: 0, length: 65536)
        let granted = try GrantDescriptor(text: try grant(region.region).descriptor)

        func rejected(_ privateData: [UInt8]) throws -> RejectReason? { try RawPeer(endpoint: here, privateData: privateData).rejection }
        let wrong = try GrantSecret(bytes: [UInt8](repeating: 7, count: 16))
        XCTAssertEqual(try rejected(ConnectPrivateData(grantID: granted.grantID, secret: wrong).encoded()), .badSecret)
        XCTAssertEqual(try rejected(ConnectPrivateData(grantID: granted.grantID + 1000, secret: granted.secret).encoded()), .unknownGrant)
        let good = ConnectPrivateData(granted).encoded()
        // The CM pads private data with zeros to its full size (56 bytes for a REQ): a request
        // cut inside the secret arrives as one whose secret ends in zeros.
        XCTAssertEqual(try rejected(Array(good.prefix(20))), .badSecret, "truncated inside the secret")
        XCTAssertEqual(try rejected([]), .malformed, "no private data at all")
        XCTAssertEqual(try rejected(good + [UInt8](repeating: 1, count: 24)), .malformed, "oversized (non-zero padding)")
        var future = good
        future[2] = 2
        XCTAssertEqual(try rejected(future), .unsupportedVersion)

        let expiring = try GrantDescriptor(text: try grant(region.region, expiresInMillis: 200).descriptor)
        usleep(400_000)
        XCTAssertEqual(try rejected(ConnectPrivateData(expiring).encoded()), .expired)

        // One peer at a time by default; revoke-grant disconnects it, and the secret then fails.
        let first = try RawPeer(descriptor: granted)
        XCTAssertNotNil(first.accept)
        XCTAssertEqual(try rejected(good), .tooManyPeers)
        guard case .success = try owner.request(.revokeGrant(grant: granted.grantID)) else { return XCTFail("revoke-grant") }
        try first.expect(.disconnected)
        XCTAssertEqual(try rejected(good), .revoked, "the secret replayed after revoke-grant")
        guard case .failure(let error) = try owner.request(.revokeGrant(grant: granted.grantID)) else { return XCTFail("second revoke-grant") }
        XCTAssertEqual(error.code, .unknownGrant)
        assertBytes(try fileBytes(fd, at: 0, count: 65536), untouched(65536), "no reject changed the file")
    }

    func testRevocationStopsPeersAndTheSameGrantWorksAgainWithANewGeneration() throws {
        let path = try scratch.file("data", size: 1 << 20)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        // Asked for: under the default (`follow`) an ODP region's peers ride through (FollowVMTests).
        let region = try owner.register(fd, offset: 0, length: 65536, layoutPolicy: .revoke)
        let descriptor = try GrantDescriptor(text: try grant(region.region).descriptor)
        let peer = try RawPeer(descriptor: descriptor)
        let first = try XCTUnwrap(peer.accept)
        XCTAssertTrue(try peer.write(pattern(4096, seed: 1), at: 0).isSuccess)

        // A truncate that keeps the region (the file grows) still breaks the lease.
        let start = Date()
        // truncate(1) opens with O_NONBLOCK, which a lease refuses (EAGAIN) instead of breaking
        // and waiting; dd seeks and ftruncates as a writer would.
        let truncate = try Subprocess.run("/bin/dd", ["if=/dev/null", "of=\(path)", "bs=1", "seek=\(2 << 20)", "status=none"])
        XCTAssertEqual(truncate.status, 0, truncate.stderr)
        let took = Date().timeIntervalSince(start)
        XCTAssertLessThan(took, 0.3 + 2, "the truncate waited for the quiesce deadline plus a margin, not the lease-break-time")
        try peer.expect(.disconnected)
        try peer.id.disconnect()
        let stale = try peer.write(pattern(4096, seed: 2), at: 4096)
        XCTAssertFalse(stale.isSuccess, "a write on the revoked connection completed")
        try owner.waitForEvents { events in events.contains { $0.name == .restored } }
        let names = owner.events.map(\.name)
        XCTAssertTrue(names.contains(.peerDisconnected) && names.contains(.revoking) && names.contains(.revoked), "\(names)")

        // The same descriptor: a new generation, new keys, and writes land again.
        var again: RawPeer?
        for _ in 0..<50 {
            let attempt = try RawPeer(descriptor: descriptor)
            if attempt.accept != nil { again = attempt; break }
            XCTAssertEqual(attempt.rejection, .regionRevoking, "only a revoking region makes a peer wait")
            usleep(100_000)
        }
        let second = try XCTUnwrap(again?.accept, "the grant did not work again after the restoration")
        XCTAssertEqual(second.generation, first.generation + 1)
        let data = pattern(4096, seed: 3)
        XCTAssertTrue(try again!.write(data, at: 8192).isSuccess)
        assertBytes(try fileBytes(fd, at: 8192, count: 4096), data, "file bytes")
        assertBytes(try fileBytes(fd, at: 4096, count: 4096), untouched(4096), "the stale write left nothing")
        print("revocation as a peer sees it: truncate took \(Int(took * 1000)) ms; peer events \(peer.events)")
    }

    func testOwnerLeavingOrDaemonStoppingLeavesNoVerbsObjectBehind() throws {
        let path = try scratch.file("data", size: 65536)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        func counts() throws -> [String: Int] {
            var counts: [String: Int] = [:]
            for kind in ["qp", "cm_id", "pd", "mr", "cq"] { counts[kind] = try RDMAResources.entries(kind, pid: daemon.pid).count }
            return counts
        }
        let baseline = try counts()
        let region = try owner.register(fd, offset: 0, length: 65536)
        let peer = try RawPeer(descriptor: try GrantDescriptor(text: try grant(region.region).descriptor))
        XCTAssertNotNil(peer.accept)
        let during = try counts()
        XCTAssertEqual(during["qp"], (baseline["qp"] ?? 0) + 1)
        XCTAssertEqual(during["mr"], (baseline["mr"] ?? 0) + 2, "the region's MR and the grant's")
        owner.close()
        owner = nil
        try peer.expect(.disconnected)
        var after = try counts()
        for _ in 0..<50 where after != baseline {
            usleep(100_000)
            after = try counts()
        }
        XCTAssertEqual(after, baseline, "QPs, cm_ids, PDs, MRs or CQs outlived the owner")
        let locks = try String(contentsOfFile: "/proc/locks", encoding: .utf8)
        XCTAssertFalse(locks.split(separator: "\n").contains { $0.contains("LEASE") && $0.contains(" \(daemon.pid) ") }, "a lease outlived the owner")

        // The daemon stopping: its peers see a disconnect.
        owner = try RawClient(path: daemon.socketPath)
        let again = try owner.register(fd, offset: 0, length: 65536)
        let last = try RawPeer(descriptor: try GrantDescriptor(text: try grant(again.region).descriptor))
        XCTAssertNotNil(last.accept)
        XCTAssertEqual(daemon.stop(), 0)
        try last.expect(.disconnected)
    }
}
