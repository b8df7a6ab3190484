import Foundation
import MRLeaseClient
import MRLeasePeer
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

/// A remote peer on another kernel reaching a region the daemon exports: the exporting guest
/// runs the built `mrleased` listening on its wire address, registers a file through the client
/// library and grants the region, and hands the descriptor over the shared directory; the other
/// guest runs `mrlease peer … write`, then `verify` of what it wrote and of bytes it did not
/// write; the exporter then finds exactly the peer's bytes in its file. Once with the daemon
/// listening on IPv4, once on IPv6; once exported by a, once by b.
final class RemoteAccessPairTests: XCTestCase {
    /// The file is 1 MiB of ScratchDirectory's fill; the region is [64 KiB, 128 KiB) of it; the
    /// peer writes 8 KiB at region offset 4 KiB: whole pages, so every device's alignment allows
    /// it, and reads back the 4 KiB before them, which it never wrote.
    static let fill: UInt8 = 0x5A
    static let fileLength = 1 << 20, regionOffset = 65536, regionLength = 65536
    static let writeOffset = 4096, writeLength = 8192

    /// A seed per direction and family, so no run's bytes can pass for another's.
    static func pattern(_ exporter: Pair.Role, _ tag: String) -> PeerPattern {
        .seeded((exporter == .a ? 0xA0 : 0xB0) + (tag == "v4" ? 4 : 6))
    }

    static var mrlease: String { Subprocess.builtProduct("mrlease") }

    func testAPeerOnBWritesARegionTheDaemonOnAExports() throws {
        try exchange(exporter: .a)
    }

    func testAPeerOnAWritesARegionTheDaemonOnBExports() throws {
        try exchange(exporter: .b)
    }

    /// Both families in turn, this guest exporting or writing as `exporter` says.
    func exchange(exporter: Pair.Role) throws {
        let pair = try Pair.require()
        let name = { (tag: String) in "export-\(exporter.rawValue)-\(tag)" }
        let step = pair.role == exporter ? "descriptor" : "done"
        try pair.session(publishing: pair.families.map { "\(name($0.tag)).\(step)" }) {
            for family in pair.families {
                if pair.role == exporter {
                    try export(pair, name(family.tag), listening: family.mine, pattern: Self.pattern(exporter, family.tag))
                } else {
                    try write(pair, name(family.tag), at: family.theirs, pattern: Self.pattern(exporter, family.tag))
                }
            }
        }
    }

    /// The listen setting's syntax: `addr:0` or `[addr]:0` (port 0: the kernel picks).
    static func endpoint(_ address: String, port: String = "0") -> String {
        address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    /// The exporter: the daemon, a registered and granted region, the descriptor published;
    /// after the peer's report, the file must hold the peer's bytes exactly where it wrote them.
    func export(_ pair: Pair, _ name: String, listening address: String, pattern: PeerPattern) throws {
        // No --device: the daemon serves the device that carries the listen address (rxew).
        let daemon = try RunningDaemon(arguments: ["--listen", Self.endpoint(address), "--log-level", "info"],
                                       environment: ["MRLEASED_MAX_BYTES_PER_UID": "1073741824"])
        var finished = false
        defer { if !finished || (testRun?.totalFailureCount ?? 0) > 0 { print("mrleased log (\(name)):\n\(daemon.log)") } }
        let scratch = try ScratchDirectory(in: try Facility.writable(.ext4).require(), name: "pair-\(name)")
        let file = try scratch.file("data", size: Self.fileLength, byte: Self.fill)
        let owner = try MRLeaseClient.connect(path: daemon.socketPath)
        defer { owner.close() }
        let region = try owner.register(path: file, offset: UInt64(Self.regionOffset), length: UInt64(Self.regionLength),
                                        access: [.read, .write])
        let granted = try owner.grant(region: region.region)
        XCTAssertTrue(granted.endpoint.hasPrefix(Self.endpoint(address, port: "")), "the grant's endpoint \(granted.endpoint) is the wire address")
        print("pair \(name): region \(region.strategy) on \(region.backing) (\(region.device)), grant at \(granted.endpoint), alignment \(granted.alignment)")
        try pair.publish("\(name).descriptor", granted.descriptor)

        let report = try pair.waitFor("\(name).done", what: "mrlease peer write + verify against \(granted.endpoint)")
        XCTAssertEqual(report, "write=0 verify=0 verify-untouched=0", "the peer's exit statuses (1: refused or unreachable, 3: mismatch)")
        let fd = try XCTUnwrap(owner.file(region: region.region), "the client holds the registered file")
        var bytes = [UInt8](repeating: 0, count: Self.fileLength)
        // Through the owner's own open file, the one the daemon leased: another open would break the lease.
        let got = try bytes.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }
        XCTAssertEqual(got, Self.fileLength, "short read of \(file)")
        let start = Self.regionOffset + Self.writeOffset
        var expected = [UInt8](repeating: Self.fill, count: Self.fileLength)
        expected.replaceSubrange(start..<start + Self.writeLength, with: pattern.bytes(at: UInt64(Self.writeOffset), count: Self.writeLength))
        XCTAssertNil(difference(bytes, expected), "\(file) after the peer's write of \(Self.writeLength) bytes of \(pattern) at file offset \(start) "
                     + "(the peer reported: \(report))")
        owner.close()
        XCTAssertEqual(daemon.stop(), 0, "mrleased after SIGTERM (nil: still running)")
        finished = true
    }

    /// The peer: the descriptor from the exporter, `mrlease peer write` then `verify` of the
    /// same range and of the 4 KiB before it (the file's fill, which only the exporter wrote);
    /// the exit statuses published for the exporter.
    func write(_ pair: Pair, _ name: String, at address: String, pattern: PeerPattern) throws {
        let descriptor = try pair.waitFor("\(name).descriptor", what: "mrleased listening on \(address) and a grant")
        func peer(_ action: String, offset: Int, length: Int, pattern: String) throws -> Subprocess {
            try Subprocess.run("/usr/bin/timeout", ["120", Self.mrlease, "peer", descriptor, action,
                                                     "--offset", "\(offset)", "--length", "\(length)", "--pattern", pattern])
        }
        let written = try peer("write", offset: Self.writeOffset, length: Self.writeLength, pattern: "\(pattern)")
        let verified = try peer("verify", offset: Self.writeOffset, length: Self.writeLength, pattern: "\(pattern)")
        let untouched = try peer("verify", offset: 0, length: Self.writeOffset, pattern: "\(PeerPattern.byte(Self.fill))")
        try pair.publish("\(name).done", "write=\(written.status) verify=\(verified.status) verify-untouched=\(untouched.status)")
        print("pair \(name): " + (written.stdout.split(separator: "\n").first { $0.hasPrefix("connected ") } ?? "no connected line"))
        for (what, result) in [("write", written), ("verify", verified), ("verify of the bytes before the write", untouched)] {
            XCTAssertEqual(result.status, 0, "mrlease peer \(what) against \(address) (124: no end within 120 s): \(result.stdout)\(result.stderr)")
        }
        XCTAssertTrue(written.stdout.contains("endpoint=\(Self.endpoint(address, port: ""))"),
                      "the peer connected to the other guest's wire address \(address): \(written.stdout)")
    }
}
