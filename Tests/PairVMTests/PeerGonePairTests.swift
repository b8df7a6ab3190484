import Foundation
import TestSupport
import XCTest

/// A connection across the wire that ends without a goodbye, over IPv4 and over IPv6: role a exports (the
/// daemon, `mrlease register --layout-policy revoke --grant`, so the file is leased), role b
/// runs `mrlease peer … write --loop`.
///
/// - The peer killed (SIGKILL on b): a's owner hears `peer-disconnected` (reason `peer`), and
///   the daemon's QPs, cm_ids and CQs, counted over all its threads, and its leases come back
///   to what they were before the peer connected; its PDs and MRs at most one more of each
///   (the grant's exposure, which docs/remote-access.md keeps for the grant's next peer), and
///   none once the owner has gone.
/// - The exporter's daemon restarted (SIGTERM, a new one on the same address): the peer's
///   connection ends and `mrlease peer` gives up with exit status 1 (the descriptor's port has
///   no listener any more); a new grant of the new daemon works for a new peer.
final class PeerGonePairTests: XCTestCase {
    static let fill: UInt8 = 0x5A
    static let fileLength = 1 << 20, regionOffset = 65536, regionLength = 65536
    static var mrlease: String { Subprocess.builtProduct("mrlease") }

    /// The exporter's region, registered revoke (leased) and granted; the descriptor published.
    /// Also the daemon's RDMA objects before the registration (its listener, its own PDs).
    func exporting(_ name: String, listening address: String) throws -> (PairExporter, idle: [String: Int]) {
        let exporter = try PairExporter(name, listening: address, fileSize: Self.fileLength, fill: Self.fill)
        let idle = try exporter.rdmaCounts()
        try exporter.register(offset: Self.regionOffset, length: Self.regionLength, ["--layout-policy", "revoke"])
        return (exporter, idle)
    }

    /// `mrlease peer DESCRIPTOR write --loop` in the background, once it has persisted.
    func loopingPeer(_ descriptor: String, _ name: String, seconds: Int = 120) throws -> Spawned {
        let output = NSTemporaryDirectory() + "pair-\(name)-peer-\(getpid()).out"
        let peer = try Spawned(Self.mrlease, ["peer", descriptor, "write", "--length", "\(Self.regionLength)",
                                              "--pattern", "seed:9", "--loop", "--seconds", "\(seconds)"], output: output)
        try peer.await("\(name): the looping peer's first persist") { $0.contains("persisted ") }
        return peer
    }

    func testAPeerKilledOnTheOtherGuestLeavesNothingInTheDaemon() throws {
        let pair = try Pair.require()
        for family in pair.families {
            try pair.split("killed-\(family.tag)", a: ["descriptor", "counted"], b: ["connected", "killed"],
                           exporter: { try watchKilled($0, $1, listening: family.mine) }, peer: runAndKill)
        }
    }

    /// Role b: a looping peer, killed with SIGKILL once a has counted the daemon's objects.
    func runAndKill(_ pair: Pair, _ name: String) throws {
        let descriptor = try pair.waitFor("\(name).descriptor", what: "mrleased listening and a grant")
        let peer = try loopingPeer(descriptor, name)
        try pair.publish("\(name).connected", "\(peer.process.processIdentifier)")
        _ = try pair.waitFor("\(name).counted", what: "the daemon's objects counted with the peer connected")
        XCTAssertEqual(kill(peer.process.processIdentifier, SIGKILL), 0, "kill -9 of mrlease peer")
        peer.process.waitUntilExit()
        try pair.publish("\(name).killed", "")
    }

    /// Role a: the daemon's objects and leases before the peer, with it, after its death and
    /// after the owner's end.
    func watchKilled(_ pair: Pair, _ name: String, listening address: String) throws {
        let (exporter, idle) = try exporting(name, listening: address)
        defer { exporter.stop(after: self) }
        let baseline = try exporter.rdmaCounts(), leases = try exporter.leases()
        XCTAssertGreaterThan(leases, 0, "a revoke region's file is leased")
        try pair.publish("\(name).descriptor", exporter.grants[0].descriptor)
        _ = try pair.waitFor("\(name).connected", what: "mrlease peer connected and writing")
        let connected = try exporter.rdmaCounts()
        try pair.publish("\(name).counted", "")
        XCTAssertEqual(connected["qp"], (baseline["qp"] ?? 0) + 1, "the peer's QP (baseline \(baseline), connected \(connected))")
        _ = try pair.waitFor("\(name).killed", what: "kill -9 of mrlease peer")
        let killed = Date()
        try exporter.owner?.await("the owner hearing peer-disconnected (peer)") { $0.contains("disconnected (peer)") }
        let heard = Date().timeIntervalSince(killed)
        let after = try settled(exporter) { counts in ["qp", "cm_id", "cq"].allSatisfy { counts[$0] == baseline[$0] } }
        print("pair \(name): owner heard peer-disconnected \(Int(heard * 1000)) ms after b's kill was seen; "
              + "objects before the peer \(baseline), connected \(connected), after \(after)")
        for kind in ["qp", "cm_id", "cq"] {
            XCTAssertEqual(after[kind], baseline[kind], "the daemon's \(kind)s after the peer died (before it connected: \(baseline), after: \(after))")
        }
        for kind in ["pd", "mr"] {
            XCTAssertLessThanOrEqual(after[kind] ?? 0, (baseline[kind] ?? 0) + 1, "the daemon's \(kind)s: at most the grant's exposure more (\(after))")
        }
        XCTAssertEqual(try exporter.leases(), leases, "the daemon's leases after the peer died")
        XCTAssertEqual(exporter.release(), 0, "mrlease register after SIGINT")
        XCTAssertEqual(try settled(exporter) { $0 == idle }, idle, "the daemon's RDMA objects once the owner has gone, as before it registered")
        XCTAssertEqual(try exporter.leases(), 0, "no lease once the owner has gone")
    }

    /// The daemon's object counts once `done` holds of them, or after 10 s.
    func settled(_ exporter: PairExporter, _ done: ([String: Int]) -> Bool) throws -> [String: Int] {
        var counts = try exporter.rdmaCounts()
        for _ in 0..<100 where !done(counts) {
            usleep(100_000)
            counts = try exporter.rdmaCounts()
        }
        return counts
    }

    func testTheExportersDaemonRestartedUnderAPeerThenANewGrantWorks() throws {
        let pair = try Pair.require()
        for family in pair.families {
            try pair.split("restart-\(family.tag)", a: ["descriptor", "restarted"], b: ["connected", "ended", "done"],
                           exporter: { try restart($0, $1, listening: family.mine) }, peer: outlive)
        }
    }

    /// Role b: a looping peer through the first daemon, which must end with an error; then a
    /// new peer's write + verify through the restarted daemon's grant.
    func outlive(_ pair: Pair, _ name: String) throws {
        let descriptor = try pair.waitFor("\(name).descriptor", what: "mrleased listening and a grant")
        let peer = try loopingPeer(descriptor, name)
        try pair.publish("\(name).connected", "")
        let restarted = try pair.waitFor("\(name).restarted", what: "the exporter's daemon restarted and a new grant")
        let ended = try poll("mrlease peer to end after the daemon stopped", seconds: 120, pausing: 100_000) {
            peer.process.isRunning ? nil : peer.process.terminationStatus
        }
        try pair.publish("\(name).ended", "\(ended)")
        XCTAssertEqual(ended, 1, "mrlease peer whose daemon went away: an error exit:\n\(peer.output)")
        func run(_ action: String) throws -> Subprocess {
            try Subprocess.run("/usr/bin/timeout", ["120", Self.mrlease, "peer", restarted, action, "--length", "8192", "--pattern", "seed:11"])
        }
        let write = try run("write"), verify = try run("verify")
        try pair.publish("\(name).done", "write=\(write.status) verify=\(verify.status)")
        XCTAssertEqual(write.status, 0, "a new peer through the new daemon's grant: \(write.stdout)\(write.stderr)")
        XCTAssertEqual(verify.status, 0, "\(verify.stdout)\(verify.stderr)")
        print("pair \(name): the old peer's last lines: \(peer.output.split(separator: "\n").suffix(3))")
    }

    /// Role a: SIGTERM to the daemon under the peer (the owner, its connection gone, exits 1),
    /// a new daemon, the region registered and granted again.
    func restart(_ pair: Pair, _ name: String, listening address: String) throws {
        let exporter = try exporting(name, listening: address).0
        defer { exporter.stop(after: self) }
        try pair.publish("\(name).descriptor", exporter.grants[0].descriptor)
        _ = try pair.waitFor("\(name).connected", what: "mrlease peer connected and writing")
        let old = try XCTUnwrap(exporter.owner)
        XCTAssertEqual(try exporter.restartDaemon(), 0, "mrleased after SIGTERM with a peer connected")
        old.process.waitUntilExit()
        XCTAssertEqual(old.process.terminationStatus, 1, "mrlease register whose daemon stopped exits 1:\n\(old.output)")
        try exporter.register(offset: Self.regionOffset, length: Self.regionLength, ["--layout-policy", "revoke"])
        try pair.publish("\(name).restarted", exporter.grants[0].descriptor)
        let ended = try pair.waitFor("\(name).ended", what: "the old peer's end")
        let report = try pair.waitFor("\(name).done", what: "a new peer's write + verify through the new grant")
        print("pair \(name): old peer exit \(ended); new peer \(report)")
        XCTAssertEqual(report, "write=0 verify=0")
    }
}
