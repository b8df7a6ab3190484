import Foundation
import MRLeaseGrant
import TestSupport
import XCTest

/// docs/protocol.md's C peer, compiled with cc in the guest and run as printed against a
/// counterpart on the guest's rdma_cm address (rxe1, 192.0.2.1): what it writes lands exactly
/// there, what it reads is what is there, and what it refuses or is refused it says.
final class CPeerVMTests: XCTestCase {
    private static let regionLength = 64 << 10

    /// The one place the peer's counterpart is made: a minimal responder in this process, which
    /// can answer what the daemon never would (tampered accepts, any reject, any alignment).
    /// CPeerDaemonVMTests runs the same program against the real daemon.
    private func counterpart(answer: MinimalResponder.Answer) throws -> PeerCounterpart {
        let address = try Facility.rdmaCMAddress.require()
        _ = try CPeerProgram.build()   // skips (naming cc or the headers) before anything is set up
        return try MinimalResponder(address: address, length: Self.regionLength, answer: answer)
    }

    private static var readWrite: MinimalResponder.Answer { .accept(access: [.read, .write], alignment: 1, generation: 7) }

    private func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
    }

    /// Runs the peer against `target`, serving it meanwhile, and checks the peer spoke the
    /// protocol (the responder's own record) before handing back the result.
    private func peer(_ arguments: [String], against target: PeerCounterpart) throws -> CPeerProgram.Run {
        let responder = target as? MinimalResponder
        let requestsBefore = responder?.requests.count ?? 0
        let run = try CPeerProgram.run(arguments, serve: target.serve)
        if let responder {
            XCTAssertEqual(responder.problems, [], "events: \(responder.log)")
            XCTAssertEqual(responder.requests.count, requestsBefore + 1, "one connect request per run; events: \(responder.log)")
        }
        return run
    }

    func testAWriteLandsExactlyThoseBytesAtThatOffsetAndIsReadBack() throws {
        let target = try counterpart(answer: Self.readWrite)
        let before = pattern(Self.regionLength, seed: 3)
        target.store(before)
        var expected = before
        for (offset, length, byte) in [(4097, 1000, 0x5A), (8192, 8192, 0xC3), (Self.regionLength - 1, 1, 0x01)] {
            let run = try peer([target.descriptor, "write", "\(offset)", "\(length)", "0x\(String(byte, radix: 16))"], against: target)
            XCTAssertEqual(run.status, CPeerProgram.Exit.ok.rawValue, run.stderr)
            XCTAssertEqual(run.text, "wrote \(length) bytes of 0x\(String(format: "%02x", byte)) at offset \(offset), read back and checked (generation 7)\n")
            expected.replaceSubrange(offset..<offset + length, with: repeatElement(UInt8(byte), count: length))
            let now = target.contents()
            XCTAssertEqual(now, expected, "the region after writing \(length) bytes at \(offset): first difference at "
                           + "\(String(describing: zip(now, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset))")
        }
        try target.close()
    }

    func testAReadPrintsWhatIsThereInHexOrRaw() throws {
        let target = try counterpart(answer: Self.readWrite)
        let contents = pattern(Self.regionLength, seed: 0x40)
        target.store(contents)
        let (offset, length) = (100, 300)
        let slice = Array(contents[offset..<offset + length])
        let hex = try peer([target.descriptor, "read", "\(offset)", "\(length)"], against: target)
        XCTAssertEqual(hex.status, CPeerProgram.Exit.ok.rawValue, hex.stderr)
        let lines = stride(from: 0, to: length, by: 32).map { slice[$0..<min($0 + 32, length)].map { String(format: "%02x", $0) }.joined() }
        XCTAssertEqual(hex.text, lines.joined(separator: "\n") + "\n", "32 bytes a line, in hex")
        let raw = try peer(["--raw", target.descriptor, "read", "0", "\(Self.regionLength)"], against: target)
        XCTAssertEqual(raw.status, CPeerProgram.Exit.ok.rawValue, raw.stderr)
        XCTAssertEqual(raw.stdout, contents, "--raw prints the region's bytes as they are")
        try target.close()
    }

    /// On a region whose accept says 4096 (a device whose ODP copies are page-bound) an
    /// unaligned range is refused with the alignment named, and nothing reaches the region; so is
    /// a range past the region's end and an operation the grant does not allow.
    func testRangesTheAcceptDoesNotAllowAreRefusedBeforeAnyTransfer() throws {
        let target = try counterpart(answer: .accept(access: [.write], alignment: 4096, generation: 1))
        let contents = pattern(Self.regionLength, seed: 9)
        target.store(contents)
        let cases: [([String], String)] = [
            (["write", "100", "4096"], "OFFSET 100 and LENGTH 4096 must be multiples of the region's transfer alignment 4096"),
            (["write", "4096", "100"], "OFFSET 4096 and LENGTH 100 must be multiples of the region's transfer alignment 4096"),
            (["write", "\(Self.regionLength - 4096)", "8192"], "range \(Self.regionLength - 4096)+8192 is outside the region's \(Self.regionLength) bytes"),
            (["read", "0", "4096"], "the grant does not allow read"),
        ]
        for (arguments, message) in cases {
            let run = try peer([target.descriptor] + arguments, against: target)
            XCTAssertEqual(run.status, CPeerProgram.Exit.usage.rawValue, "\(arguments): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains(message), "expected '\(message)', got \(run.stderr)")
            XCTAssertEqual(target.contents(), contents, "\(arguments) changed the region")
        }
        // Write-only: the write lands, and the peer says it could not read it back.
        let run = try peer([target.descriptor, "write", "4096", "4096", "7"], against: target)
        XCTAssertEqual(run.status, CPeerProgram.Exit.ok.rawValue, run.stderr)
        XCTAssertEqual(run.text, "wrote 4096 bytes; the grant has no read access: not persisted or checked\n")
        XCTAssertEqual(Array(target.contents()[4096..<8192]), [UInt8](repeating: 7, count: 4096))
        try target.close()
    }

    func testAnMrleasedRejectPrintsItsReasonAndRetryHint() throws {
        let target = try counterpart(answer: .reject(RejectPrivateData(reason: .regionRevoking, retryAfterMilliseconds: 500)))
        let run = try peer([target.descriptor, "write", "0", "4096"], against: target)
        XCTAssertEqual(run.status, CPeerProgram.Exit.rejected.rawValue, run.stderr)
        XCTAssertEqual(run.stderr, "peer: rejected by mrleased: reason 8 (region-revoking), retry after 500 ms\n")
        XCTAssertEqual(target.contents(), [UInt8](repeating: 0, count: Self.regionLength))
        try target.close()
    }

    /// Nobody listens on the port: the IB CM itself rejects (reason 8, invalid service ID), with
    /// no mrleased private data, and the peer says it was the CM.
    func testAConnectToAPortNobodyListensOnIsTheCMsReject() throws {
        let target = try counterpart(answer: Self.readWrite)
        var grant = try GrantDescriptor(text: target.descriptor)
        try target.close()   // the port is free again
        grant.grantID &+= 1
        let run = try CPeerProgram.run([grant.text, "read", "0", "64"])
        XCTAssertEqual(run.status, CPeerProgram.Exit.rejected.rawValue, run.stderr)
        XCTAssertEqual(run.stderr, "peer: rejected by the CM, status 8\n")
    }

    /// The peer checks the accept before it transfers anything: one for another grant, with
    /// bytes in its padding, or with another header is refused (status 1), and the region stays
    /// as it was. Only the minimal responder can send these: they test the C program, not a daemon.
    func testAnAcceptThePeerCannotTrustIsRefusedBeforeAnyTransfer() throws {
        let address = try Facility.rdmaCMAddress.require()
        _ = try CPeerProgram.build()
        let cases: [(String, ([UInt8]) -> [UInt8], String)] = [
            ("another grant", { var b = $0; b[47] ^= 1; return b }, "accept: for grant "),
            ("a byte in the padding", { $0 + [0, 0, 9] }, "accept: padding byte 50 is not zero"),
            ("a reject's kind", { var b = $0; b[3] = 3; return b }, "accept: not an mrleased version 1 accept ("),
            ("version 2", { var b = $0; b[2] = 2; return b }, "accept: not an mrleased version 1 accept ("),
            ("no access", { var b = $0; b[7] = 0; return b }, "accept: invalid access, length or alignment"),
            ("alignment 3", { var b = $0; b[31] = 3; return b }, "accept: invalid access, length or alignment"),
        ]
        for (what, bytes, message) in cases {
            let responder = try MinimalResponder(address: address, length: Self.regionLength,
                                                 answer: .tampered(access: [.read, .write], alignment: 1, bytes: bytes))
            let run = try peer([responder.descriptor, "write", "0", "4096"], against: responder)
            XCTAssertEqual(run.status, CPeerProgram.Exit.verbs.rawValue, "\(what): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains(message), "\(what): expected '\(message)', got \(run.stderr)")
            XCTAssertEqual(responder.contents(), [UInt8](repeating: 0, count: Self.regionLength), "\(what): the region changed")
            try responder.close()
        }
    }
}
