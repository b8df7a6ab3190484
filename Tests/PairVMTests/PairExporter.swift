import Foundation
import TestSupport
import XCTest

/// A process of the guest whose stdout and stderr go to a file the test reads while it runs
/// (an `mrlease register` holding regions, an `mrlease peer … --loop`).
final class Spawned {
    let process = Process(), outputPath: String

    /// Starts `executable`; both its streams go to `output` (created empty).
    init(_ executable: String, _ arguments: [String], output: String) throws {
        guard FileManager.default.createFile(atPath: output, contents: nil), let sink = FileHandle(forWritingAtPath: output) else {
            throw TestFailure("cannot create \(output) for \(executable)'s output")
        }
        (outputPath, process.executableURL, process.arguments) = (output, URL(fileURLWithPath: executable), arguments)
        (process.standardOutput, process.standardError) = (sink, sink)
        try process.run()
    }

    deinit { if process.isRunning { process.terminate() } }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Polls the output every 50 ms until `done` holds; throws naming `what`, with the output,
    /// after `seconds` or once the process has exited without it.
    func await(_ what: String, seconds: Double = 60, until done: (String) -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !done(output) {
            guard process.isRunning, Date() < deadline else {
                if done(output) { return }
                throw TestFailure("\(what): not within \(Int(seconds)) s (running: \(process.isRunning)); output:\n\(output)")
            }
            usleep(50_000)
        }
    }

    /// SIGINT (the CLI's orderly end), then its exit status.
    func interrupt() -> Int32 {
        if process.isRunning { process.interrupt() }
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// The exporting guest's side of a pair test: the built `mrleased` listening on a wire address
/// (300 ms quiesce, 1 GiB quota), a file in a scratch directory on ext4 (fsynced), and an
/// `mrlease register … --grant` holding regions of it and printing their descriptors and
/// events (it acknowledges `revoking` at once).
final class PairExporter {
    static let mrlease = Subprocess.builtProduct("mrlease")

    let name: String
    let address: String
    private(set) var daemon: RunningDaemon
    let scratch: ScratchDirectory
    let file: String
    private(set) var owner: Spawned?
    /// The owner's `descriptor REGION GRANT mrlg…` lines, in order: (region, grant, descriptor).
    private(set) var grants: [(region: String, grant: String, descriptor: String)] = []

    /// Starts the daemon on `address` (port 0) and makes `file` of `size` bytes of `fill`.
    init(_ name: String, listening address: String, fileSize: Int, fill: UInt8) throws {
        self.name = name
        self.address = address
        daemon = try Self.startDaemon(address)
        scratch = try ScratchDirectory(in: try Facility.writable(.ext4).require(), name: "pair-\(name)")
        file = try scratch.file("data", size: fileSize, byte: fill)
        // Written back before it is registered: the range's blocks are allocated, so a punch
        // in it moves blocks (the daemon tells a follow region's owner `layout` only then),
        // whatever writeback had done by then.
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: file), "opening \(file)")
        try handle.synchronize()
        try handle.close()
    }

    static func startDaemon(_ address: String) throws -> RunningDaemon {
        // No --device: the daemon serves the device that carries the listen address (rxew).
        try RunningDaemon(arguments: ["--listen", RemoteAccessPairTests.endpoint(address), "--log-level", "debug"],
                          environment: ["MRLEASED_MAX_BYTES_PER_UID": "1073741824", "MRLEASED_QUIESCE_MS": "300"])
    }

    /// SIGTERM to the daemon (its exit status; nil: still running) and a new one on the same
    /// address (a new port: the kernel picks).
    func restartDaemon() throws -> Int32? {
        let status = daemon.stop()
        daemon = try Self.startDaemon(address)
        return status
    }

    /// `mrlease register FILE --offset --length --access read,write --grant` with `extra`
    /// arguments (`--layout-policy`, `--strategy`, `--count`), held until `stop`; waits for
    /// one descriptor line per region.
    func register(offset: Int, length: Int, count: Int = 1, _ extra: [String] = []) throws {
        let owner = try Spawned(Self.mrlease, ["register", file, "--socket", daemon.socketPath, "--offset", "\(offset)",
                                               "--length", "\(length)", "--count", "\(count)", "--access", "read,write", "--grant"] + extra,
                                output: scratch.path + "/owner-\(grants.count).out")
        self.owner = owner
        try owner.await("\(name): \(count) descriptor line(s) from mrlease register") { text in
            text.split(separator: "\n").filter { $0.hasPrefix("descriptor ") }.count >= count
        }
        grants = owner.output.split(separator: "\n").filter { $0.hasPrefix("descriptor ") }.map { line in
            let fields = line.split(separator: " ").map(String.init)
            return (fields[1], fields[2], fields[3])
        }
    }

    /// The owner's output so far.
    var events: String { owner?.output ?? "" }

    /// One of the daemon's counters (`mrlease stats --json`): `layoutChangesFollowed`,
    /// `layoutChecks`, ….
    func counter(_ key: String) throws -> Int {
        let result = try Subprocess.run(Self.mrlease, ["stats", "--json", "--socket", daemon.socketPath])
        guard result.status == 0,
              let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
              let count = (json[key] as? NSNumber)?.intValue else {
            throw TestFailure("mrlease stats --json (\(key)): exit \(result.status), \(result.stdout) \(result.stderr)")
        }
        return count
    }

    /// Ends the owner (SIGINT: it closes its connection, the daemon deregisters its regions);
    /// its exit status.
    func release() -> Int32? { owner?.interrupt() }

    /// The file's bytes, read through a new open once the daemon holds no lease (after
    /// `release`: the daemon deregisters and unlocks after the owner's connection closes, and an
    /// open while its lease is held would break it, or fail EAGAIN where Foundation opens
    /// without blocking: seen on 6.12's tmpfs).
    func contents() throws -> [UInt8] {
        _ = try poll("mrleased (pid \(daemon.pid)) to give up its leases on \(file) after the owner went", seconds: 10, pausing: 20_000) {
            try leases() == 0 ? true : nil
        }
        return Array(try Data(contentsOf: URL(fileURLWithPath: file)))
    }

    /// The daemon's RDMA objects of each kind, over all its threads (the grant's PD and MR are
    /// the exposure worker's).
    func rdmaCounts() throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for kind in ["qp", "cm_id", "pd", "mr", "cq"] { counts[kind] = try RDMAResources.entries(kind, pid: daemon.pid).count }
        return counts
    }

    /// The daemon's leases in /proc/locks.
    func leases() throws -> Int {
        try String(contentsOfFile: "/proc/locks", encoding: .utf8).split(separator: "\n")
            .filter { $0.contains("LEASE") && $0.split(separator: " ").contains("\(daemon.pid)") }.count
    }

    /// Stops the owner and the daemon; prints both logs when `test` has failed.
    func stop(after test: XCTestCase) {
        let ownerStatus = release()
        let status = daemon.stop()
        if status != 0 || (test.testRun?.totalFailureCount ?? 0) > 0 {
            XCTAssertEqual(status, 0, "\(name): mrleased did not stop cleanly (nil: still running after SIGTERM)")
            print("\(name): mrlease register (exit \(ownerStatus.map(String.init) ?? "-")):\n\(events)\nmrleased log:\n\(daemon.log)")
        }
    }
}
