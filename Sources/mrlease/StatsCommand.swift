import ArgumentParser
import MRLeaseClient

/// `mrlease stats`: the daemon's counters.
struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Print mrleased's counters: clients, files, regions, bytes, leases, breaks, layout changes.",
        discussion: "Exit status: 0 ok; 1 the daemon is not reachable or refused."
    )

    @OptionGroup var daemon: DaemonOptions
    @Flag(help: "Print the protocol's stats result as one JSON object.")
    var json = false
    @Flag(help: "Print the counters, gauges and histograms in the OpenMetrics 1.0 text format (what a Prometheus scrape of it would read).")
    var openmetrics = false

    func validate() throws {
        if json && openmetrics { throw ValidationError("--json and --openmetrics print different formats: give one") }
    }

    func run() throws {
        let (client, _) = try daemon.connect("stats")
        let stats = try daemonCall("stats") { () throws(ClientError) in try client.stats() }
        if json { return emit(WireJSON.line(WireJSON.object(.stats(stats)))) }
        if openmetrics { return emit(String(stats.metricsText(.openMetrics).dropLast())) }  // emit adds the last newline
        let latency = stats.breakToUnlockMicros
        emit(Format.table(["COUNTER", "VALUE"], [
            ["clients", "\(stats.clients)"],
            ["files", "\(stats.files)"],
            ["regions", "\(stats.regions)"],
            ["bytes-odp", "\(stats.bytesODP)"],
            ["bytes-pinned", "\(stats.bytesPinned)"],
            ["leases-held", "\(stats.leasesHeld)"],
            ["breaks-handled", "\(stats.breaksHandled)"],
            ["break-to-unlock-us", "p50 \(latency.p50), p99 \(latency.p99), max \(latency.max) (\(latency.count) breaks)"],
        ] + [("layout-changes-handled", stats.layoutChangesHandled), ("layout-checks", stats.layoutChecks),
           ("layout-changes-followed", stats.layoutChangesFollowed)].compactMap { name, value in
            value.map { [name, "\($0)"] }  // absent from a daemon older than these counters
        } + RequestType.allCases.compactMap { type in
            stats.requestMicros[type].map { ["\(type.rawValue)-us", "p50 \($0.p50), p99 \($0.p99), max \($0.max) (\($0.count) requests)"] }
        }))
    }
}
