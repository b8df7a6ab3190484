import Foundation
import LinuxFile
import MRLeaseGrant
import SystemPackage
import TestSupport
import XCTest

/// What an operator and a peer see, as separate processes: `mrlease register --grant` holds a
/// region and prints its descriptor, `mrlease peer DESCRIPTOR write --loop` writes and persists
/// through it, and a third process changes the file. The peer must carry on by itself across
/// each revocation, and the file must hold exactly what the peer last reported persisted. The
/// owner asks `--layout-policy revoke`: under the default, `follow`, an ODP region's peer rides
/// through without a revocation (FollowVMTests).
final class PeerThroughRevocationVMTests: XCTestCase {
    /// A process whose stdout and stderr go to a file the test reads while it runs.
    final class Background {
        let process = Process()
        let outputPath: String

        init(_ executable: String, _ arguments: [String], output: String) throws {
            outputPath = output
            FileManager.default.createFile(atPath: output, contents: nil)
            let handle = try XCTUnwrap(FileHandle(forWritingAtPath: output))
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }

        var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
        var lines: [Substring] { output.split(separator: "\n") }

        /// A `mrlease peer … --loop`'s last `persisted iteration=K … pattern=P` line's pattern.
        var lastPersistedPattern: String? {
            lines.last { $0.hasPrefix("persisted ") }?.split(separator: " ").first { $0.hasPrefix("pattern=") }
                .map { String($0.dropFirst("pattern=".count)) }
        }

        func waitFor(_ what: String, seconds: Double = 30, until done: (String) -> Bool) throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if done(output) { return }
                if !process.isRunning { break }
                usleep(50_000)
            }
            if done(output) { return }
            throw TestFailure("\(what) did not happen within \(seconds) s (running: \(process.isRunning)); output:\n\(output)")
        }

        func interrupt() -> Int32 {
            if process.isRunning { process.interrupt() }
            process.waitUntilExit()
            return process.terminationStatus
        }

        deinit { if process.isRunning { process.terminate() } }
    }

    var daemon: RunningDaemon!
    var scratch: ScratchDirectory!
    let mrlease = Subprocess.builtProduct("mrlease")

    override func setUpWithError() throws {
        daemon = try PeerDaemon.start()
        scratch = try ScratchDirectory(name: "peer-revocation")
    }

    override func tearDown() { PeerDaemon.stop(daemon, after: self) }

    /// The owner: `mrlease register FILE --grant`, held; returns it and the descriptor it printed.
    func owner(_ path: String, length: Int) throws -> (Background, String) {
        let owner = try Background(mrlease, ["register", path, "--socket", daemon.socketPath, "--length", "\(length)",
                                             "--access", "read,write", "--grant", "--layout-policy", "revoke"], output: scratch.path + "/owner.out")
        try owner.waitFor("the descriptor line") { $0.contains("descriptor ") }
        let line = try XCTUnwrap(owner.lines.first { $0.hasPrefix("descriptor ") })
        let descriptor = String(try XCTUnwrap(line.split(separator: " ").last))
        XCTAssertTrue(descriptor.hasPrefix("mrlg"))
        return (owner, descriptor)
    }

    /// Whether the peer printed `reconnected … generation=N …`.
    static func reconnected(_ output: String, generation: UInt64) -> Bool {
        output.split(separator: "\n").contains { $0.hasPrefix("reconnected ") && $0.split(separator: " ").contains("generation=\(generation)") }
    }


    func breaker(_ executable: String, _ arguments: [String]) throws -> Double {
        let start = Date()
        let result = try Subprocess.run(executable, arguments)
        XCTAssertEqual(result.status, 0, "\(executable) \(arguments): \(result.stderr)")
        return Date().timeIntervalSince(start)
    }

    /// The file systems where a writable region has a strategy on this kernel.
    func backings() throws -> [(String, String)] {
        // FS-DAX needs ODP (a long-term pin of FS-DAX pages is refused): 7.x rxe only. The page
        // cache needs ODP or a writable pin: not on 6.12, which has neither.
        let candidates: [(String, Facility)] = [("ext4 page cache", .ext4), ("xfs page cache", .xfs), ("tmpfs", .tmpfs),
                                                ("ext4 FS-DAX", .ext4DAX), ("xfs FS-DAX", .xfsDAX)]
        let found = candidates.compactMap { (name, facility) -> (String, String)? in
            guard let root = facility.value, TestKernel.hasWritableStrategy(on: facility) else { return nil }
            return (name, root)
        }
        if found.isEmpty { throw XCTSkip("needs \(Facility.ext4.rawValue)") }
        return found
    }

    func testPeerWritesThroughATruncateAndAHolePunchAndTheFileHoldsItsLastPersist() throws {
        for (name, directory) in try backings() {
            let files = try ScratchDirectory(in: directory)
            let path = try files.file("log", size: 1 << 20)
            let length = 65536
            let (owner, descriptor) = try owner(path, length: length)
            let peer = try Background(mrlease, ["peer", descriptor, "write", "--length", "\(length)", "--pattern", "seed:7",
                                                "--loop", "--seconds", "60"], output: scratch.path + "/peer.out")
            try peer.waitFor("\(name): the first persist") { $0.contains("persisted ") }

            // A truncate that keeps the region (the file grows: dd ftruncates to its seek),
            // then a hole punched beyond the region: each opens the file for writing, which
            // breaks the lease. truncate(1) opens O_NONBLOCK and gets EAGAIN instead.
            let grew = try breaker("/bin/dd", ["if=/dev/null", "of=\(path)", "bs=1", "seek=\(2 << 20)", "status=none"])
            try peer.waitFor("\(name): a reconnect after the truncate") { Self.reconnected($0, generation: 2) }
            let before = peer.lines.filter { $0.hasPrefix("persisted ") }.count
            try peer.waitFor("\(name): a persist with the new keys") { text in
                text.split(separator: "\n").filter { $0.hasPrefix("persisted ") }.count > before
            }
            let punched = try breaker("/usr/bin/fallocate", ["-p", "-o", "\(1 << 20)", "-l", "65536", path])
            try peer.waitFor("\(name): a reconnect after the punch") { Self.reconnected($0, generation: 3) }
            let afterPunch = peer.lines.filter { $0.hasPrefix("persisted ") }.count
            try peer.waitFor("\(name): a persist after the punch") { text in
                text.split(separator: "\n").filter { $0.hasPrefix("persisted ") }.count > afterPunch
            }
            XCTAssertEqual(peer.interrupt(), 0, "\(name): the peer saw an error, not a delay:\n\(peer.output)")
            let pattern = try XCTUnwrap(peer.lastPersistedPattern, "\(name): no persisted line:\n\(peer.output)")
            // The region, read by a peer, holds the last persisted iteration's bytes.
            let verify = try Subprocess.run(mrlease, ["peer", descriptor, "verify", "--length", "\(length)", "--pattern", pattern])
            XCTAssertEqual(verify.status, 0, "\(name): \(verify.stdout) \(verify.stderr)")
            XCTAssertEqual(owner.interrupt(), 0)
            let events = owner.output
            for event in ["revoking region", "revoked region", "restored region", "connected to grant", "disconnected (revoking)"] {
                XCTAssertTrue(events.contains(event), "\(name): the owner did not see \(event):\n\(events)")
            }
            // Nothing was written outside the file: it is as long as the truncate made it.
            XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, 2 << 20)
            print("peer through revocation (\(name)): dd took \(Int(grew * 1000)) ms, fallocate -p \(Int(punched * 1000)) ms; "
                  + "peer: \(peer.lines.filter { $0.hasPrefix("reconnected") })")
        }
    }

    func testARegionCutByATruncateEndsThePeerWithRegionLost() throws {
        let directory = try Facility.writable(.ext4).require()
        let files = try ScratchDirectory(in: directory)
        let path = try files.file("log", size: 1 << 20)
        let (owner, descriptor) = try owner(path, length: 65536)
        let peer = try Background(mrlease, ["peer", descriptor, "write", "--length", "65536", "--pattern", "seed:3",
                                            "--loop", "--seconds", "60"], output: scratch.path + "/peer.out")
        try peer.waitFor("the first persist") { $0.contains("persisted ") }
        _ = try breaker("/bin/dd", ["if=/dev/null", "of=\(path)", "bs=1", "seek=32768", "status=none"])
        peer.process.waitUntilExit()
        XCTAssertEqual(peer.process.terminationStatus, 1, peer.output)
        XCTAssertTrue(peer.output.contains("region-lost"), "the peer was not told its region is gone:\n\(peer.output)")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, 32768,
                       "no byte was written past the truncated end")
        XCTAssertEqual(owner.interrupt(), 0)
        XCTAssertTrue(owner.output.contains("lost region"), owner.output)
    }

    func testAPeerKilledLeavesNothingInTheDaemon() throws {
        let directory = try Facility.writable(.ext4).require()
        let files = try ScratchDirectory(in: directory)
        let path = try files.file("log", size: 1 << 20)
        func counts() throws -> [String: Int] {
            var counts: [String: Int] = [:]
            for kind in ["qp", "cm_id", "pd", "mr", "cq"] { counts[kind] = try RDMAResources.entries(kind, pid: daemon.pid).count }
            return counts
        }
        let (owner, descriptor) = try owner(path, length: 65536)
        let withGrant = try counts()
        let peer = try Background(mrlease, ["peer", descriptor, "write", "--length", "65536", "--loop", "--seconds", "60"],
                                  output: scratch.path + "/peer.out")
        try peer.waitFor("the first persist") { $0.contains("persisted ") }
        XCTAssertEqual(try counts()["qp"], (withGrant["qp"] ?? 0) + 1)
        kill(peer.process.processIdentifier, SIGKILL)
        peer.process.waitUntilExit()
        try owner.waitFor("the owner hearing the peer go") { $0.contains("disconnected (peer)") }
        var after = try counts()
        for _ in 0..<50 where after["qp"] != withGrant["qp"] || after["cm_id"] != withGrant["cm_id"] {
            usleep(100_000)
            after = try counts()
        }
        XCTAssertEqual(after["qp"], withGrant["qp"], "the dead peer's QP is gone")
        XCTAssertEqual(after["cm_id"], withGrant["cm_id"], "the dead peer's cm_id is gone")
        XCTAssertEqual(owner.interrupt(), 0)
        let baseline = try counts()
        XCTAssertLessThanOrEqual(baseline["qp"] ?? 0, 0)
        XCTAssertEqual(baseline["mr"], 0, "no MR once the owner is gone: \(baseline)")
        let locks = try String(contentsOfFile: "/proc/locks", encoding: .utf8)
        XCTAssertFalse(locks.split(separator: "\n").contains { $0.contains("LEASE") && $0.contains(" \(daemon.pid) ") })
    }
}
