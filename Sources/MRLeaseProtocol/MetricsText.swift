/// The two text formats Prometheus-family scrapers read. They differ in three places: an
/// OpenMetrics counter family is named without `_total` (its sample carries it), OpenMetrics
/// has `# UNIT` lines, and it ends with `# EOF`.
public enum MetricsFormat: Sendable {
    /// OpenMetrics 1.0 (`application/openmetrics-text; version=1.0.0`): `mrlease stats --openmetrics`.
    case openMetrics
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), the only one
    /// node_exporter's textfile collector parses: the daemon's `metrics-file`.
    case prometheus
}

extension Statistics {
    /// Histogram buckets rendered: `le` from 2 µs to 2^26 µs (67 s), then `+Inf`. A fixed set,
    /// so every scrape has the same series; latencies past the last bound are only in `+Inf`.
    public static let renderedBuckets = 26

    /// The counters, gauges and histograms of this `stats` result as metrics text, every name
    /// prefixed `mrleased_`, durations in seconds. Fields a daemon did not send (an older one)
    /// are left out rather than shown as 0; so is a histogram without buckets and sum.
    public func metricsText(_ format: MetricsFormat) -> String {
        var out = MetricsWriter(format: format)
        out.gauge("clients", "Client connections open.", clients)
        out.gauge("files", "Files with registered regions.", files)
        out.gauge("regions", "Regions registered.", regions)
        out.family("region_bytes", type: "gauge", unit: "bytes", help: "Bytes of registered regions, by strategy.")
        out.sample("region_bytes", labels: [("strategy", "odp")], bytesODP)
        out.sample("region_bytes", labels: [("strategy", "pinned")], bytesPinned)
        out.gauge("leases", "File leases held.", leasesHeld)
        if let grants { out.gauge("grants", "Remote-access grants in force.", grants) }
        if let peers { out.gauge("peers", "Remote peers connected through grants.", peers) }
        out.counter("lease_breaks", "Lease breaks handled since the daemon started.", breaksHandled)
        if let layoutChangesHandled {
            out.counter("layout_changes", "Layout changes found without a lease break (through the leased open file).", layoutChangesHandled)
        }
        if let layoutChecks { out.counter("layout_checks", "Comparisons of a file's size and extents with its regions.", layoutChecks) }
        if let layoutChangesFollowed {
            out.counter("layout_changes_followed", "Layout changes told to the owners of follow regions (layout events; nothing revoked).", layoutChangesFollowed)
        }
        if let registrations { out.counter("registrations", "Regions registered since the daemon started.", registrations) }
        if let restorations { out.counter("restorations", "Regions restored after a revocation.", restorations) }
        if let regionsLost { out.counter("regions_lost", "Regions lost (the lost event).", regionsLost) }
        if breakToUnlockMicros.isRenderable {
            out.family("break_to_unlock_seconds", type: "histogram", unit: "seconds",
                       help: "From a lease break's signal to the lease released.")
            out.histogram("break_to_unlock_seconds", labels: [], breakToUnlockMicros)
        }
        let requests = RequestType.allCases.compactMap { type in requestMicros[type].map { (type, $0) } }.filter(\.1.isRenderable)
        if !requests.isEmpty {
            out.family("request_duration_seconds", type: "histogram", unit: "seconds",
                       help: "The daemon's time per request, from reading the packet to handing the reply to the socket.")
            for (type, latency) in requests { out.histogram("request_duration_seconds", labels: [("type", type.rawValue)], latency) }
        }
        if format == .openMetrics { out.text += "# EOF\n" }
        return out.text
    }
}

extension Statistics.Latency {
    var isRenderable: Bool { buckets != nil && sum != nil }
}

/// Writes families line by line; names get the `mrleased_` prefix here.
private struct MetricsWriter {
    let format: MetricsFormat
    var text = ""

    mutating func family(_ name: String, type: String, unit: String? = nil, help: String) {
        // A Prometheus 0.0.4 counter family carries its samples' `_total` name.
        let family = "mrleased_" + name + (type == "counter" && format == .prometheus ? "_total" : "")
        text += "# HELP \(family) \(help)\n# TYPE \(family) \(type)\n"
        if let unit, format == .openMetrics { text += "# UNIT \(family) \(unit)\n" }
    }

    mutating func sample(_ name: String, labels: [(String, String)] = [], _ value: String) {
        // Label values here are request types and strategy names: no quote, backslash or newline.
        let set = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\($0.1)\"" }.joined(separator: ",") + "}"
        text += "mrleased_\(name)\(set) \(value)\n"
    }

    mutating func sample(_ name: String, labels: [(String, String)] = [], _ value: UInt64) {
        sample(name, labels: labels, String(value))
    }

    mutating func gauge(_ name: String, _ help: String, _ value: UInt64) {
        family(name, type: "gauge", help: help)
        sample(name, value)
    }

    mutating func counter(_ name: String, _ help: String, _ value: UInt64) {
        family(name, type: "counter", help: help)
        sample(name + "_total", value)
    }

    /// Cumulative `_bucket`s (`le` in seconds), `_count` and `_sum`.
    mutating func histogram(_ name: String, labels: [(String, String)], _ latency: Statistics.Latency) {
        let counts = latency.buckets ?? []
        var cumulative: UInt64 = 0
        for index in 0..<Statistics.renderedBuckets {
            cumulative += index < counts.count ? counts[index] : 0
            sample(name + "_bucket", labels: labels + [("le", Self.seconds(micros: Statistics.Latency.bucketBoundMicros(index)))], cumulative)
        }
        sample(name + "_bucket", labels: labels + [("le", "+Inf")], latency.count)
        sample(name + "_count", labels: labels, latency.count)
        sample(name + "_sum", labels: labels, Self.seconds(micros: latency.sum ?? 0))
    }

    /// Microseconds as exact decimal seconds ("0.000002", "67.108864"): no float formatting,
    /// so `le` labels are the same text on every scrape and in every parser.
    static func seconds(micros: UInt64) -> String {
        let fraction = String(micros % 1_000_000)
        return "\(micros / 1_000_000)." + String(repeating: "0", count: 6 - fraction.count) + fraction
    }
}
