import Foundation
import MRLeaseClient
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

/// docs/protocol.md §9's C peer, compiled as printed, against the real daemon: a client
/// registers a file range and grants it; the program writes and reads through the descriptor;
/// the bytes are in the file; a revoked grant is refused with its reason.
final class CPeerDaemonVMTests: XCTestCase {
    func testTheProgramAsPrintedWritesAndReadsAFileThroughTheDaemon() throws {
        let address = try Facility.rdmaCMAddress.require()
        _ = try CPeerProgram.build()
        let daemon = try RunningDaemon(arguments: ["--listen", "\(address):0", "--log-level", "warning"],
                                       environment: ["MRLEASED_MAX_BYTES_PER_UID": "1073741824"])
        defer { XCTAssertEqual(daemon.stop(), 0, daemon.log) }
        let directory = try Facility.writable(.ext4).require()
        let files = try ScratchDirectory(in: directory)
        let path = try files.file("data", size: 1 << 20, byte: 0)
        let client = try MRLeaseClient.connect(path: daemon.socketPath, acknowledgingRevocations: true)
        defer { client.close() }
        let region = try client.register(path: path, offset: 65536, length: 65536, access: [.read, .write])
        let grant = try client.grant(region: region.region)
        let fd = try XCTUnwrap(client.file(region: region.region))

        // Page-aligned on every device (4096 is the alignment on 7.x rxe ODP).
        let wrote = try CPeerProgram.run([grant.descriptor, "write", "8192", "8192", "0xA7"])
        XCTAssertEqual(wrote.status, CPeerProgram.Exit.ok.rawValue, "\(wrote.text) \(wrote.stderr)")
        var bytes = [UInt8](repeating: 0, count: 8192)
        _ = try bytes.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 65536 + 8192, into: $0) }
        XCTAssertTrue(bytes.allSatisfy { $0 == 0xA7 }, "the peer's bytes are in the file at region offset 8192")
        var before = [UInt8](repeating: 1, count: 8192)
        _ = try before.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 65536, into: $0) }
        XCTAssertTrue(before.allSatisfy { $0 == 0 }, "nothing before them changed")

        let read = try CPeerProgram.run(["--raw", grant.descriptor, "read", "8192", "4096"])
        XCTAssertEqual(read.status, CPeerProgram.Exit.ok.rawValue, read.stderr)
        XCTAssertEqual(read.stdout, [UInt8](repeating: 0xA7, count: 4096))

        if grant.alignment > 1 {
            let refused = try CPeerProgram.run([grant.descriptor, "write", "100", "4096", "0x11"])
            XCTAssertEqual(refused.status, CPeerProgram.Exit.usage.rawValue, "an unaligned transfer is refused, not corrupted: \(refused.stderr)")
        } else {
            let odd = try CPeerProgram.run([grant.descriptor, "write", "100", "333", "0x11"])
            XCTAssertEqual(odd.status, CPeerProgram.Exit.ok.rawValue, odd.stderr)
        }

        try client.revokeGrant(grant.grant)
        let rejected = try CPeerProgram.run([grant.descriptor, "read", "0", "4096"])
        XCTAssertEqual(rejected.status, CPeerProgram.Exit.rejected.rawValue)
        XCTAssertTrue(rejected.stderr.contains("revoked"), rejected.stderr)
    }
}
