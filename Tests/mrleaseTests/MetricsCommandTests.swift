import Foundation
import TestSupport
import XCTest

/// `mrlease stats --openmetrics` against the real daemon, read by prometheus_client's
/// OpenMetrics parser and held against `mrlease stats --json`.
final class MetricsCommandTests: XCTestCase {
    let mrlease = Subprocess.builtProduct("mrlease")

    func run(_ arguments: [String]) throws -> Subprocess {
        let inherited = ProcessInfo.processInfo.environment.filter { key, _ in !key.hasPrefix("MRLEASED_") }
        let result = try Subprocess.run(mrlease, arguments, environment: inherited)
        XCTAssertEqual(result.status, 0, "mrlease \(arguments.joined(separator: " ")): \(result.stderr)")
        return result
    }

    func testOpenMetricsOutputParsesAndAgreesWithTheStatsJSON() throws {
        let daemon = try RunningDaemon()
        for _ in 0..<3 { _ = try run(["list", "--socket", daemon.socketPath]) }
        let text = try run(["stats", "--openmetrics", "--socket", daemon.socketPath]).stdout
        // After it: its own hello and stats are counted in the JSON, one more of each.
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try run(["stats", "--json", "--socket", daemon.socketPath]).stdout.utf8))
                                 as? [String: Any])
        XCTAssertTrue(text.hasSuffix("# EOF\n"), text)
        let families = try MetricsParser.openMetrics.parse(text)

        for (family, field) in [("clients", "clients"), ("files", "files"), ("regions", "regions"), ("leases", "leasesHeld"),
                                ("grants", "grants"), ("peers", "peers")] {
            XCTAssertEqual(families["mrleased_" + family]?.type, "gauge", family)
            XCTAssertEqual(families["mrleased_" + family]?.value("mrleased_" + family), (json[field] as? NSNumber)?.doubleValue, family)
        }
        XCTAssertEqual(families["mrleased_clients"]?.value("mrleased_clients"), 1, "the CLI's own connection")
        for (family, field) in [("lease_breaks", "breaksHandled"), ("layout_changes", "layoutChangesHandled"), ("layout_checks", "layoutChecks"),
                                ("registrations", "registrations"), ("restorations", "restorations"), ("regions_lost", "regionsLost"),
                                ("layout_changes_followed", "layoutChangesFollowed")] {
            XCTAssertEqual(families["mrleased_" + family]?.type, "counter", family)
            XCTAssertEqual(families["mrleased_" + family]?.value("mrleased_\(family)_total"), (json[field] as? NSNumber)?.doubleValue, family)
        }

        // The three lists: the same histogram in both, bucket by bucket.
        let requests = try XCTUnwrap(families["mrleased_request_duration_seconds"])
        XCTAssertEqual(requests.type, "histogram")
        XCTAssertEqual(requests.unit, "seconds")
        let list = try XCTUnwrap((json["requestMicros"] as? [String: Any])?["list"] as? [String: Any])
        let counts = try XCTUnwrap(list["buckets"] as? [Int])
        XCTAssertEqual(counts.reduce(0, +), 3)
        var running = 0
        for (index, count) in counts.enumerated() {
            running += count
            let le = String(format: "%.6f", Double(1 << (index + 1)) / 1e6)
            XCTAssertEqual(requests.value("mrleased_request_duration_seconds_bucket", ["type": "list", "le": le]), Double(running), "le \(le)")
        }
        XCTAssertEqual(requests.value("mrleased_request_duration_seconds_bucket", ["type": "list", "le": "+Inf"]), 3)
        XCTAssertEqual(requests.value("mrleased_request_duration_seconds_count", ["type": "list"]), 3)
        XCTAssertEqual(try XCTUnwrap(requests.value("mrleased_request_duration_seconds_sum", ["type": "list"])),
                       try XCTUnwrap(list["sum"] as? Double) / 1e6, accuracy: 1e-9)
        let hellos = try XCTUnwrap(((json["requestMicros"] as? [String: Any])?["hello"] as? [String: Any])?["count"] as? Double)
        XCTAssertEqual(requests.value("mrleased_request_duration_seconds_count", ["type": "hello"]), hellos - 1, "one hello per command")
        XCTAssertNil(requests.value("mrleased_request_duration_seconds_count", ["type": "register"]), "no register yet: no series")

        let breaks = try XCTUnwrap(families["mrleased_break_to_unlock_seconds"])
        XCTAssertEqual(breaks.value("mrleased_break_to_unlock_seconds_count"), 0)
        XCTAssertEqual(breaks.value("mrleased_break_to_unlock_seconds_bucket", ["le": "+Inf"]), 0)
    }

    func testJSONAndOpenMetricsTogetherAreRefused() throws {
        let result = try Subprocess.run(mrlease, ["stats", "--json", "--openmetrics", "--socket", "/nonexistent"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("--json and --openmetrics print different formats"), result.stderr)
    }
}
