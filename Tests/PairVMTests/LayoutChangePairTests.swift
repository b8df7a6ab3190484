import Foundation
import LinuxFile
import MRLeaseGrant
import MRLeasePeer
import SystemPackage
import TestSupport
import XCTest

/// A layout change on the exporting guest (role a) while a peer on the other guest (role b)
/// writes through a grant, over IPv4 and over IPv6, under each layout policy. The peer (the MRLeasePeer
/// library, in the test process) writes the region's 4 KiB slots one after the other, 30 ms
/// apart; meanwhile a punches a hole over the region's last quarter and extends the file with
/// `dd` (two lease breaks). The peer stops before the last quarter until a says it is done,
/// so every slot it writes there lands in the punched range after the punch.
///
/// `revoke`: the peer's connection is broken by the daemon and the library reconnects with the
/// same descriptor: a later generation, a new rkey. `follow` (ODP, so only where a's rxe has it):
/// the connection, generation and rkey stay, and the owner hears `layout` for the punch unless
/// the range's blocks came back where they were (`checkPunchTold`). Either way every slot whose WRITE completed holds
/// the peer's bytes in a's file afterwards, the slots of the punched range it never wrote are
/// zero, and nothing outside the region changed.
final class LayoutChangePairTests: XCTestCase {
    static let fill: UInt8 = 0x5A
    static let fileLength = 1 << 20, regionOffset = 65536
    static let slot = 4096, slots = 128, heldAt = 96
    static var regionLength: Int { slot * slots }

    func testRevokeRegionPeerOnTheOtherGuestReconnectsThroughAPunchAndAnExtend() throws {
        try run(policy: "revoke")
    }

    func testFollowRegionPeerOnTheOtherGuestKeepsItsKeysThroughAPunchAndAnExtend() throws {
        try run(policy: "follow")
    }

    static func pattern(_ policy: String) -> PeerPattern { .seeded(policy == "revoke" ? 0xC1 : 0xC2) }

    /// Over IPv4, then over IPv6 (a daemon listening on each in turn).
    func run(policy: String) throws {
        let pair = try Pair.require()
        for family in pair.families {
            try pair.split("layout-\(policy)-\(family.tag)", a: ["descriptor", "breaking", "broken"], b: ["started", "done"],
                           exporter: { try export($0, $1, policy: policy, listening: family.mine) }, peer: { try write($0, $1, policy: policy) })
        }
    }

    /// Role a: the daemon, the region and its grant, the breakers once the peer writes, then the
    /// file checked against the peer's report.
    func export(_ pair: Pair, _ name: String, policy: String, listening address: String) throws {
        if policy == "follow" && !TestKernel.rxeHasODP {
            let reason = "layout policy follow needs an ODP region: rxe on the exporter's kernel (\(TestKernel.release)) has no ODP (6.14 or later)"
            try pair.publish("\(name).descriptor", "skip: \(reason)")
            throw XCTSkip(reason)
        }
        let exporter = try PairExporter(name, listening: address, fileSize: Self.fileLength, fill: Self.fill)
        defer { exporter.stop(after: self) }
        try exporter.register(offset: Self.regionOffset, length: Self.regionLength,
                              ["--layout-policy", policy] + (policy == "follow" ? ["--strategy", "odp"] : []))
        try pair.publish("\(name).descriptor", exporter.grants[0].descriptor)
        _ = try pair.waitFor("\(name).started", what: "a peer connected through the grant and writing")

        try pair.publish("\(name).breaking", "")
        let punched = Self.regionOffset + Self.heldAt * Self.slot, punchedLength = (Self.slots - Self.heldAt) * Self.slot
        // A follow region is ODP, so on ext4 (7.x): FIEMAP works there, unlike tmpfs (6.12's revoke file).
        let checks = try exporter.counter("layoutChecks")
        let extentsBefore = policy == "follow" ? try Self.extents(exporter.file) : nil
        let punch = try Subprocess.run("/usr/bin/fallocate", ["-p", "-o", "\(punched)", "-l", "\(punchedLength)", exporter.file])
        if let extentsBefore { try checkPunchTold(exporter, name, punched: punched, length: punchedLength, checks: checks, before: extentsBefore) }
        let extend = try Subprocess.run("/bin/dd", ["if=/dev/null", "of=\(exporter.file)", "bs=1", "seek=\(2 * Self.fileLength)", "status=none"])
        try pair.publish("\(name).broken", "")
        XCTAssertEqual(punch.status, 0, "fallocate -p: \(punch.stderr)")
        XCTAssertEqual(extend.status, 0, "dd: \(extend.stderr)")

        let report = try pair.waitFor("\(name).done", what: "the peer's writes of every slot")
        let fields = Dictionary(report.split(separator: " ").map { field -> (String, String) in
            let parts = field.split(separator: "=", maxSplits: 1).map(String.init)
            return (parts[0], parts.count > 1 ? parts[1] : "")
        }, uniquingKeysWith: { $1 })
        let written = Set((fields["written"] ?? "").split(separator: ",").compactMap { Int($0) })
        let failed = Set((fields["failed"] ?? "").split(separator: ",").compactMap { Int($0) })
        XCTAssertEqual(exporter.release(), 0, "mrlease register after SIGINT:\n\(exporter.events)")
        let events = exporter.events
        print("pair \(name): punch \(Int(punch.seconds * 1000)) ms, extend \(Int(extend.seconds * 1000)) ms; peer: \(report)")
        if policy == "revoke" {
            for event in ["revoking region", "restored region", "disconnected (revoking)"] {
                XCTAssertTrue(events.contains(event), "the owner did not hear \(event):\n\(events)")
            }
        } else {
            // The peer's own close at the end is `disconnected (peer)`: any other reason is not a follow region's.
            for event in ["revoking region", "disconnected (revoking)", "disconnected (region-gone)", "lost region"] {
                XCTAssertFalse(events.contains(event), "a follow region's owner heard \(event):\n\(events)")
            }
            // Whether `layout` was heard for the punch is checkPunchTold's; the extend moved no block of the range.
        }

        let bytes = try exporter.contents()
        var expected = [UInt8](repeating: Self.fill, count: Self.fileLength) + [UInt8](repeating: 0, count: Self.fileLength)
        expected.replaceSubrange(punched..<punched + punchedLength, with: [UInt8](repeating: 0, count: punchedLength))
        for slot in 0..<Self.slots {
            let start = Self.regionOffset + slot * Self.slot
            if written.contains(slot) {
                expected.replaceSubrange(start..<start + Self.slot, with: Self.pattern(policy).bytes(at: UInt64(slot * Self.slot), count: Self.slot))
            } else if failed.contains(slot) {
                // A WRITE that failed may or may not have happened: either is right.
                expected.replaceSubrange(start..<start + Self.slot, with: bytes[start..<min(start + Self.slot, bytes.count)])
            }
        }
        XCTAssertNil(difference(bytes, expected), "\(exporter.file) after the punch, the extend and the peer's \(written.count) WRITEs "
                     + "(\(failed.count) failed); the peer reported: \(report)")
    }

    /// A follow region's owner hears `layout` when the daemon's comparison after the punch finds
    /// the range's blocks moved (docs/protocol.md §5). On 7.3.4 ext4, while a peer writes through
    /// the region's ODP MR, a punch zeroes the range but keeps its pages in the page cache,
    /// dirty, and writeback gives the range its old blocks back (docs/kernel-matrix.md): a
    /// comparison that runs after that writeback rightly sees nothing moved. So: waits for the
    /// daemon's first comparison after the punch (its `layoutChecks` counter), then either the
    /// owner was told, or the range holds exactly the blocks it held before the punch (synced
    /// FIEMAP, read here): a hole or other blocks with nothing told is a missed change. The
    /// peer waits until this is done: once it rewrites the range, ext4 may hand it the very
    /// blocks it had, and a comparison that late rightly sees nothing moved.
    func checkPunchTold(_ exporter: PairExporter, _ name: String, punched: Int, length: Int, checks: Int, before: ExtentMap) throws {
        let start = Date()
        while try exporter.counter("layoutChecks") == checks {
            guard Date().timeIntervalSince(start) < 10 else {
                XCTFail("the daemon made no layout comparison within 10 s of the punch (IN_MODIFY unseen?)")
                return
            }
            usleep(20_000)
        }
        // The comparison counted may still be telling: give the event its moment.
        usleep(200_000)
        let told = try exporter.counter("layoutChangesFollowed")
        let after = try Self.extents(exporter.file)
        let moved = after.differs(from: before, offset: UInt64(punched), length: UInt64(length))
        let now = after.extents(overlapping: UInt64(punched), length: UInt64(length)).isEmpty ? "a hole" : moved ? "on other blocks" : "back on its old blocks"
        print("pair \(name): the punch told \(told) time(s) after \(try exporter.counter("layoutChecks") - checks) comparison(s); "
              + "the punched range is \(now) (extents before \(Self.describe(before)), after \(Self.describe(after)))")
        if told == 0 {
            XCTAssertFalse(moved, "the punched range is \(now) (extents before \(Self.describe(before)), after \(Self.describe(after))) and the owner "
                           + "heard no layout; the daemon's comparisons:\n"
                           + exporter.daemon.log.split(separator: "\n").filter { $0.contains("layout") || $0.contains("inotify") }.joined(separator: "\n"))
        }
    }

    /// `[logical, +length) at physical` for each extent, flags named.
    static func describe(_ map: ExtentMap) -> String {
        map.extents.map { "[\($0.logical), +\($0.length)) at \($0.physical)\($0.flags.isEmpty ? "" : " \($0.flags)")" }.joined(separator: ", ")
    }

    /// The file's extents, synced (the daemon reads them the same way).
    static func extents(_ path: String) throws -> ExtentMap {
        let fd = try FileDescriptor.open(path, .readOnly)
        defer { try? fd.close() }
        return try fd.extents(sync: true)
    }

    /// Role b: the descriptor, a library peer, every slot written in order (held before the last
    /// quarter until a's breakers are done), what it went through published for a.
    func write(_ pair: Pair, _ name: String, policy: String) throws {
        let text = try pair.waitFor("\(name).descriptor", what: "mrleased on the other guest and a \(policy) grant")
        if text.hasPrefix("skip: ") { throw XCTSkip(String(text.dropFirst(6))) }
        let peer = try Peer(descriptor: try GrantDescriptor(text: text))
        defer { peer.close() }
        let first = peer.terms
        try pair.publish("\(name).started", "generation \(first.generation)")
        var written: [Int] = [], failed: [Int] = [], errors: [String] = []
        var breaking = false, broken = false, during = 0
        for slot in 0..<Self.slots {
            if slot == Self.heldAt && !broken {
                _ = try pair.waitFor("\(name).broken", what: "the punch and the extend")
                broken = true
            }
            breaking = breaking || pair.published("\(name).breaking")
            broken = broken || pair.published("\(name).broken")
            let offset = slot * Self.slot
            do {
                try peer.write(Self.pattern(policy).bytes(at: UInt64(offset), count: Self.slot), at: UInt64(offset))
                written.append(slot)
                if breaking && !broken { during += 1 }
            } catch {
                failed.append(slot)
                errors.append("slot \(slot): \(error)")
            }
            usleep(30_000)
        }
        let last = peer.terms, statistics = peer.statistics
        let report = "written=\(written.map(String.init).joined(separator: ",")) failed=\(failed.map(String.init).joined(separator: ","))"
            + " during=\(during) generations=\(statistics.generations.map(String.init).joined(separator: ","))"
            + " reconnects=\(statistics.reconnects) rkey=\(first.rkey == last.rkey ? "same" : "new")"
            + " cause=\((statistics.lastBreakCause ?? "none").replacingOccurrences(of: " ", with: "_"))"
        try pair.publish("\(name).done", report)
        print("pair \(name): \(report)")

        XCTAssertEqual(errors, [], "WRITEs through a \(policy) grant across a layout change: the library retries them")
        XCTAssertGreaterThan(during, 0, "no WRITE ran while the exporter changed the file (the test proved nothing)")
        if policy == "revoke" {
            XCTAssertGreaterThanOrEqual(statistics.reconnects, 1, "the revocation broke the connection and the peer reconnected")
            XCTAssertEqual(statistics.generations, statistics.generations.sorted(), "generations only grow")
            XCTAssertEqual(Set(statistics.generations).count, statistics.generations.count, "each reconnect has a new generation")
            XCTAssertGreaterThan(last.generation, first.generation, "a later generation after the revocation")
            XCTAssertNotEqual(last.rkey, first.rkey, "new keys after the revocation")
        } else {
            XCTAssertEqual(statistics.reconnects, 0, "a follow region's peer keeps its connection (break: \(statistics.lastBreakCause ?? "none"))")
            XCTAssertEqual(statistics.generations, [first.generation], "and its generation")
            XCTAssertEqual(last.rkey, first.rkey, "and its rkey")
        }
    }
}
