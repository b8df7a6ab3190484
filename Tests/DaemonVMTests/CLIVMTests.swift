import Foundation
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

/// `mrlease register` against the real daemon on the guest's rxe0, as an operator would run it:
/// several CLI clients at once, a truncate from another process, the events on stdout.
final class CLIVMTests: XCTestCase {
    /// These tests follow leases and revocations: each region asks for them
    /// (`mrlease register --layout-policy revoke`), whatever the daemon's default.
    static let revoke = ["--layout-policy", "revoke"]

    /// A running `mrlease register … --json`, its stdout read line by line.
    final class Registration {
        let process = Process()
        let output = Pipe()
        let printed: LineCollector

        init(socket: String, path: String, offset: Int, length: Int, count: Int = 1, options: [String] = []) throws {
            process.executableURL = URL(fileURLWithPath: Subprocess.builtProduct("mrlease"))
            process.arguments = ["register", path, "--socket", socket, "--offset", "\(offset)", "--length", "\(length)",
                                 "--count", "\(count)", "--access", "read,write", "--json"] + options
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            printed = LineCollector(output.fileHandleForReading)
            try process.run()
        }

        /// The JSON lines printed so far.
        var lines: [[String: Any]] { Self.objects(printed.lines) }

        static func objects(_ lines: [String]) -> [[String: Any]] {
            lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }

        /// Reads stdout until a line with `event` == one of `names` arrives (or 20 s pass).
        func waitFor(_ names: Set<String>, seconds: Double = 20) -> [String: Any]? {
            waitUntil(seconds: seconds) { $0.contains { names.contains($0["event"] as? String ?? "") } }
            return lines.first { names.contains($0["event"] as? String ?? "") }
        }

        /// The lines with `event` == `name` once there are `count` of them (or 20 s pass).
        func events(_ name: String, count: Int, seconds: Double = 20) -> [[String: Any]] {
            let matching = { (lines: [[String: Any]]) in lines.filter { $0["event"] as? String == name } }
            waitUntil(seconds: seconds) { matching($0).count >= count }
            return matching(lines)
        }

        /// Until `done` holds for the lines so far, or `seconds` pass (the callers' assertions
        /// then say what was missing).
        func waitUntil(seconds: Double, _ done: ([[String: Any]]) -> Bool) {
            try? printed.wait(seconds: seconds) { done(Self.objects($0)) }
        }

        func interrupt() -> Int32 {
            kill(process.processIdentifier, SIGINT)
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    func testThreeCLIClientsTwoTruncatedFilesAndCleanExits() throws {
        let device = try Facility.rdmaDevice.require()
        let daemon = try RunningDaemon(device: device)
        let scratch = try ScratchDirectory(in: try Facility.writable(.ext4).require())
        let kept = try scratch.file("kept", size: 1 << 20)
        let cut = try scratch.file("cut", size: 1 << 20)
        let other = try scratch.file("other", size: 1 << 20)
        // One client per file: a second process opening a leased file is itself a breaker
        // (clients that share a file share its fd; docs/protocol.md).
        let first = try Registration(socket: daemon.socketPath, path: kept, offset: 0, length: 8192, options: Self.revoke)
        let second = try Registration(socket: daemon.socketPath, path: cut, offset: 65536, length: 4096, options: Self.revoke)
        let bystander = try Registration(socket: daemon.socketPath, path: other, offset: 0, length: 4096, options: Self.revoke)
        for client in [first, second, bystander] {
            XCTAssertNotNil(client.waitFor(["registered"]), "\(client.lines)")
        }

        for path in [kept, cut] {
            let tool = try Subprocess.run("/bin/sh", ["-c", "for i in $(seq 200); do truncate -s 32768 '\(path)' 2>/dev/null && exit 0; sleep 0.02; done; exit 1"])
            XCTAssertEqual(tool.status, 0)
            XCTAssertLessThan(tool.seconds, 10)
        }

        let restored = first.waitFor(["restored"])
        XCTAssertNotNil(restored, "\(first.lines)")
        let oldKey = try XCTUnwrap(first.lines.first?["rkey"], "\(first.lines)")
        let newKey = try XCTUnwrap(restored?["rkey"], "\(first.lines)")
        XCTAssertNotEqual("\(newKey)", "\(oldKey)", "a restored region has a new MR")
        let lost = second.waitFor(["lost"])
        XCTAssertEqual(lost?["reason"] as? String, "range-truncated", "\(second.lines)")
        let events = first.lines.compactMap { $0["event"] as? String }
        XCTAssertEqual(Array(events.prefix(4)), ["registered", "revoking", "revoked", "restored"], "\(first.lines)")
        XCTAssertEqual(bystander.lines.compactMap { $0["event"] as? String }, ["registered"], "a break on another file reaches nobody else")

        XCTAssertEqual(first.interrupt(), 0, "\(first.lines)")
        XCTAssertEqual(second.interrupt(), 0, "\(second.lines)")
        XCTAssertEqual(bystander.interrupt(), 0, "\(bystander.lines)")
        let after = try daemon.settledHoldings()
        XCTAssertEqual(after.mrs, [])
        XCTAssertEqual(after.leases, 0)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// `mrlease stats --openmetrics` after a truncate, read by prometheus_client's OpenMetrics
    /// parser: the break-to-unlock histogram holds the breaks the daemon handled, bucket by
    /// bucket as `stats` has them. One truncate is usually one break, but not always: on 6.1 a
    /// run saw two (two revocations and restorations), so the count is held against `stats`,
    /// and the one-break case is checked exactly.
    func testAfterATruncateTheOpenMetricsBreakHistogramHoldsTheBreaksHandled() throws {
        let device = try Facility.rdmaDevice.require()
        let daemon = try RunningDaemon(device: device)
        // ext4, or tmpfs where this kernel registers no writable page-cache region (6.12 with rxe).
        let scratch = try ScratchDirectory(in: try Facility.writable(.ext4).require())
        let path = try scratch.file("metrics", size: 1 << 20)
        let client = try Registration(socket: daemon.socketPath, path: path, offset: 0, length: 8192, options: Self.revoke)
        XCTAssertNotNil(client.waitFor(["registered"]), "\(client.lines)")
        let tool = try Subprocess.run("/bin/sh", ["-c", "for i in $(seq 200); do truncate -s 32768 '\(path)' 2>/dev/null && exit 0; sleep 0.02; done; exit 1"])
        XCTAssertEqual(tool.status, 0)
        XCTAssertNotNil(client.waitFor(["restored"]), "\(client.lines)")

        // Settled: every break's revocation restored, and nothing new for 300 ms.
        func stats() throws -> Statistics {
            guard case .success(.stats(let stats)) = try RawClient(path: daemon.socketPath).request(.stats) else { throw TestFailure("stats failed") }
            return stats
        }
        var before = try stats()
        for _ in 0..<50 {
            usleep(300_000)
            let now = try stats()
            if now.breaksHandled == before.breaksHandled, now.restorations == UInt64(now.breaksHandled) { break }
            before = now
        }
        let output = try Subprocess.run(Subprocess.builtProduct("mrlease"), ["stats", "--openmetrics", "--socket", daemon.socketPath])
        XCTAssertEqual(output.status, 0, output.stderr)
        let expected = try stats()
        XCTAssertEqual(expected.breaksHandled, before.breaksHandled, "a break came while the metrics were read")
        XCTAssertGreaterThanOrEqual(expected.breaksHandled, 1)
        let families = try MetricsParser.openMetrics.parse(output.stdout)
        XCTAssertEqual(families["mrleased_lease_breaks"]?.value("mrleased_lease_breaks_total"), Double(expected.breaksHandled))
        XCTAssertEqual(families["mrleased_restorations"]?.value("mrleased_restorations_total"), expected.restorations.map { Double($0) })
        let breaks = try XCTUnwrap(families["mrleased_break_to_unlock_seconds"], output.stdout)
        XCTAssertEqual(breaks.value("mrleased_break_to_unlock_seconds_count"), Double(expected.breaksHandled))
        XCTAssertEqual(breaks.value("mrleased_break_to_unlock_seconds_bucket", ["le": "+Inf"]), Double(expected.breaksHandled))
        let counts = try XCTUnwrap(expected.breakToUnlockMicros.buckets)
        let rendered = breaks.samples.filter { $0.name.hasSuffix("_bucket") && $0.labels["le"] != "+Inf" }
        XCTAssertEqual(rendered.count, Statistics.renderedBuckets)
        for (index, bucket) in rendered.enumerated() {
            XCTAssertEqual(bucket.value, Double(counts.prefix(index + 1).reduce(0, +)), "le \(bucket.labels["le"] ?? "?")")
        }
        let latency = try XCTUnwrap(breaks.value("mrleased_break_to_unlock_seconds_sum"))
        XCTAssertGreaterThan(latency, 0)
        if expected.breaksHandled == 1 {
            // One break: the buckets turn from 0 to 1 at the first bound above its latency.
            for bucket in rendered {
                let bound = try XCTUnwrap(Double(bucket.labels["le"] ?? ""))
                XCTAssertEqual(bucket.value, bound > latency ? 1 : 0, "le \(bound) against the one break of \(latency) s")
            }
        } else {
            print("CLIVMTests: one truncate made \(expected.breaksHandled) lease breaks here (restorations: \(expected.restorations ?? 0)); client saw \(client.lines.compactMap { $0["event"] as? String })")
        }
        XCTAssertEqual(client.interrupt(), 0, "\(client.lines)")
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testRegisterCountMakesOneBatchOfRegionsHeldUntilInterrupted() throws {
        let device = try Facility.rdmaDevice.require()
        let daemon = try RunningDaemon(device: device)
        let scratch = try ScratchDirectory(in: try Facility.writable(.ext4).require())
        let path = try scratch.file("segments", size: 1 << 20)
        let client = try Registration(socket: daemon.socketPath, path: path, offset: 65536, length: 8192, count: 4, options: Self.revoke)
        let registered = client.events("registered", count: 4)
        XCTAssertEqual(registered.count, 4, "\(client.lines)")
        XCTAssertEqual(Set(registered.compactMap { $0["region"] as? Int }).count, 4, "\(client.lines)")
        XCTAssertEqual(try daemon.holdings().mrs.count, 4)
        XCTAssertEqual(try daemon.holdings().leases, 1)
        guard case .success(.stats(let stats))? = try? RawClient(path: daemon.socketPath).request(.stats) else {
            return XCTFail("stats failed")
        }
        XCTAssertEqual(stats.requestMicros[.registerBatch]?.count, 1, "one request for the four")
        XCTAssertNil(stats.requestMicros[.register])
        XCTAssertEqual(client.interrupt(), 0, "\(client.lines)")
        let after = try daemon.settledHoldings()
        XCTAssertEqual(after.mrs, [])
        XCTAssertEqual(after.leases, 0)
        XCTAssertEqual(daemon.stop(), 0)
    }
}
