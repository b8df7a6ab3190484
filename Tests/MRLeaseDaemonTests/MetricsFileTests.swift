import Foundation
import LinuxFile
import MRLeaseDaemon
import MRLeaseProtocol
import TestSupport
import XCTest

/// `metrics-file`: the real daemon writes its stats for node_exporter's textfile collector,
/// and prometheus_client's Prometheus-format parser (the format the collector reads) reads it.
final class MetricsFileTests: XCTestCase {
    /// One request on a connection of its own; the daemon's result.
    func request(_ request: Request, socket path: String) throws -> ReplyResult {
        let client = try UnixSocket.connect(path: path)
        try client.send(Codec.encode(request, id: 1))
        guard case .message(let message) = try client.receive(maxSize: Codec.maxMessageBytes),
              case .reply(let reply) = try Codec.decodeServerMessage(message.bytes),
              case .success(let result) = reply.outcome else { throw TestFailure("\(request) got no result") }
        return result
    }

    /// Polls `path` until it parses and `done` holds for what it parsed (up to 10 s).
    func waitForMetrics(at path: String, until done: ([String: MetricsParser.Family]) -> Bool) throws -> [String: MetricsParser.Family] {
        let deadline = Date().addingTimeInterval(10)
        var last = "no file"
        while Date() < deadline {
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {  // absent until the first write
                let families = try MetricsParser.prometheus.parse(text)
                if done(families) { return families }
                last = text
            }
            usleep(50_000)
        }
        throw TestFailure("\(path) never showed what was waited for; last: \(last)")
    }

    func testTheFileIsWrittenAtStartRewrittenEachIntervalAndRemovedAtStop() throws {
        let directory = try ScratchDirectory(name: "mrleased-metrics")
        let path = directory.path + "/mrleased.prom"
        let daemon = try RunningDaemon(arguments: ["--metrics-file", path, "--metrics-interval-ms", "100"])
        let first = try waitForMetrics(at: path) { $0["mrleased_clients"] != nil }
        XCTAssertEqual(first["mrleased_regions"]?.value("mrleased_regions"), 0)
        XCTAssertNil(first["mrleased_request_duration_seconds"]?.value("mrleased_request_duration_seconds_count", ["type": "stats"]))

        guard case .stats(let stats) = try request(.stats, socket: daemon.socketPath) else { return XCTFail("stats") }
        // Rewritten: the stats request appears, counted after its reply.
        let families = try waitForMetrics(at: path) {
            $0["mrleased_request_duration_seconds"]?.value("mrleased_request_duration_seconds_count", ["type": "stats"]) == 1
        }
        XCTAssertEqual(families["mrleased_lease_breaks"]?.type, "counter")
        XCTAssertEqual(families["mrleased_lease_breaks"]?.value("mrleased_lease_breaks_total"), Double(stats.breaksHandled))
        XCTAssertEqual(families["mrleased_registrations"]?.value("mrleased_registrations_total"), stats.registrations.map { Double($0) })
        XCTAssertEqual(families["mrleased_region_bytes"]?.value("mrleased_region_bytes", ["strategy": "pinned"]), Double(stats.bytesPinned))
        let requests = try XCTUnwrap(families["mrleased_request_duration_seconds"])
        XCTAssertEqual(requests.type, "histogram")
        let statsTime = try XCTUnwrap(requests.samples.first { $0.labels["type"] == "stats" && $0.labels["le"] == "+Inf" })
        XCTAssertEqual(statsTime.value, 1)
        let buckets = requests.samples.filter { $0.name.hasSuffix("_bucket") && $0.labels["type"] == "stats" }
        XCTAssertEqual(buckets.count, Statistics.renderedBuckets + 1)
        XCTAssertEqual(buckets.map(\.value), buckets.map(\.value).sorted(), "cumulative: never decreasing")
        XCTAssertEqual(buckets.filter { $0.value == 0 }.count, buckets.count - buckets.filter { $0.value == 1 }.count)

        var info = stat()
        XCTAssertEqual(stat(path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o644, "node_exporter runs as another user")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["mrleased.prom"], "no temporary left")

        XCTAssertEqual(daemon.stop(), 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "a stopped daemon's gauges must not look current")
    }

    func testAFailedWriteIsLoggedWithItsErrnoAndTheDaemonKeepsServingAndRetries() throws {
        let directory = try ScratchDirectory(name: "mrleased-metrics")
        let path = directory.path + "/not-yet/mrleased.prom"
        let daemon = try RunningDaemon(arguments: ["--metrics-file", path, "--metrics-interval-ms", "100"])
        guard case .hello = try request(.hello(.init()), socket: daemon.socketPath) else { return XCTFail("hello") }
        let deadline = Date().addingTimeInterval(5)
        while !daemon.log.contains("op=open"), Date() < deadline { usleep(50_000) }
        XCTAssertTrue(daemon.log.contains("metrics file: open \(path).tmp failed (ENOENT); create the directory"), daemon.log)
        XCTAssertTrue(daemon.log.contains("errno=ENOENT"), daemon.log)
        usleep(300_000)
        XCTAssertEqual(daemon.log.components(separatedBy: "op=open").count, 2, "logged once, not every interval: \(daemon.log)")

        try FileManager.default.createDirectory(atPath: directory.path + "/not-yet", withIntermediateDirectories: false)
        _ = try waitForMetrics(at: path) { $0["mrleased_clients"] != nil }
        XCTAssertTrue(daemon.log.contains("metrics file written again"), daemon.log)
    }

    func testTheMetricsSettingsAreCheckedWhenRead() throws {
        var configuration = DaemonConfiguration()
        XCTAssertNil(configuration.metricsFile, "off by default")
        try configuration.apply(file: "metrics-file = /var/lib/prometheus/node-exporter/mrleased.prom\nmetrics-interval-ms = 5000\n", name: "t.conf")
        XCTAssertEqual(configuration.metricsFile, "/var/lib/prometheus/node-exporter/mrleased.prom")
        XCTAssertEqual(configuration.metricsIntervalMillis, 5000)
        for (line, message) in [("metrics-file = /tmp/mrleased.txt", "metrics-file must be an absolute path ending in .prom"),
                                ("metrics-file = mrleased.prom", "metrics-file must be an absolute path ending in .prom"),
                                ("metrics-interval-ms = 10", "metrics-interval-ms must be 100 to 86400000, got 10")] {
            XCTAssertThrowsError(try configuration.apply(file: line + "\n", name: "t.conf"), line) { error in
                XCTAssertTrue("\(error)".contains("t.conf:1: " + message), "\(error)")
            }
        }
        try configuration.apply(environment: ["MRLEASED_METRICS_FILE": ""])
        XCTAssertNil(configuration.metricsFile, "empty: off again")
    }
}
