import Foundation
import MRLeaseGrant
import MRLeasePolicy
import MRLeaseProtocol

/// The daemon's settings: documented defaults, then the config file, then the environment,
/// then command-line flags (each overriding the one before).
public struct DaemonConfiguration: Sendable, Equatable {
    public var socketPath = Codec.defaultSocketPath
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
    /// Pinned registrations of at least this many bytes are made on a worker thread, so the
    /// loop goes on serving other clients and lease breaks meanwhile; 0: never.
    public var offloadPinBytes: UInt64 = 16 << 20
    /// MRs a pin of 1 GiB or more is made as, pinned from as many threads at once; 0: the
    /// CPUs less one, at most 4.
    public var pinSlices = 0
    /// What an ODP region does when its file's layout changes, unless its `register` asks:
    /// `follow` (its MR stays) or `revoke` (the lease protocol). Pinned regions always revoke.
    /// `follow` by default: proven for every layout change on ext4, xfs and both FS-DAX with
    /// real RDMA (docs/kernel-matrix.md, "Layout policy follow").
    public var layoutPolicy: RegionLayoutPolicy = .follow
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
        for setting in Self.settings {
            if let value = environment[setting.variable] { try set(setting.key, value, source: setting.variable) }
        }
    }

    /// Reads `value` for `key` as its row in `settings` says.
    public mutating func set(_ key: String, _ value: String, source: String) throws(Problem) {
        guard let setting = Self.setting(key) else {
            throw Problem(description: "\(source): unknown key '\(key)' (known: \(Self.keys.joined(separator: ", ")))")
        }
        try setting.read(&self, value, Setting.Reader(key: key, source: source))
    }
}
