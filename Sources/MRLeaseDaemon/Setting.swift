import Foundation
import MRLeaseGrant
import MRLeaseProtocol

/// One configuration key, the one place it is described: its name (the config file's key, and
/// `MRLEASED_` + its name upper-cased as the environment variable), its type and default as
/// mrleased.conf(5) shows them, whether `mrleased` has a flag for it and that flag's help, the
/// `hello` limit it is reported as, and how a value is read. The parser, `mrleased --help`,
/// `hello`'s test and the man page's test all read `DaemonConfiguration.settings`
/// (systemd's journald-gperf.gperf is the model).
public struct Setting: Sendable {
    public let key: String
    /// What a value is, in the man page's words ("milliseconds, 0 to 600000").
    public let type: String
    /// The default as the man page and Config/mrleased.conf write it ("" for empty).
    public let defaultValue: String
    /// `--key` on the command line, with this help; nil: no flag.
    public let flag: String?
    /// The field of `hello`'s `limits` that reports it; nil: not reported.
    public let hello: String?
    let read: @Sendable (inout DaemonConfiguration, String, Setting.Reader) throws(DaemonConfiguration.Problem) -> Void

    /// `MRLEASED_SOCKET`, `MRLEASED_QUIESCE_MS`, …
    public var variable: String { "MRLEASED_" + key.uppercased().replacingOccurrences(of: "-", with: "_") }

    init(_ key: String, _ type: String, default defaultValue: String, flag: String? = nil, hello: String? = nil,
         read: @escaping @Sendable (inout DaemonConfiguration, String, Setting.Reader) throws(DaemonConfiguration.Problem) -> Void) {
        self.key = key
        self.type = type
        self.defaultValue = defaultValue
        self.flag = flag
        self.hello = hello
        self.read = read
    }

    /// Reads values for one key from one source, every failure naming both.
    struct Reader {
        let key: String
        let source: String

        /// "SOURCE: KEY TEXT" ("mrleased.conf:3: quiesce-ms must be …"); TEXT may start with
        /// ':' to name an item of a list ("lease-others-uids: 'x' is …").
        func problem(_ text: String) -> DaemonConfiguration.Problem {
            .init(description: "\(source): \(key)\(text.hasPrefix(":") ? "" : " ")\(text)")
        }

        func number(_ text: String, radix: Int = 10) throws(DaemonConfiguration.Problem) -> UInt64 {
            guard let value = UInt64(text, radix: radix) else { throw problem("must be a number, got '\(text)'") }
            return value
        }

        /// Every number is range-checked here, before any arithmetic on it (a count beyond
        /// Int, a millisecond figure whose nanoseconds overflow, would trap the daemon later).
        func number(_ text: String, in range: ClosedRange<UInt64>) throws(DaemonConfiguration.Problem) -> UInt64 {
            let value = try number(text)
            guard range.contains(value) else { throw problem("must be \(range.lowerBound) to \(range.upperBound), got \(value)") }
            return value
        }

        func count(_ text: String, min: UInt64 = 1, max: UInt64 = 1 << 32) throws(DaemonConfiguration.Problem) -> Int {
            Int(try number(text, in: min...max))
        }

        /// Names are looked up once, here: a name that does not exist is a typo to report,
        /// not an empty allow-list.
        func ids(_ text: String, lookUp: (String) -> UInt32?) throws(DaemonConfiguration.Problem) -> Set<UInt32> {
            var result: Set<UInt32> = []
            for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
                guard let id = UInt32(item) ?? lookUp(item) else {
                    throw problem(": '\(item)' is neither a number nor a known name (ids or names, separated by commas)")
                }
                result.insert(id)
            }
            return result
        }

        /// Below one packet of the largest size, a client that lags by a single reply would be
        /// disconnected.
        func queueBytes(_ text: String) throws(DaemonConfiguration.Problem) -> UInt64 {
            let bytes = try number(text)
            guard bytes >= UInt64(Codec.maxMessageBytes) else {
                throw problem("must be at least \(Codec.maxMessageBytes) (one packet of the largest size), got \(bytes)")
            }
            return bytes
        }
    }
}

extension DaemonConfiguration {
    /// Every key, in the man page's order.
    public static let settings: [Setting] = [
        Setting("socket", "path", default: Codec.defaultSocketPath, flag: "Listening socket path.") { c, v, _ in c.socketPath = v },
        Setting("socket-mode", "octal mode, 0 to 7777", default: "0660") { c, v, r throws(Problem) in
            let mode = try r.number(v, radix: 8)
            guard mode <= 0o7777 else { throw r.problem("must be an octal mode from 0 to 7777, got '\(v)'") }
            c.socketMode = UInt32(mode)
        },
        Setting("socket-group", "group name or number", default: "") { c, v, _ in c.socketGroup = v.isEmpty ? nil : v },
        Setting("device", "RDMA device name", default: "", flag: "RDMA device name (default: the first).") { c, v, _ in c.device = v.isEmpty ? nil : v },
        // The kernel breaks a lease by force after lease-break-time (45 s by default): a
        // quiesce longer than that would never be waited for.
        Setting("quiesce-ms", "milliseconds, 0 to 600000", default: "100", flag: "Milliseconds owners get to quiesce after a lease break.",
                hello: "quiesceMillis") { c, v, r throws(Problem) in c.quiesceMillis = try r.number(v, in: 0...600_000) },
        Setting("restore-backoff-ms", "milliseconds, 0 to 3600000", default: "500") { c, v, r throws(Problem) in
            c.restoreBackoffMillis = try r.number(v, in: 0...3_600_000)
        },
        Setting("max-connections", "count, 1 to 2^32", default: "256", hello: "maxConnections") { c, v, r throws(Problem) in
            c.maxConnections = try r.count(v)
        },
        Setting("max-connections-per-uid", "count, 1 to 2^32", default: "64", hello: "maxConnectionsPerUid") { c, v, r throws(Problem) in
            c.maxConnectionsPerUID = try r.count(v)
        },
        // 0 regions or grants: that facility is off.
        Setting("max-regions-per-uid", "count, 0 to 2^32", default: "4096", hello: "maxRegionsPerUid") { c, v, r throws(Problem) in
            c.maxRegionsPerUID = try r.count(v, min: 0)
        },
        Setting("max-bytes-per-uid", "bytes, or memlock", default: "memlock", hello: "maxBytesPerUid") { c, v, r throws(Problem) in
            c.maxBytesPerUID = v == "memlock" ? nil : try r.number(v)
        },
        Setting("lease-others-uids", "user names or ids, separated by commas", default: "") { c, v, r throws(Problem) in
            c.leaseOthersUIDs = try r.ids(v) { getpwnam($0)?.pointee.pw_uid }
        },
        Setting("lease-others-groups", "group names or ids, separated by commas", default: "") { c, v, r throws(Problem) in
            c.leaseOthersGroups = try r.ids(v) { getgrnam($0)?.pointee.gr_gid }
        },
        Setting("max-queued-messages", "count, 1 to 2^32", default: "4096") { c, v, r throws(Problem) in c.maxQueuedMessages = try r.count(v) },
        Setting("max-queued-bytes-per-client", "bytes, at least 65536", default: "4194304", hello: "maxQueuedBytes") { c, v, r throws(Problem) in
            c.maxQueuedBytesPerClient = try r.queueBytes(v)
        },
        Setting("max-queued-bytes", "bytes, at least 65536", default: "134217728") { c, v, r throws(Problem) in c.maxQueuedBytes = try r.queueBytes(v) },
        Setting("client-stall-ms", "milliseconds, 10 to 3600000", default: "1000", hello: "clientStallMillis") { c, v, r throws(Problem) in
            c.clientStallMillis = try r.number(v, in: 10...3_600_000)
        },
        Setting("log-level", "trace, debug, info, notice, warning, error or critical", default: "info",
                flag: "Log level: trace, debug, info, notice, warning, error, critical.") { c, v, r throws(Problem) in
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(v) else {
                throw r.problem("must be one of trace, debug, info, notice, warning, error, critical")
            }
            c.logLevel = v
        },
        Setting("listen", "ADDR:PORT, separated by commas", default: "",
                flag: "rdma_cm listener(s) for remote peers: ADDR:PORT[,ADDR:PORT] (port 0: the kernel picks).") { c, v, r throws(Problem) in
            var endpoints: [GrantEndpoint] = []
            for item in v.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
                guard let endpoint = GrantEndpoint(parsing: item) else {
                    throw r.problem(": '\(item)' is not ADDR:PORT or [IPV6]:PORT with a literal address (e.g. 192.0.2.1:7471)")
                }
                endpoints.append(endpoint)
            }
            c.listen = endpoints
        },
        // node_exporter reads only *.prom files from its directory; a relative path would
        // depend on the daemon's working directory.
        Setting("metrics-file", "absolute path ending in .prom", default: "",
                flag: "Write metrics for node_exporter's textfile collector (Prometheus text format) to this .prom file.") { c, v, r throws(Problem) in
            guard v.isEmpty || (v.hasPrefix("/") && v.hasSuffix(".prom") && !v.hasSuffix("/.prom")) else {
                throw r.problem("must be an absolute path ending in .prom (node_exporter's textfile collector reads only *.prom), got '\(v)'")
            }
            c.metricsFile = v.isEmpty ? nil : v
        },
        Setting("metrics-interval-ms", "milliseconds, 100 to 86400000", default: "15000",
                flag: "Milliseconds between writes of the metrics file.") { c, v, r throws(Problem) in
            c.metricsIntervalMillis = try r.number(v, in: 100...86_400_000)
        },
        Setting("odp-prefetch", "yes or no", default: "no") { c, v, r throws(Problem) in
            switch v {
            case "yes", "true", "on", "1": c.odpPrefetch = true
            case "no", "false", "off", "0": c.odpPrefetch = false
            default: throw r.problem("must be yes or no, got '\(v)'")
            }
        },
        Setting("offload-pin-bytes", "bytes, 0 to 2^63", default: "16777216") { c, v, r throws(Problem) in
            c.offloadPinBytes = try r.number(v, in: 0...(1 << 63))
        },
        Setting("pin-slices", "count, 0 to 16", default: "0") { c, v, r throws(Problem) in
            c.pinSlices = try r.count(v, min: 0, max: 16)
        },
        // Reported by `hello` as its own field, `layoutPolicy` (not a limit).
        Setting("layout-policy", "follow or revoke", default: "follow",
                flag: "What an ODP region does when its file's layout changes: follow (its MR and keys stay) or revoke.") { c, v, r throws(Problem) in
            guard let policy = RegionLayoutPolicy(rawValue: v) else { throw r.problem("must be follow or revoke, got '\(v)'") }
            c.layoutPolicy = policy
        },
        Setting("max-grants-per-region", "count, 0 to 32", default: "16", hello: "maxGrantsPerRegion") { c, v, r throws(Problem) in
            c.maxGrantsPerRegion = try r.count(v, min: 0, max: maxGrantsPerRegionLimit)
        },
        Setting("max-grants-per-uid", "count, 0 to 2^32", default: "1024", hello: "maxGrantsPerUid") { c, v, r throws(Problem) in
            c.maxGrantsPerUID = try r.count(v, min: 0)
        },
        Setting("peer-handshake-ms", "milliseconds, 10 to 600000", default: "5000", hello: "peerHandshakeMillis") { c, v, r throws(Problem) in
            c.peerHandshakeMillis = try r.number(v, in: 10...600_000)
        },
    ]

    /// The keys of the config file and of `MRLEASED_*` variables, in the table's order.
    public static var keys: [String] { settings.map(\.key) }

    /// The row of `key`; a key that is not in the table is a programming error in the caller
    /// (flags and tests name keys the table has).
    public static func setting(_ key: String) -> Setting? { settings.first { $0.key == key } }

    /// The help of `key`'s flag, for `mrleased`'s options.
    public static func flagHelp(_ key: String) -> String { setting(key)?.flag ?? "" }
}
