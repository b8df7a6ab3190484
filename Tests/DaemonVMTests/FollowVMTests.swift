import Foundation
import LinuxFile
import TestSupport
import XCTest

/// Layout policy `follow` with real RDMA (rxe ODP, the 7.x guest): `mrlease register
/// --layout-policy follow --grant` holds an ODP region, `mrlease peer … write --loop` writes and
/// persists through it, and other processes change the file's layout under it. The peer must
/// never be disconnected or given new keys, the owner must hear `layout` (never `revoking`), and
/// afterwards the file must hold what the peer last persisted, read both by the file and by RDMA.
final class FollowVMTests: XCTestCase {
    typealias Background = PeerThroughRevocationVMTests.Background

    var daemon: RunningDaemon!
    var scratch: ScratchDirectory!
    let mrlease = Subprocess.builtProduct("mrlease")

    override func setUpWithError() throws {
        let address = try Facility.rdmaCMAddress.require()
        guard TestKernel.rxeHasODP else { throw XCTSkip("needs rxe with ODP (Linux 6.14 or later; the 7.x guest): follow is ODP only") }
        // The daemon's default stays revoke: each region here asks for follow.
        daemon = try RunningDaemon(arguments: ["--listen", "\(address):0", "--log-level", "info"],
                                   environment: ["MRLEASED_MAX_BYTES_PER_UID": "1073741824", "MRLEASED_QUIESCE_MS": "300"])
        scratch = try ScratchDirectory(name: "follow")
    }

    override func tearDown() {
        guard let daemon else { return }
        let status = daemon.stop()
        if status != 0 || (testRun?.totalFailureCount ?? 0) > 0 {
            XCTAssertEqual(status, 0, "mrleased did not stop cleanly")
            print("mrleased log:\n\(daemon.log)")
        }
    }

    /// Every file system with FS-DAX or page cache where ODP registers on this kernel.
    func backings() throws -> [(String, String)] {
        let candidates: [(String, Facility)] = [("ext4 page cache", .ext4), ("xfs page cache", .xfs),
                                                ("ext4 FS-DAX", .ext4DAX), ("xfs FS-DAX", .xfsDAX)]
        let found = candidates.compactMap { name, facility in facility.value.map { (name, $0) } }
        if found.isEmpty { throw XCTSkip("needs \(Facility.ext4.rawValue)") }
        return found
    }

    func owner(_ path: String, length: Int, output: String) throws -> (Background, String) {
        let owner = try Background(mrlease, ["register", path, "--socket", daemon.socketPath, "--length", "\(length)",
                                             "--access", "read,write", "--strategy", "odp", "--layout-policy", "follow", "--grant"],
                                   output: output)
        try owner.waitFor("the descriptor line") { $0.contains("descriptor ") }
        XCTAssertTrue(owner.output.contains("layout policy follow"), owner.output)
        let line = try XCTUnwrap(owner.lines.first { $0.hasPrefix("descriptor ") })
        return (owner, String(try XCTUnwrap(line.split(separator: " ").last)))
    }

    func persisted(_ peer: Background) -> Int { peer.lines.filter { $0.hasPrefix("persisted ") }.count }

    /// Runs a breaker to its end; its wall time in ms.
    func breaker(_ executable: String, _ arguments: [String]) throws -> Int {
        let start = Date()
        let result = try Subprocess.run(executable, arguments)
        XCTAssertEqual(result.status, 0, "\(executable) \(arguments): \(result.stderr)")
        return Int(Date().timeIntervalSince(start) * 1000)
    }

    func leaseHeld(on path: String) throws -> Bool {
        let inode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? UInt64)
        return try String(contentsOfFile: "/proc/locks", encoding: .utf8).split(separator: "\n")
            .contains { $0.contains("LEASE") && $0.contains(":\(inode) ") }
    }

    func testAPeerWritesThroughLayoutChangesOfAFollowingRegionWithItsKeysAndTheFileHoldsItsLastPersist() throws {
        for (name, directory) in try backings() {
            let files = try ScratchDirectory(in: directory)
            let path = try files.file("log", size: 1 << 20)
            let length = 65536
            let (owner, descriptor) = try owner(path, length: length, output: scratch.path + "/owner-\(name.prefix(3)).out")
            XCTAssertFalse(try leaseHeld(on: path), "\(name): a file whose regions all follow holds no lease")
            let peer = try Background(mrlease, ["peer", descriptor, "write", "--length", "\(length)", "--pattern", "seed:11",
                                                "--loop", "--seconds", "120"], output: scratch.path + "/peer.out")
            try peer.waitFor("\(name): the first persist") { $0.contains("persisted ") }

            // Each change by another process, then more persists through the same connection.
            let changes: [(String, String, [String])] = [
                ("extend", "/bin/dd", ["if=/dev/null", "of=\(path)", "bs=1", "seek=\(2 << 20)", "status=none"]),
                ("punch in the region", "/usr/bin/fallocate", ["-p", "-o", "16384", "-l", "8192", path]),
                ("zero range in the region", "/usr/bin/fallocate", ["-z", "-o", "32768", "-l", "8192", path]),
                ("punch past the region", "/usr/bin/fallocate", ["-p", "-o", "\(1 << 20)", "-l", "65536", path]),
            ]
            var waits: [String] = []
            for (what, tool, arguments) in changes {
                let before = persisted(peer)
                waits.append("\(what) \(try breaker(tool, arguments)) ms")
                try peer.waitFor("\(name): persists after the \(what)") { _ in self.persisted(peer) >= before + 3 }
            }
            XCTAssertEqual(peer.interrupt(), 0, "\(name): the peer saw an error:\n\(peer.output)")
            XCTAssertFalse(peer.output.contains("reconnected"), "\(name): a following region's peer was disconnected:\n\(peer.output)")
            XCTAssertEqual(Set(peer.lines.filter { $0.hasPrefix("persisted ") }.compactMap { $0.split(separator: " ").last }), ["generation=1"],
                           "\(name): the keys' generation changed")
            let pattern = try XCTUnwrap(peer.lines.last { $0.hasPrefix("persisted ") }?.split(separator: " ")
                .first { $0.hasPrefix("pattern=") }.map { String($0.dropFirst("pattern=".count)) })

            // Through RDMA and through the file, the region holds the last persisted bytes.
            let verify = try Subprocess.run(mrlease, ["peer", descriptor, "verify", "--length", "\(length)", "--pattern", pattern])
            XCTAssertEqual(verify.status, 0, "\(name): \(verify.stdout) \(verify.stderr)")
            let readBack = scratch.path + "/read.bin"
            let read = try Subprocess.run(mrlease, ["peer", descriptor, "read", "--length", "\(length)", "--output", readBack])
            XCTAssertEqual(read.status, 0, "\(name): \(read.stderr)")
            XCTAssertEqual(owner.interrupt(), 0)
            let file = try XCTUnwrap(FileHandle(forReadingAtPath: path)).readData(ofLength: length)
            XCTAssertEqual(file, try Data(contentsOf: URL(fileURLWithPath: readBack)), "\(name): the file and the MR disagree")
            XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, 2 << 20)

            let events = owner.output
            XCTAssertFalse(events.contains("revoking region"), "\(name): a following region was revoked:\n\(events)")
            XCTAssertTrue(events.contains("range moved in the file"), "\(name): the owner was not told of the punch:\n\(events)")
            XCTAssertTrue(events.contains("connected to grant"), events)
            XCTAssertFalse(events.contains("disconnected (revoking)"), events)
            print("follow (\(name)): breakers \(waits.joined(separator: ", ")); owner: "
                  + "\(owner.lines.filter { $0.contains("range moved") }.count) layout events")
        }
    }

    func testAShrinkBelowAFollowingRegionEndsItsPeerWithRegionLostAndNothingLandsPastTheEnd() throws {
        let directory = try Facility.ext4.require()
        let files = try ScratchDirectory(in: directory)
        let path = try files.file("log", size: 1 << 20)
        let (owner, descriptor) = try owner(path, length: 65536, output: scratch.path + "/owner.out")
        let peer = try Background(mrlease, ["peer", descriptor, "write", "--length", "65536", "--pattern", "seed:5",
                                            "--loop", "--seconds", "60"], output: scratch.path + "/peer.out")
        try peer.waitFor("the first persist") { $0.contains("persisted ") }
        _ = try breaker("/bin/dd", ["if=/dev/null", "of=\(path)", "bs=1", "seek=32768", "status=none"])
        peer.process.waitUntilExit()
        XCTAssertEqual(peer.process.terminationStatus, 1, peer.output)
        XCTAssertTrue(peer.output.contains("region-lost") || peer.output.contains("remote access"),
                      "the peer's accesses past the end did not fail:\n\(peer.output)")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, 32768,
                       "no byte was written past the truncated end")
        try owner.waitFor("the owner hearing the region lost") { $0.contains("lost region") }
        XCTAssertEqual(owner.interrupt(), 0)
        XCTAssertFalse(owner.output.contains("revoking region"), owner.output)
    }
}
