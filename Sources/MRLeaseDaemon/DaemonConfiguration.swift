import Foundation
import MRLeaseGrant
import MRLeasePolicy
import MRLeaseProtocol

/// The daemon's settings: documented defaults, then the config file, then the environment,
/// then command-line flags (each overriding the one before).
public struct DaemonConfiguration: Sendable, Equatable {
    public var socketPath = "/run/mrleased/mrleased.sock"
    /// Permissions of the socket file: who may connect at all. 0660 with `socketGroup`, as
    /// mrleased.socket has it: through the daemon a client gets leases and pinned pages, a
    /// power for RDMA users, not for every local account.
    public var socketMode: UInt32 = 0o660
    /// The socket file's group, by name or number; nil = the daemon's own group.
    public var socketGroup: String?
    /// RDMA device name; nil = the first device.
    public var device: String?
    /// How long owners get to quiesce after a lease break before their MRs go.
    public var quiesceMillis: UInt64 = 100
    /// Wait after unlocking before re-taking the lease when no close event comes.
    public var restoreBackoffMillis: UInt64 = 500
    public var maxConnections = 256
    /// Connections one uid may hold, so that one user cannot take every slot.
    public var maxConnectionsPerUID = 64
    /// Uids and gids (written as numbers or names) whose clients may register files they do
    /// not own, which the daemon must then lease for them (what CAP_LEASE is to the kernel).
    /// Root always may.
    public var leaseOthersUIDs: Set<UInt32> = []
    public var leaseOthersGroups: Set<UInt32> = []
    public var maxRegionsPerUID = 4096
    /// Bytes of regions per uid; nil = the caller's own RLIMIT_MEMLOCK (read from
    /// /proc/PID/limits at connect): a client cannot make the daemon hold more than it could.
    public var maxBytesPerUID: UInt64?
    /// Events and replies queued for a client that does not read; past this it is disconnected.
    public var maxQueuedMessages = 4096
    /// Bytes of replies and events queued for one client that does not read; past this it is
    /// disconnected, as past `maxQueuedMessages`.
    public var maxQueuedBytesPerClient: UInt64 = 4 << 20
    /// Bytes queued for all clients together; the client whose packet would pass it is
    /// disconnected. Bounds the daemon's memory whatever the number of clients.
    public var maxQueuedBytes: UInt64 = 128 << 20
    /// Milliseconds a client's socket may stay full (replies and events waiting, none taken)
    /// before it is disconnected. While its socket is full its requests are not read.
    public var clientStallMillis: UInt64 = 1_000
    public var logLevel = "info"
    /// Where the rdma_cm listener for remote peers binds (IPv4/IPv6 literals; port 0: one the
    /// kernel picks). Empty: no listener, and `grant` is refused.
    public var listen: [GrantEndpoint] = []
    /// Where to write the metrics for node_exporter's textfile collector (an absolute path
    /// ending in `.prom`), and how often; nil: no file.
    public var metricsFile: String?
    public var metricsIntervalMillis: UInt64 = 15_000
    /// Prefetch each new or restored ODP MR's pages (`ibv_advise_mr`), off by default.
    public var odpPrefetch = false
    /// Grants one region may have at once (each can admit `maxPeers` peers). At most
    /// `maxGrantsPerRegionLimit`, so a region's `list` entry always fits in one page.
    public var maxGrantsPerRegion = 16
    /// Grants one uid may hold at once, across its connections.
    public var maxGrantsPerUID = 1024
    /// Milliseconds a peer has from its connect request being accepted to ESTABLISHED; then
    /// its cm_id is destroyed and its grant slot is free again.
    public var peerHandshakeMillis: UInt64 = 5_000

    /// The most `max-grants-per-region` may be: 32 grants with `list`'s 8 peers each fit in
    /// one message beside the region.
    public static let maxGrantsPerRegionLimit: UInt64 = 32

    public init() {}

    /// The keys of the config file and of `MRLEASED_*` variables (upper-cased, '-' → '_').
    public static let keys = ["socket", "socket-mode", "socket-group", "device", "quiesce-ms", "restore-backoff-ms",
                              "max-connections", "max-connections-per-uid", "max-regions-per-uid", "max-bytes-per-uid",
                              "lease-others-uids", "lease-others-groups",
                              "max-queued-messages", "max-queued-bytes-per-client", "max-queued-bytes", "client-stall-ms", "log-level", "listen",
                              "metrics-file", "metrics-interval-ms", "odp-prefetch",
                              "max-grants-per-region", "max-grants-per-uid", "peer-handshake-ms"]

    /// Who may have the daemon lease files they do not own.
    public var leaseOthers: LeaseOthersRule { LeaseOthersRule(uids: leaseOthersUIDs, groups: leaseOthersGroups) }

    public struct Problem: Error, Equatable, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Applies `key = value` lines (`#` starts a comment). Unknown keys and bad values are
    /// errors naming the line: a typo must not silently leave a default in place.
    public mutating func apply(file text: String, name: String) throws(Problem) {
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
            // Empty sides are kept: `device =` means "the first device", not a malformed line.
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { throw Problem(description: "\(name):\(number + 1): expected 'key = value', got '\(line)'") }
            try set(parts[0], parts[1], source: "\(name):\(number + 1)")
        }
    }

    /// Applies `MRLEASED_SOCKET`, `MRLEASED_QUIESCE_MS`, … where set.
    public mutating func apply(environment: [String: String]) throws(Problem) {
        for key in Self.keys {
            let variable = "MRLEASED_" + key.uppercased().replacingOccurrences(of: "-", with: "_")
            if let value = environment[variable] { try set(key, value, source: variable) }
        }
    }

    public mutating func set(_ key: String, _ value: String, source: String) throws(Problem) {
        func number(_ text: String, radix: Int = 10) throws(Problem) -> UInt64 {
            guard let value = UInt64(text, radix: radix) else { throw Problem(description: "\(source): \(key) must be a number, got '\(text)'") }
            return value
        }
        // Every number is range-checked here, before any arithmetic on it (a count beyond
        // Int, a millisecond figure whose nanoseconds overflow, would trap the daemon later).
        func number(_ text: String, in range: ClosedRange<UInt64>) throws(Problem) -> UInt64 {
            let value = try number(text)
            guard range.contains(value) else { throw Problem(description: "\(source): \(key) must be \(range.lowerBound) to \(range.upperBound), got \(value)") }
            return value
        }
        func count(_ text: String, min: UInt64 = 1, max: UInt64 = 1 << 32) throws(Problem) -> Int { Int(try number(text, in: min...max)) }
        // Names are looked up once, here: a name that does not exist is a typo to report, not
        // an empty allow-list.
        func ids(_ text: String, lookUp: (String) -> UInt32?) throws(Problem) -> Set<UInt32> {
            var result: Set<UInt32> = []
            for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
                guard let id = UInt32(item) ?? lookUp(item) else {
                    throw Problem(description: "\(source): \(key): '\(item)' is neither a number nor a known name (ids or names, separated by commas)")
                }
                result.insert(id)
            }
            return result
        }
        switch key {
        case "socket": socketPath = value
        case "socket-mode": socketMode = UInt32(try number(value, radix: 8))
        case "socket-group": socketGroup = value.isEmpty ? nil : value
        case "max-connections-per-uid": maxConnectionsPerUID = try count(value)
        case "lease-others-uids": leaseOthersUIDs = try ids(value) { getpwnam($0)?.pointee.pw_uid }
        case "lease-others-groups": leaseOthersGroups = try ids(value) { getgrnam($0)?.pointee.gr_gid }
        case "max-queued-bytes-per-client", "max-queued-bytes":
            // Below one packet of the largest size, a client that lags by a single reply
            // would be disconnected.
            let bytes = try number(value)
            guard bytes >= UInt64(Codec.maxMessageBytes) else {
                throw Problem(description: "\(source): \(key) must be at least \(Codec.maxMessageBytes) (one packet of the largest size), got \(bytes)")
            }
            if key == "max-queued-bytes" { maxQueuedBytes = bytes } else { maxQueuedBytesPerClient = bytes }
        case "device": device = value.isEmpty ? nil : value
        // The kernel breaks a lease by force after lease-break-time (45 s by default): a
        // quiesce longer than that would never be waited for.
        case "quiesce-ms": quiesceMillis = try number(value, in: 0...600_000)
        case "restore-backoff-ms": restoreBackoffMillis = try number(value, in: 0...3_600_000)
        case "max-connections": maxConnections = try count(value)
        // 0 regions or grants: that facility is off.
        case "max-regions-per-uid": maxRegionsPerUID = try count(value, min: 0)
        case "max-bytes-per-uid": maxBytesPerUID = value == "memlock" ? nil : try number(value)
        case "max-queued-messages": maxQueuedMessages = try count(value)
        case "client-stall-ms": clientStallMillis = try number(value, in: 10...3_600_000)
        case "max-grants-per-region": maxGrantsPerRegion = try count(value, min: 0, max: Self.maxGrantsPerRegionLimit)
        case "max-grants-per-uid": maxGrantsPerUID = try count(value, min: 0)
        case "peer-handshake-ms": peerHandshakeMillis = try number(value, in: 10...600_000)
        case "listen":
            var endpoints: [GrantEndpoint] = []
            for item in value.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
                guard let endpoint = GrantEndpoint(parsing: item) else {
                    throw Problem(description: "\(source): listen: '\(item)' is not ADDR:PORT or [IPV6]:PORT with a literal address (e.g. 192.0.2.1:7471)")
                }
                endpoints.append(endpoint)
            }
            listen = endpoints
        case "metrics-file":
            // node_exporter reads only *.prom files from its directory; a relative path would
            // depend on the daemon's working directory.
            guard value.isEmpty || (value.hasPrefix("/") && value.hasSuffix(".prom") && !value.hasSuffix("/.prom")) else {
                throw Problem(description: "\(source): metrics-file must be an absolute path ending in .prom (node_exporter's textfile collector reads only *.prom), got '\(value)'")
            }
            metricsFile = value.isEmpty ? nil : value
        case "metrics-interval-ms":
            metricsIntervalMillis = try number(value, in: 100...86_400_000)
        case "odp-prefetch":
            switch value {
            case "yes", "true", "on", "1": odpPrefetch = true
            case "no", "false", "off", "0": odpPrefetch = false
            default: throw Problem(description: "\(source): odp-prefetch must be yes or no, got '\(value)'")
            }
        case "log-level":
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(value) else {
                throw Problem(description: "\(source): log-level must be one of trace, debug, info, notice, warning, error, critical")
            }
            logLevel = value
        default:
            throw Problem(description: "\(source): unknown key '\(key)' (known: \(Self.keys.joined(separator: ", ")))")
        }
    }
}
