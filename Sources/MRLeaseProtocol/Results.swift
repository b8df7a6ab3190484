/// The `result` of a successful reply; its case matches the request's type.
public enum ReplyResult: Sendable, Equatable {
    case hello(HelloResult)
    case register(Registration)
    /// One registration per range of the request, in its order.
    case registerBatch([Registration])
    case deregister
    case list(RegionList)
    case stats(Statistics)
    case ack
    case verify(Verification)
    case grant(GrantResult)
    case revokeGrant

    public var type: RequestType {
        switch self {
        case .hello: .hello
        case .register: .register
        case .registerBatch: .registerBatch
        case .deregister: .deregister
        case .list: .list
        case .stats: .stats
        case .ack: .ack
        case .verify: .verify
        case .grant: .grant
        case .revokeGrant: .revokeGrant
        }
    }
}

/// What the daemon is and offers, answered to `hello`.
public struct HelloResult: Sendable, Equatable {
    public struct Device: Sendable, Equatable {
        /// The verbs device name ("mlx5_0", "rxe0").
        public var name: String
        public var odpSupported: Bool
        /// The RC operations ODP supports on this device: "SEND", "RECV", "WRITE", "READ",
        /// "ATOMIC", "SRQ_RECV" (from `ibv_query_device_ex`'s `odp_caps.per_transport_caps.rc_odp_caps`).
        public var odpRC: [String]
        /// What the start-up ODP integrity self-test found; nil from a daemon that did not
        /// run it (older ones, or one driven in-process with a stand-in registrar).
        public var odpIntegrity: ODPIntegrityStatus?
        /// The alignment of remote address and length a peer's transfers must keep to land
        /// intact: 4096 where unaligned ODP transfers corrupt, 1 otherwise. nil as above.
        public var transferAlignment: UInt64?
        /// What the self-test saw, in words (which bytes landed where, or why it did not run).
        public var odpIntegrityDetail: String?

        public init(name: String, odpSupported: Bool, odpRC: [String], odpIntegrity: ODPIntegrityStatus? = nil,
                    transferAlignment: UInt64? = nil, odpIntegrityDetail: String? = nil) {
            self.name = name
            self.odpSupported = odpSupported
            self.odpRC = odpRC
            self.odpIntegrity = odpIntegrity
            self.transferAlignment = transferAlignment
            self.odpIntegrityDetail = odpIntegrityDetail
        }
    }

    public struct Limits: Sendable, Equatable {
        public var maxMessageBytes: UInt64
        public var maxRegionsPerUid: UInt64
        public var maxBytesPerUid: UInt64
        /// How long a client has to `ack` a revocation before the daemon revokes anyway.
        public var quiesceMillis: UInt64
        /// The most ranges one `register-batch` takes.
        public var maxBatchRanges: UInt64
        /// Connections the daemon serves at once, and per uid (nil from daemons older than
        /// the per-uid limit).
        public var maxConnections: UInt64?
        public var maxConnectionsPerUid: UInt64?
        /// Bytes of replies and events the daemon queues for a connection that does not read
        /// before it disconnects it (nil from older daemons).
        public var maxQueuedBytes: UInt64?
        /// The most regions one `list` page holds (`limit`'s bound).
        public var maxListLimit: UInt64?
        /// Grants a region may have, and a uid may hold (`quota-exceeded` past them).
        public var maxGrantsPerRegion: UInt64?
        public var maxGrantsPerUid: UInt64?
        /// Milliseconds a peer has from its accepted connect request to ESTABLISHED.
        public var peerHandshakeMillis: UInt64?
        /// Milliseconds a client's socket may stay full, unread, before it is disconnected.
        public var clientStallMillis: UInt64?

        public init(maxMessageBytes: UInt64, maxRegionsPerUid: UInt64, maxBytesPerUid: UInt64, quiesceMillis: UInt64,
                    maxBatchRanges: UInt64 = UInt64(Codec.maxBatchRanges), maxConnections: UInt64? = nil,
                    maxConnectionsPerUid: UInt64? = nil, maxQueuedBytes: UInt64? = nil) {
            self.maxMessageBytes = maxMessageBytes
            self.maxRegionsPerUid = maxRegionsPerUid
            self.maxBytesPerUid = maxBytesPerUid
            self.quiesceMillis = quiesceMillis
            self.maxBatchRanges = maxBatchRanges
            self.maxConnections = maxConnections
            self.maxConnectionsPerUid = maxConnectionsPerUid
            self.maxQueuedBytes = maxQueuedBytes
        }
    }

    /// The version every later message on this connection uses.
    public var version: UInt64
    /// "mrleased 0.4.0".
    public var daemon: String
    public var devices: [Device]
    /// The strategies this daemon can use at all (per file, `register` may still refuse one).
    public var strategies: [RegionStrategy]
    public var limits: Limits
    /// How the daemon notices a layout change through a client's own fd; nil from a daemon
    /// that does not say (one from before issue 9 noticed none).
    public var layoutProtection: LayoutProtection?
    /// Where remote peers connect ("192.0.2.1:7471"); empty when the daemon does not listen,
    /// nil from a daemon older than remote access.
    public var endpoints: [String]?
    /// The layout policy an ODP region gets unless its `register` asks (`layout-policy`); nil
    /// from daemons before layout policies.
    public var layoutPolicy: RegionLayoutPolicy?
    /// This connection gets `revoking-file` events (it asked in `hello`); false from daemons
    /// before them, which send `revoking` per region.
    public var revokingPerFile = false

    public init(version: UInt64, daemon: String, devices: [Device], strategies: [RegionStrategy], limits: Limits,
                layoutProtection: LayoutProtection? = nil, endpoints: [String]? = nil, layoutPolicy: RegionLayoutPolicy? = nil) {
        self.endpoints = endpoints
        self.layoutPolicy = layoutPolicy
        self.version = version
        self.daemon = daemon
        self.devices = devices
        self.strategies = strategies
        self.limits = limits
        self.layoutProtection = layoutProtection
    }
}

/// A new MR over the file, answered to `register`.
public struct Registration: Sendable, Equatable {
    public var region: UInt64
    /// The keys of the daemon's own registration of the region: they name it (new ones mean it
    /// was made again) and reach nothing, since the daemon keeps it in a PD with no QP. Peers
    /// use the keys of a grant's accept (docs/protocol.md §4, §8).
    public var lkey: UInt32
    public var rkey: UInt32
    /// Where the region starts in the daemon's mapping (a grant's accept gives peers the same base).
    public var address: UInt64
    public var length: UInt64
    public var strategy: RegionStrategy
    /// Why this strategy ("device supports ODP for RC READ/WRITE", "ODP not supported; pinned under a write lease").
    public var strategyReason: String
    public var device: String
    public var backing: FileBacking
    /// What the region does when the file's layout changes (nil from daemons before layout
    /// policies: they revoked every region).
    public var layoutPolicy: RegionLayoutPolicy?

    public init(region: UInt64, lkey: UInt32, rkey: UInt32, address: UInt64, length: UInt64,
                strategy: RegionStrategy, strategyReason: String, device: String, backing: FileBacking,
                layoutPolicy: RegionLayoutPolicy? = nil) {
        self.layoutPolicy = layoutPolicy
        self.region = region
        self.lkey = lkey
        self.rkey = rkey
        self.address = address
        self.length = length
        self.strategy = strategy
        self.strategyReason = strategyReason
        self.device = device
        self.backing = backing
    }
}

/// One page of `list`: the regions, and where to continue when more did not fit in a message.
public struct RegionList: Sendable, Equatable {
    public struct Region: Sendable, Equatable {
        public var region: UInt64
        /// The file as "major:minor:inode" of its device and inode, like `FileKey`'s
        /// description ("259:1:1234").
        public var file: String
        public var offset: UInt64
        public var length: UInt64
        public var access: Set<Access>
        public var strategy: RegionStrategy
        public var state: RegionStatus
        /// Present while the MR exists (`registered`, `revoking`).
        public var rkey: UInt32?
        public var lkey: UInt32?
        public var address: UInt64?
        public var tag: String?
        /// The owning connection's process (SO_PEERCRED), in `list` with `all` only.
        public var pid: UInt32?
        /// 1 at registration, one more at each restoration (nil from older daemons).
        public var generation: UInt64?
        /// The region's grants and their peers (nil from daemons older than remote access).
        public var grants: [RegionList.Grant]?
        /// `follow` or `revoke` (nil from daemons before layout policies).
        public var layoutPolicy: RegionLayoutPolicy?

        public init(region: UInt64, file: String, offset: UInt64, length: UInt64, access: Set<Access>,
                    strategy: RegionStrategy, state: RegionStatus, rkey: UInt32? = nil, lkey: UInt32? = nil,
                    address: UInt64? = nil, tag: String? = nil, pid: UInt32? = nil,
                    generation: UInt64? = nil, grants: [RegionList.Grant]? = nil, layoutPolicy: RegionLayoutPolicy? = nil) {
            self.layoutPolicy = layoutPolicy
            self.generation = generation
            self.grants = grants
            self.region = region
            self.file = file
            self.offset = offset
            self.length = length
            self.access = access
            self.strategy = strategy
            self.state = state
            self.rkey = rkey
            self.lkey = lkey
            self.address = address
            self.tag = tag
            self.pid = pid
        }
    }

    public var regions: [Region]
    /// When present, more regions follow: send `list` again with `after` set to this.
    public var next: UInt64?

    public init(regions: [Region], next: UInt64? = nil) {
        self.regions = regions
        self.next = next
    }
}

/// The engine's counters, answered to `stats`.
public struct Statistics: Sendable, Equatable {
    /// A latency histogram in microseconds.
    public struct Latency: Sendable, Equatable {
        /// Most buckets a daemon sends: bucket 63 would start at 2^63 µs.
        public static let maxBuckets = 64

        public var p50: UInt64
        public var p99: UInt64
        public var max: UInt64
        public var count: UInt64
        /// Counts per power-of-two bucket: `buckets[i]` counts latencies in [2^i, 2^(i+1)) µs
        /// (bucket 0 also those under 1 µs), so 2^(i+1) µs bounds bucket i from above; empty
        /// buckets past the last used one are left out. They add up to `count`. nil from a
        /// daemon from before this field.
        public var buckets: [UInt64]?
        /// Every latency added up (µs); nil from a daemon from before this field.
        public var sum: UInt64?

        public init(p50: UInt64, p99: UInt64, max: UInt64, count: UInt64, buckets: [UInt64]? = nil, sum: UInt64? = nil) {
            self.p50 = p50
            self.p99 = p99
            self.max = max
            self.count = count
            self.buckets = buckets
            self.sum = sum
        }

        /// The upper bound of bucket `index`, in µs (exclusive).
        public static func bucketBoundMicros(_ index: Int) -> UInt64 { UInt64(1) << UInt64(index + 1) }
    }

    public var files: UInt64
    public var regions: UInt64
    public var bytesODP: UInt64
    public var bytesPinned: UInt64
    public var leasesHeld: UInt64
    public var breaksHandled: UInt64
    /// From a lease break's signal to the lease released, in microseconds.
    public var breakToUnlockMicros: Latency
    public var clients: UInt64
    /// The daemon's own time per request, by type, from the packet read to the reply handed
    /// to the socket (µs; p50/p99 are power-of-two bucket bounds). Types not yet seen are
    /// absent; a daemon from before this field sends none.
    public var requestMicros: [RequestType: Latency]
    /// Layout changes found without a lease break (through the leased open file: the owner's
    /// fd), each revoking the changed regions of one file; nil from a daemon from before
    /// this field.
    public var layoutChangesHandled: UInt64?
    /// The comparisons of a file's size and extents with its registered regions' made to find
    /// them; nil from a daemon from before this field.
    public var layoutChecks: UInt64?
    /// The `layout` events sent: one per `follow` region whose range changed (nothing revoked,
    /// keys and peers kept); nil from a daemon from before this field.
    public var layoutChangesFollowed: UInt64?
    /// Since the daemon started: regions registered, regions restored after a revocation, and
    /// regions lost (`lost` events); nil from a daemon from before these fields.
    public var registrations: UInt64?
    public var restorations: UInt64?
    public var regionsLost: UInt64?
    /// Grants in force and peers connected through them now (0 without a listener); nil from a
    /// daemon from before these fields.
    public var grants: UInt64?
    public var peers: UInt64?

    public init(files: UInt64, regions: UInt64, bytesODP: UInt64, bytesPinned: UInt64, leasesHeld: UInt64,
                breaksHandled: UInt64, breakToUnlockMicros: Latency, clients: UInt64,
                requestMicros: [RequestType: Latency] = [:], layoutChangesHandled: UInt64? = nil, layoutChecks: UInt64? = nil,
                registrations: UInt64? = nil, restorations: UInt64? = nil, regionsLost: UInt64? = nil,
                grants: UInt64? = nil, peers: UInt64? = nil, layoutChangesFollowed: UInt64? = nil) {
        self.layoutChangesFollowed = layoutChangesFollowed
        self.registrations = registrations
        self.restorations = restorations
        self.regionsLost = regionsLost
        self.grants = grants
        self.peers = peers
        self.requestMicros = requestMicros
        self.layoutChangesHandled = layoutChangesHandled
        self.layoutChecks = layoutChecks
        self.files = files
        self.regions = regions
        self.bytesODP = bytesODP
        self.bytesPinned = bytesPinned
        self.leasesHeld = leasesHeld
        self.breaksHandled = breaksHandled
        self.breakToUnlockMicros = breakToUnlockMicros
        self.clients = clients
    }
}

/// The file's extent map now against the one recorded at registration, answered to `verify`.
public struct Verification: Sendable, Equatable {
    public var layout: LayoutStatus
    public var extentsBefore: UInt64
    public var extentsAfter: UInt64
    /// `layout` as a boolean: true unless known to be unchanged.
    public var layoutChanged: Bool { layout.mayHaveChanged }

    public init(layout: LayoutStatus, extentsBefore: UInt64, extentsAfter: UInt64) {
        self.layout = layout
        self.extentsBefore = extentsBefore
        self.extentsAfter = extentsAfter
    }

    public init(layoutChanged: Bool, extentsBefore: UInt64, extentsAfter: UInt64) {
        self.init(layout: layoutChanged ? .changed : .unchanged, extentsBefore: extentsBefore, extentsAfter: extentsAfter)
    }
}
