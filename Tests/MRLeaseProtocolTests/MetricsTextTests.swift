import MRLeaseProtocol
import TestSupport
import XCTest

/// `Statistics.metricsText` read back by prometheus_client's parsers: what a scrape would see.
final class MetricsTextTests: XCTestCase {
    /// Bucket 0 (< 2 µs) 1, bucket 3 ([8, 16) µs) 2, bucket 17 (~0.13–0.26 s) 4, bucket 30
    /// (past the last rendered bound) 1.
    static let breaks = Statistics.Latency(p50: 262_144, p99: 2_147_483_648, max: 1_500_000_000, count: 8,
                                           buckets: [1, 0, 0, 2] + Array(repeating: 0, count: 13) + [4] + Array(repeating: 0, count: 12) + [1],
                                           sum: 1_500_900_001)
    static let stats = Statistics(
        files: 2, regions: 3, bytesODP: 1 << 21, bytesPinned: 4096, leasesHeld: 2, breaksHandled: 8, breakToUnlockMicros: breaks,
        clients: 5, requestMicros: [.register: .init(p50: 512, p99: 1024, max: 900, count: 3, buckets: Array(repeating: 0, count: 9) + [3], sum: 2000),
                                    .stats: .init(p50: 32, p99: 32, max: 20, count: 1, buckets: [0, 0, 0, 0, 1], sum: 20)],
        layoutChangesHandled: 1, layoutChecks: 40, registrations: 9, restorations: 6, regionsLost: 2, grants: 1, peers: 3,
        layoutChangesFollowed: 7)

    func testOpenMetricsTextParsesWithCumulativeBucketsMatchingTheHistogram() throws {
        let families = try MetricsParser.openMetrics.parse(Self.stats.metricsText(.openMetrics))
        try assertMatchesStatistics(families)
        XCTAssertEqual(families["mrleased_break_to_unlock_seconds"]?.unit, "seconds")
        XCTAssertEqual(families["mrleased_region_bytes"]?.unit, "bytes")
    }

    func testPrometheusTextParsesToTheSameFamilies() throws {
        let text = Self.stats.metricsText(.prometheus)
        XCTAssertFalse(text.contains("# EOF"), "0.0.4 has no EOF marker")
        XCTAssertFalse(text.contains("# UNIT"), "0.0.4 has no UNIT lines")
        XCTAssertTrue(text.contains("# TYPE mrleased_lease_breaks_total counter"), "a 0.0.4 counter family is named with _total")
        try assertMatchesStatistics(try MetricsParser.prometheus.parse(text))
    }

    func testFieldsAnOlderDaemonDoesNotSendAreLeftOutNotZero() throws {
        let old = Statistics(files: 0, regions: 0, bytesODP: 0, bytesPinned: 0, leasesHeld: 0, breaksHandled: 0,
                             breakToUnlockMicros: .init(p50: 0, p99: 0, max: 0, count: 0), clients: 1,
                             requestMicros: [.hello: .init(p50: 9, p99: 9, max: 9, count: 1)])
        let families = try MetricsParser.openMetrics.parse(old.metricsText(.openMetrics))
        XCTAssertEqual(families["mrleased_clients"]?.value("mrleased_clients"), 1)
        for absent in ["mrleased_grants", "mrleased_peers", "mrleased_registrations", "mrleased_layout_checks", "mrleased_layout_changes_followed",
                       "mrleased_break_to_unlock_seconds", "mrleased_request_duration_seconds"] {
            XCTAssertNil(families[absent], absent)
        }
    }

    func testBucketsThatDoNotAddUpToTheCountAreRefused() {
        func decode(_ latency: String) throws -> ReplyResult? {
            let packet = #"{"v":1,"type":"stats","id":1,"result":{"files":0,"regions":0,"bytesByStrategy":{"odp":0,"pinned":0},"leasesHeld":0,"breaksHandled":2,"breakToUnlockMicros":"#
                + latency + #","clients":1}}"#
            guard case .reply(let reply) = try Codec.decodeServerMessage(Array(packet.utf8)), case .success(let result) = reply.outcome else { return nil }
            return result
        }
        XCTAssertNoThrow(try decode(#"{"p50":4,"p99":4,"max":3,"count":2,"sum":5,"buckets":[0,2]}"#))
        for (latency, rule) in [(#"{"p50":4,"p99":4,"max":3,"count":2,"buckets":[0,1]}"#, "must add up to count (2), got 1"),
                                (#"{"p50":4,"p99":4,"max":3,"count":2,"buckets":[2,0]}"#, "must not end with an empty bucket"),
                                (#"{"p50":4,"p99":4,"max":3,"count":2,"buckets":[18446744073709551615,3]}"#, "must add up to count (2)"),
                                (#"{"p50":4,"p99":4,"max":3,"count":2,"buckets":[-2]}"#, "must be an integer")] {
            XCTAssertThrowsError(try decode(latency), latency) { error in
                XCTAssertTrue((error as? ProtocolError)?.message.contains(rule) == true, "\(error)")
            }
        }
    }

    /// Every gauge and counter equals its `stats` field; each histogram's buckets are the
    /// running sums of the wire's, at 2^(i+1) µs, ending in `+Inf` = `_count`.
    private func assertMatchesStatistics(_ families: [String: MetricsParser.Family], file: StaticString = #filePath, line: UInt = #line) throws {
        let stats = Self.stats
        let gauges: [(String, UInt64?)] = [("clients", stats.clients), ("files", stats.files), ("regions", stats.regions),
                                           ("leases", stats.leasesHeld), ("grants", stats.grants), ("peers", stats.peers)]
        for (name, value) in gauges {
            XCTAssertEqual(families["mrleased_" + name]?.type, "gauge", name, file: file, line: line)
            XCTAssertEqual(families["mrleased_" + name]?.value("mrleased_" + name), value.map { Double($0) }, name, file: file, line: line)
        }
        XCTAssertEqual(families["mrleased_region_bytes"]?.value("mrleased_region_bytes", ["strategy": "odp"]), Double(stats.bytesODP))
        XCTAssertEqual(families["mrleased_region_bytes"]?.value("mrleased_region_bytes", ["strategy": "pinned"]), Double(stats.bytesPinned))
        let counters: [(String, UInt64?)] = [("lease_breaks", stats.breaksHandled), ("layout_changes", stats.layoutChangesHandled),
                                             ("layout_checks", stats.layoutChecks), ("registrations", stats.registrations),
                                             ("restorations", stats.restorations), ("regions_lost", stats.regionsLost),
                                             ("layout_changes_followed", stats.layoutChangesFollowed)]
        for (name, value) in counters {
            XCTAssertEqual(families["mrleased_" + name]?.type, "counter", name, file: file, line: line)
            XCTAssertEqual(families["mrleased_" + name]?.value("mrleased_\(name)_total"), value.map { Double($0) }, name, file: file, line: line)
        }
        let histograms: [(String, [String: String], Statistics.Latency)] = [("break_to_unlock_seconds", [:], stats.breakToUnlockMicros)]
            + stats.requestMicros.map { ("request_duration_seconds", ["type": $0.key.rawValue], $0.value) }
        for (name, labels, latency) in histograms {
            let family = try XCTUnwrap(families["mrleased_" + name], name, file: file, line: line)
            XCTAssertEqual(family.type, "histogram", file: file, line: line)
            let buckets = family.samples.filter { $0.name == "mrleased_\(name)_bucket" && $0.labels.filter { $0.key != "le" } == labels }
            XCTAssertEqual(buckets.count, Statistics.renderedBuckets + 1, "\(name) \(labels): one per bound and +Inf", file: file, line: line)
            var running: UInt64 = 0
            for (index, bucket) in buckets.enumerated() {
                if bucket.labels["le"] == "+Inf" {
                    XCTAssertEqual(index, buckets.count - 1, "+Inf comes last", file: file, line: line)
                    XCTAssertEqual(bucket.value, Double(latency.count), file: file, line: line)
                    continue
                }
                running += index < latency.buckets!.count ? latency.buckets![index] : 0
                XCTAssertEqual(Double(bucket.labels["le"] ?? ""), Double(UInt64(1) << UInt64(index + 1)) / 1e6, "\(name) le of bucket \(index)", file: file, line: line)
                XCTAssertEqual(bucket.value, Double(running), "\(name) \(labels) bucket \(index) is cumulative", file: file, line: line)
            }
            XCTAssertEqual(family.value("mrleased_\(name)_count", labels), Double(latency.count), file: file, line: line)
            XCTAssertEqual(try XCTUnwrap(family.value("mrleased_\(name)_sum", labels)), Double(latency.sum!) / 1e6, accuracy: 1e-9, file: file, line: line)
        }
        XCTAssertEqual(families["mrleased_break_to_unlock_seconds"]?.value("mrleased_break_to_unlock_seconds_bucket", ["le": "0.000016"]), 3,
                       "below 16 µs: the one under 2 µs and the two in [8, 16)", file: file, line: line)
    }
}
