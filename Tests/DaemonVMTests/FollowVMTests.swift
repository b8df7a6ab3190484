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
        _ = try Facility.rdmaCMAddress.require()
        guard TestKernel.rxeHasODP else { throw XCTSkip("needs rxe with ODP (Linux 6.14 or later; the 7.x guest): follow is ODP only") }
        // The daemon's default stays revoke: each region here asks for its policy.
        daemon = try PeerDaemon.start()
        scratch = try ScratchDirectory(name: "follow")
    }

    override func tearDown() { PeerDaemon.stop(daemon, after: self) }

    /// Every file system with FS-DAX or page cache where ODP registers on this kernel.
    func backings() throws -> [(String, String)] {
        let candidates: [(String, Facility)] = [("ext4 page cache", .ext4), ("xfs page cache", .xfs),
                                                ("ext4 FS-DAX", .ext4DAX), ("xfs FS-DAX", .xfsDAX)]
        let found = candidates.compactMap { name, facility in facility.value.map { (name, $0) } }
        if found.isEmpty { throw XCTSkip("needs \(Facility.ext4.rawValue)") }
        return found
    }

    /// `mrlease register PATH --strategy odp --layout-policy POLICY --grant`, held; it and the
    /// descriptor it printed.
    func owner(_ path: String, length: Int, output: String, policy: String = "follow") throws -> (Background, String) {
        let owner = try Background(mrlease, ["register", path, "--socket", daemon.socketPath, "--length", "\(length)",
                                             "--access", "read,write", "--strategy", "odp", "--layout-policy", policy, "--grant"],
                                   output: output)
        try owner.waitFor("the descriptor line") { $0.contains("descriptor ") }
        XCTAssertTrue(owner.output.contains("layout policy \(policy)"), owner.output)
        let line = try XCTUnwrap(owner.lines.first { $0.hasPrefix("descriptor ") })
        return (owner, String(try XCTUnwrap(line.split(separator: " ").last)))
    }

    /// Runs a breaker to its end; its wall time in ms.
    func breaker(_ executable: String, _ arguments: [String]) throws -> Int {
        let start = Date()
        let result = try Subprocess.run(executable, arguments)
        XCTAssertEqual(result.status, 0, "\(executable) \(arguments): \(result.stderr)")
        return Int(Date().timeIntervalSince(start) * 1000)
    }

    /// One layout change by another process: its name and the breaker's command line (FILE and
    /// SOURCE stand for the region's file and a 1 MiB source file on the same mount).
    struct Change {
        var name: String
        var tool: String
        var arguments: [String]
    }

    /// Every change of issue 18's table that keeps the region inside the file (a shrink below
    /// it has its own test). The region is [0, 64 KiB) of a 1 MiB file; the file is extended to
    /// 2 MiB first, so the collapse (64 KiB out of [1 MiB, 2 MiB)) keeps it covered.
    static let changes: [Change] = [
        Change(name: "extend", tool: "/bin/dd", arguments: ["if=/dev/null", "of=FILE", "bs=1", "seek=\(2 << 20)", "status=none"]),
        Change(name: "PUNCH_HOLE", tool: "/usr/bin/fallocate", arguments: ["-p", "-o", "16384", "-l", "8192", "FILE"]),
        Change(name: "ZERO_RANGE", tool: "/usr/bin/fallocate", arguments: ["-z", "-o", "32768", "-l", "8192", "FILE"]),
        Change(name: "COLLAPSE_RANGE", tool: "/usr/bin/fallocate", arguments: ["-c", "-o", "\(1 << 20)", "-l", "65536", "FILE"]),
        Change(name: "INSERT_RANGE", tool: "/usr/bin/fallocate", arguments: ["-i", "-o", "\(1 << 20)", "-l", "65536", "FILE"]),
        Change(name: "COLLAPSE_RANGE under the region", tool: "/usr/bin/fallocate", arguments: ["-c", "-o", "0", "-l", "65536", "FILE"]),
        Change(name: "reflink onto the range", tool: "/usr/sbin/xfs_io", arguments: ["-c", "reflink SOURCE 0 16384 16384", "FILE"]),
        Change(name: "copy_file_range onto the range", tool: "/usr/sbin/xfs_io", arguments: ["-c", "copy_range -s 0 -d 40960 -l 8192 SOURCE", "FILE"]),
    ]

    /// What one change did to the peer and the owner, for the matrix line. The owner's `layout`
    /// events are those told while the change's persists ran: a compare after a punch also sees
    /// the blocks the peer's writes allocated again, so a later step may be told those.
    struct Cell {
        var change: String
        var outcome: String
    }

    /// The owner registers [0, 64 KiB) with `policy`, a peer writes and persists through a grant
    /// in a loop, and each change runs from another process, the peer persisting at least three
    /// more times after each. Checks what each policy promises, and that the file holds the
    /// peer's last persisted bytes, read by the file and by RDMA. Returns one cell per change.
    func ride(_ policy: String, _ name: String, _ directory: String) throws -> [Cell] {
        let files = try ScratchDirectory(in: directory)
        let path = try files.file("log", size: 1 << 20)
        let source = try files.file("source", size: 1 << 20)
        XCTAssertEqual(try Subprocess.run("/usr/sbin/xfs_io", ["-c", "pwrite -S 0x5a 0 1m", "-c", "fsync", source]).status, 0)
        let length = 65536
        let (owner, descriptor) = try owner(path, length: length, output: scratch.path + "/owner-\(policy)-\(name.prefix(3)).out", policy: policy)
        XCTAssertEqual(try leaseHeld(on: path), policy == "revoke", "\(name): the lease is the revoke policy's only")
        let peer = try Background(mrlease, ["peer", descriptor, "write", "--length", "\(length)", "--pattern", "seed:11",
                                            "--loop", "--seconds", "300"], output: scratch.path + "/peer-\(policy).out")
        try peer.waitFor("\(name): the first persist") { $0.contains("persisted ") }

        var cells: [Cell] = []
        let followedBefore = try followed()
        for change in Self.changes {
            let before = persisted(peer), reconnectsBefore = reconnects(peer), layoutsBefore = layouts(owner)
            let arguments = change.arguments.map { $0.replacingOccurrences(of: "FILE", with: path).replacingOccurrences(of: "SOURCE", with: source) }
            let start = Date()
            let result = try Subprocess.run(change.tool, arguments)
            let waited = Int(Date().timeIntervalSince(start) * 1000)
            // xfs_io reports a failed command on stderr and still exits 0.
            if result.status != 0 || !result.stderr.isEmpty {
                // The file system does not have it (ext4: reflink; DAX: reflink, collapse on some):
                // a cell of the matrix, not a failure of the daemon.
                let why = (result.stderr + result.stdout).trimmingCharacters(in: .whitespacesAndNewlines)
                XCTAssertTrue(why.lowercased().contains("not supported"), "\(name) \(change.name): exit \(result.status), \(why)")
                cells.append(Cell(change: change.name, outcome: "n/a (\(why.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? why))"))
                continue
            }
            try peer.waitFor("\(name) \(policy): persists after \(change.name)", seconds: 60) { _ in self.persisted(peer) >= before + 3 }
            let reconnected = reconnects(peer) - reconnectsBefore, told = layouts(owner) - layoutsBefore
            if policy == "follow" {
                XCTAssertEqual(reconnected, 0, "\(name) \(change.name): a following region's peer reconnected:\n\(peer.output)")
            }
            cells.append(Cell(change: change.name, outcome: "breaker \(waited) ms, reconnects \(reconnected), layout events \(told)"))
        }
        XCTAssertEqual(peer.interrupt(), 0, "\(name) \(policy): the peer saw an error:\n\(peer.output)")
        let pattern = try XCTUnwrap(peer.lastPersistedPattern, "\(name) \(policy): no persisted line:\n\(peer.output)")
        let generations = Set(peer.lines.filter { $0.hasPrefix("persisted ") }.compactMap { $0.split(separator: " ").last })
        if policy == "follow" {
            XCTAssertEqual(generations, ["generation=1"], "\(name): a following region's keys changed")
        } else {
            XCTAssertGreaterThan(generations.count, 1, "\(name): a revoked region kept its keys")
        }

        // Through RDMA and through the file, the region holds the last persisted bytes.
        let verify = try Subprocess.run(mrlease, ["peer", descriptor, "verify", "--length", "\(length)", "--pattern", pattern])
        XCTAssertEqual(verify.status, 0, "\(name) \(policy): \(verify.stdout) \(verify.stderr)")
        let readBack = scratch.path + "/read.bin"
        let read = try Subprocess.run(mrlease, ["peer", descriptor, "read", "--length", "\(length)", "--output", readBack])
        XCTAssertEqual(read.status, 0, "\(name): \(read.stderr)")
        XCTAssertEqual(owner.interrupt(), 0)
        let file = try XCTUnwrap(FileHandle(forReadingAtPath: path)).readData(ofLength: length)
        XCTAssertEqual(file, try Data(contentsOf: URL(fileURLWithPath: readBack)), "\(name) \(policy): the file and the MR disagree")

        let events = owner.output
        // Every `layout` event the owner heard is counted in `stats` (and nothing else is: the
        // owner is the daemon's only client while it runs).
        XCTAssertEqual(try followed() - followedBefore, layouts(owner), "\(name) \(policy): layoutChangesFollowed against the owner's layout events")
        if policy == "follow" {
            XCTAssertFalse(events.contains("revoking region"), "\(name): a following region was revoked:\n\(events)")
            XCTAssertFalse(events.contains("disconnected (revoking)"), events)
            XCTAssertTrue(events.contains("range moved in the file"), "\(name): the owner was not told of the punch:\n\(events)")
        } else {
            XCTAssertTrue(events.contains("revoking region") && events.contains("restored region"), "\(name): \(events)")
        }
        return cells
    }

    /// The daemon's `layoutChangesFollowed` (`mrlease stats --json`).
    func followed() throws -> Int {
        let result = try Subprocess.run(mrlease, ["stats", "--json", "--socket", daemon.socketPath])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], result.stdout)
        return try XCTUnwrap((json["layoutChangesFollowed"] as? NSNumber)?.intValue, result.stdout)
    }

    func persisted(_ peer: Background) -> Int { peer.lines.filter { $0.hasPrefix("persisted ") }.count }
    func reconnects(_ peer: Background) -> Int { peer.lines.filter { $0.hasPrefix("reconnected ") }.count }
    func layouts(_ owner: Background) -> Int { owner.lines.filter { $0.contains("range moved in the file") }.count }

    func leaseHeld(on path: String) throws -> Bool {
        let inode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? UInt64)
        return try String(contentsOfFile: "/proc/locks", encoding: .utf8).split(separator: "\n")
            .contains { $0.contains("LEASE") && $0.contains(":\(inode) ") }
    }

    /// Issue 18's table: each change under `follow`, then under `revoke` for comparison, on every
    /// backing where ODP registers; one matrix line per cell (docs/kernel-matrix.md).
    func testAPeerRidesThroughEveryLayoutChangeWithItsKeysUnderFollowAndWithNewKeysUnderRevoke() throws {
        for (name, directory) in try backings() {
            for policy in ["follow", "revoke"] {
                for cell in try ride(policy, name, directory) {
                    print("follow-matrix kernel=\(TestKernel.series ?? "?") backing=\"\(name)\" policy=\(policy) change=\"\(cell.change)\" \(cell.outcome)")
                }
            }
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

    /// A truncate below the region and an extend back, by another process in quick succession:
    /// the daemon sees the end state (the range moved: `layout`, the peer carries on, perhaps
    /// after reconnecting once an access into the missing pages failed) or the shrink (the
    /// region is lost). Either way no persisted byte is lost and the file ends as the peer left it.
    func testATruncateBelowAndExtendBackEndsInLayoutOrLostAndNeverInStaleData() throws {
        let directory = try Facility.ext4.require()
        let files = try ScratchDirectory(in: directory)
        let path = try files.file("log", size: 1 << 20)
        let (owner, descriptor) = try owner(path, length: 65536, output: scratch.path + "/owner.out")
        let peer = try Background(mrlease, ["peer", descriptor, "write", "--length", "65536", "--pattern", "seed:9",
                                            "--loop", "--seconds", "60"], output: scratch.path + "/peer.out")
        try peer.waitFor("the first persist") { $0.contains("persisted ") }
        let before = persisted(peer)
        _ = try breaker("/usr/bin/perl", ["-e", "open(my $f, '+<', $ARGV[0]) or die $!; truncate($f, 16384) or die $!; truncate($f, 1 << 20) or die $!", path])
        try owner.waitFor("the owner hearing of it") { $0.contains("range moved in the file") || $0.contains("lost region") }
        if owner.output.contains("lost region") {
            peer.process.waitUntilExit()
            XCTAssertTrue(peer.output.contains("region-lost"), peer.output)
            print("follow-matrix kernel=\(TestKernel.series ?? "?") backing=\"ext4 page cache\" policy=follow change=\"truncate below, extend back\" lost (the daemon saw the shrink)")
        } else {
            try peer.waitFor("persists after the change") { _ in self.persisted(peer) >= before + 3 }
            XCTAssertEqual(peer.interrupt(), 0, peer.output)
            let pattern = try XCTUnwrap(peer.lastPersistedPattern, peer.output)
            let verify = try Subprocess.run(mrlease, ["peer", descriptor, "verify", "--length", "65536", "--pattern", pattern])
            XCTAssertEqual(verify.status, 0, "\(verify.stdout) \(verify.stderr)")
            print("follow-matrix kernel=\(TestKernel.series ?? "?") backing=\"ext4 page cache\" policy=follow change=\"truncate below, extend back\" layout (reconnects \(reconnects(peer)))")
        }
        XCTAssertEqual(owner.interrupt(), 0)
        XCTAssertFalse(owner.output.contains("revoking region"), owner.output)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, 1 << 20)
    }
}
