import Foundation
import TestSupport
import XCTest

/// docs/protocol.md §9's C peer, compiled as printed, across the wire: role a exports (the
/// daemon on its wire address, `mrlease register … --grant`), role b compiles the program with
/// the section's own command and runs it with the descriptor: a WRITE of 8 KiB, a READ of them
/// back, and, after a revokes the grant, a connect that is refused with the reason `revoked`.
/// a then finds exactly the program's bytes in its file. Over IPv4 and over IPv6.
final class CPeerPairTests: XCTestCase {
    static let fill: UInt8 = 0x5A, written: UInt8 = 0xC9
    static let fileLength = 1 << 20, regionOffset = 65536, regionLength = 65536
    /// Whole pages: every device's transfer alignment allows them (4096 on 7.x rxe ODP).
    static let writeOffset = 8192, writeLength = 8192

    func testTheProgramAsPrintedWritesAndReadsAcrossTheWire() throws {
        let pair = try Pair.require()
        for family in pair.families {
            try pair.split("cpeer-\(family.tag)", a: ["descriptor", "revoked"], b: ["wrote", "refused"],
                           exporter: { try export($0, $1, listening: family.mine) }, peer: run)
        }
    }

    /// Role a: the region and its grant; after the program's WRITE and READ, the file; then the
    /// grant revoked (`mrlease revoke-grant` through the owner) for the program's last connect.
    func export(_ pair: Pair, _ name: String, listening address: String) throws {
        let exporter = try PairExporter(name, listening: address, fileSize: Self.fileLength, fill: Self.fill)
        defer { exporter.stop(after: self) }
        try exporter.register(offset: Self.regionOffset, length: Self.regionLength)
        try pair.publish("\(name).descriptor", exporter.grants[0].descriptor)
        let report = try pair.waitFor("\(name).wrote", seconds: 600, what: "cc of the C peer, its write and its read")
        XCTAssertEqual(report, "write=0 read=0", "the C peer's exit statuses (enum { OK, VERBS, USAGE, REJECTED, MISMATCH })")

        let revoke = try Subprocess.run(PairExporter.mrlease, ["revoke-grant", exporter.grants[0].grant, "--socket", exporter.daemon.socketPath])
        XCTAssertEqual(revoke.status, 0, "mrlease revoke-grant: \(revoke.stdout)\(revoke.stderr)")
        try pair.publish("\(name).revoked", "")
        let refused = try pair.waitFor("\(name).refused", what: "the C peer's connect with the revoked grant")
        XCTAssertEqual(refused, "status=\(CPeerProgram.Exit.rejected.rawValue) revoked=yes", "the C peer after the revocation")

        XCTAssertEqual(exporter.release(), 0, "mrlease register after SIGINT:\n\(exporter.events)")
        let bytes = try exporter.contents()
        var expected = [UInt8](repeating: Self.fill, count: Self.fileLength)
        let start = Self.regionOffset + Self.writeOffset
        expected.replaceSubrange(start..<start + Self.writeLength, with: [UInt8](repeating: Self.written, count: Self.writeLength))
        XCTAssertNil(difference(bytes, expected), "\(exporter.file) after the C peer's write of \(Self.writeLength) bytes of "
                     + "0x\(String(Self.written, radix: 16)) at file offset \(start)")
    }

    /// Role b: the program compiled here (this guest's compiler and rdma-core), run with the
    /// descriptor; its statuses published.
    func run(_ pair: Pair, _ name: String) throws {
        let descriptor = try pair.waitFor("\(name).descriptor", what: "mrleased listening and a grant")
        _ = try CPeerProgram.build()
        let wrote = try CPeerProgram.run([descriptor, "write", "\(Self.writeOffset)", "\(Self.writeLength)", "0x\(String(Self.written, radix: 16))"])
        let read = try CPeerProgram.run(["--raw", descriptor, "read", "\(Self.writeOffset)", "\(Self.writeLength)"])
        try pair.publish("\(name).wrote", "write=\(wrote.status) read=\(read.status)")
        XCTAssertEqual(wrote.status, CPeerProgram.Exit.ok.rawValue, "write across the wire: \(wrote.text) \(wrote.stderr)")
        XCTAssertEqual(read.status, CPeerProgram.Exit.ok.rawValue, "read across the wire: \(read.stderr)")
        XCTAssertEqual(read.stdout, [UInt8](repeating: Self.written, count: Self.writeLength), "the bytes read back are the ones written")

        _ = try pair.waitFor("\(name).revoked", what: "mrlease revoke-grant of the grant")
        let rejected = try CPeerProgram.run([descriptor, "read", "0", "4096"])
        try pair.publish("\(name).refused", "status=\(rejected.status) revoked=\(rejected.stderr.contains("revoked") ? "yes" : "no")")
        XCTAssertEqual(rejected.status, CPeerProgram.Exit.rejected.rawValue, rejected.stderr)
        XCTAssertTrue(rejected.stderr.contains("revoked"), "the reject's reason: \(rejected.stderr)")
    }
}
