import ArgumentParser
import MRLeaseClient

/// `mrlease status`: is the daemon there, what does it offer, what does it hold.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show whether mrleased is reachable, its devices, strategies, limits and counters.",
        discussion: "Exit status: 0 the daemon answered; 1 it is not reachable or refused (the reason goes to stderr)."
    )

    @OptionGroup var daemon: DaemonOptions
    @Flag(help: "Print JSON ({socket, hello, stats}: the protocol's hello and stats results).")
    var json = false

    func run() throws {
        let (client, hello) = try daemon.connect("status")
        let stats = try daemonCall("status") { () throws(ClientError) in try client.stats() }
        if json {
            emit(WireJSON.line(["socket": client.socketPath, "hello": WireJSON.object(.hello(hello)),
                                "stats": WireJSON.object(.stats(stats))], pretty: true))
            return
        }
        emit(Self.render(socket: client.socketPath, hello: hello, stats: stats))
    }

    static func render(socket: String, hello: HelloResult, stats: Statistics) -> String {
        var rows: [(String, String)] = [("daemon", "\(hello.daemon), protocol \(hello.version), at \(socket)")]
        if hello.devices.isEmpty {
            rows.append(("devices", "none: every registration is refused (strategy-unavailable)"))
        }
        for device in hello.devices {
            let odp = device.odpSupported ? "ODP for RC [\(device.odpRC.joined(separator: ","))]" : "no ODP"
            rows.append(("devices", "\(device.name): \(odp)"))
        }
        if let endpoints = hello.endpoints {
            rows.append(("peers", endpoints.isEmpty ? "not listening (set `listen` to let remote peers reach granted regions)"
                                                    : "listening on \(endpoints.joined(separator: ", "))"))
        }
        rows.append(("strategies", hello.strategies.isEmpty ? "none" : hello.strategies.map(\.rawValue).joined(separator: ", ")))
        let limits = hello.limits
        rows.append(("limits", "\(limits.maxRegionsPerUid) regions and \(Format.bytes(limits.maxBytesPerUid)) per uid, "
                        + "messages up to \(Format.bytes(limits.maxMessageBytes)), quiesce \(limits.quiesceMillis) ms"))
        rows.append(("clients", "\(stats.clients) (this one included)"))
        rows.append(("files", "\(stats.files)"))
        rows.append(("regions", "\(stats.regions): \(Format.bytes(stats.bytesODP)) ODP, \(Format.bytes(stats.bytesPinned)) pinned"))
        rows.append(("leases", "\(stats.leasesHeld) held"))
        let latency = stats.breakToUnlockMicros
        rows.append(("breaks", "\(stats.breaksHandled) handled; break to unlock p50 \(latency.p50) µs, p99 \(latency.p99) µs, max \(latency.max) µs"))
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { $0.0 + String(repeating: " ", count: width - $0.0.count + 2) + $0.1 }.joined(separator: "\n")
    }
}
