// Remote access on the wire: `grant` and `revoke-grant`, their results, the peer events, and
// what `list` shows of a region's grants. docs/protocol.md §"Remote access" is the contract.

extension Request {
    /// Makes one of the connection's regions reachable by remote peers through the daemon's
    /// rdma_cm listener: the reply's descriptor is the credential a peer connects with.
    public struct Grant: Sendable, Equatable {
        public var region: UInt64
        /// What peers may do; nil: everything the region allows. Must be a subset of the region's.
        public var access: Set<Access>?
        /// The grant ends this long after it was made; nil: when revoked or when the
        /// connection that made it ends.
        public var expiresInMillis: UInt64?
        /// Peers connected at once; nil: 1.
        public var maxPeers: UInt64?

        public init(region: UInt64, access: Set<Access>? = nil, expiresInMillis: UInt64? = nil, maxPeers: UInt64? = nil) {
            self.region = region
            self.access = access
            self.expiresInMillis = expiresInMillis
            self.maxPeers = maxPeers
        }

        /// The most peers one grant admits (each is a QP and a CQ in the daemon).
        public static let maxPeersLimit: UInt64 = 1024
        /// The longest expiry: ten years (of 365 days). Bounded so that the deadline in
        /// nanoseconds can never overflow (2^64 ns is 584 years).
        public static let maxExpiresInMillis: UInt64 = 315_360_000_000

        init(_ fields: Fields) throws(ProtocolError) {
            region = try fields.uint64("region")
            if fields.object["access"] != nil {
                let rights = try fields.accessList("access")
                guard !rights.isEmpty else { throw .invalid("access", "must list at least one of read, write, atomic, or be left out") }
                access = rights
            } else {
                access = nil
            }
            expiresInMillis = try fields.uint64IfPresent("expiresInMillis")
            if let expiresInMillis, !(1...Self.maxExpiresInMillis).contains(expiresInMillis) {
                throw .invalid("expiresInMillis", "must be 1 to \(Self.maxExpiresInMillis) (ten years), not \(expiresInMillis); leave it out for no expiry")
            }
            maxPeers = try fields.uint64IfPresent("maxPeers")
            if let maxPeers, !(1...Self.maxPeersLimit).contains(maxPeers) {
                throw .invalid("maxPeers", "must be 1 to \(Self.maxPeersLimit), not \(maxPeers)")
            }
        }

        func write(to object: inout ObjectWriter) {
            object.set("region", .integer(region))
            object.set("access", access?.wire)
            object.set("expiresInMillis", expiresInMillis.map(JSONValue.integer))
            object.set("maxPeers", maxPeers.map(JSONValue.integer))
        }
    }
}

/// A new grant, answered to `grant`.
public struct GrantResult: Sendable, Equatable {
    public var grant: UInt64
    public var region: UInt64
    /// The credential (base64url, starts "mrlg"): give it only to the peer. docs/protocol.md §8
    /// has its bytes.
    public var descriptor: String
    /// Where peers connect, "192.0.2.1:7471" or "[fd00::1]:7471".
    public var endpoint: String
    public var access: Set<Access>
    public var maxPeers: UInt64
    public var expiresInMillis: UInt64?
    /// Every transfer's remote offset and length must be a multiple of this (4096 where the
    /// device's ODP copies are page-bound, 1 otherwise).
    public var alignment: UInt64

    public init(grant: UInt64, region: UInt64, descriptor: String, endpoint: String, access: Set<Access>,
                maxPeers: UInt64, expiresInMillis: UInt64? = nil, alignment: UInt64) {
        self.grant = grant
        self.region = region
        self.descriptor = descriptor
        self.endpoint = endpoint
        self.access = access
        self.maxPeers = maxPeers
        self.expiresInMillis = expiresInMillis
        self.alignment = alignment
    }

    init(_ f: Fields) throws(ProtocolError) {
        grant = try f.uint64("grant")
        region = try f.uint64("region")
        descriptor = try f.string("descriptor")
        endpoint = try f.string("endpoint")
        access = try f.accessSet("access")
        maxPeers = try f.uint64("maxPeers")
        expiresInMillis = try f.uint64IfPresent("expiresInMillis")
        alignment = try f.uint64("alignment")
    }

    var json: JSONValue {
        var o = ObjectWriter()
        o.set("grant", .integer(grant))
        o.set("region", .integer(region))
        o.set("descriptor", .string(descriptor))
        o.set("endpoint", .string(endpoint))
        o.set("access", access.wire)
        o.set("maxPeers", .integer(maxPeers))
        o.set("expiresInMillis", expiresInMillis.map(JSONValue.integer))
        o.set("alignment", .integer(alignment))
        return o.value
    }
}

/// Why a peer's connection ended, in `peer-disconnected`.
public enum PeerDisconnectReason: String, Sendable, Hashable, CaseIterable {
    /// The peer disconnected (or its side of the connection failed).
    case peer
    /// The region is being revoked (lease break or layout change): the peer reconnects and is
    /// admitted again once the region is restored.
    case revoking
    /// The owner ended the grant (`revoke-grant`) or it expired.
    case grantEnded = "grant-ended"
    /// The region was deregistered or lost.
    case regionGone = "region-gone"
    /// The daemon is stopping.
    case shutdown
}

extension Event {
    /// A peer connected to one of the region's grants.
    public struct PeerConnected: Sendable, Equatable {
        public var region: UInt64
        public var grant: UInt64
        /// The daemon's id for this connection (unique for the daemon's life).
        public var peer: UInt64
        /// The peer's address and port as rdma_cm saw them.
        public var address: String
        /// The region's generation the peer was given keys for.
        public var generation: UInt64

        public init(region: UInt64, grant: UInt64, peer: UInt64, address: String, generation: UInt64) {
            self.region = region
            self.grant = grant
            self.peer = peer
            self.address = address
            self.generation = generation
        }
    }

    public struct PeerDisconnected: Sendable, Equatable {
        public var region: UInt64
        public var grant: UInt64
        public var peer: UInt64
        public var reason: PeerDisconnectReason

        public init(region: UInt64, grant: UInt64, peer: UInt64, reason: PeerDisconnectReason) {
            self.region = region
            self.grant = grant
            self.peer = peer
            self.reason = reason
        }
    }
}

extension RegionList {
    /// One grant of a region, as `list` shows it: never its secret or descriptor.
    public struct Grant: Sendable, Equatable {
        public struct Peer: Sendable, Equatable {
            public var peer: UInt64
            public var address: String
            public var generation: UInt64

            public init(peer: UInt64, address: String, generation: UInt64) {
                self.peer = peer
                self.address = address
                self.generation = generation
            }
        }

        public var grant: UInt64
        public var access: Set<Access>
        public var maxPeers: UInt64
        /// Milliseconds left before it expires; nil: no expiry.
        public var expiresInMillis: UInt64?
        /// Connected peers, lowest ids first, at most `maxListedPeers` of them (`connected`
        /// counts them all), so a region's entry always fits in one `list` page.
        public var peers: [Peer]
        /// Peers connected (ESTABLISHED), all of them.
        public var connected: UInt64
        /// Handshakes under way: each holds a slot until it completes or times out
        /// (`peer-handshake-ms`). Slots taken = `connected` + `connecting`.
        public var connecting: UInt64

        /// The most peers `list` names per grant.
        public static let maxListedPeers = 8

        public init(grant: UInt64, access: Set<Access>, maxPeers: UInt64, expiresInMillis: UInt64? = nil, peers: [Peer] = [],
                    connected: UInt64? = nil, connecting: UInt64 = 0) {
            self.grant = grant
            self.access = access
            self.maxPeers = maxPeers
            self.expiresInMillis = expiresInMillis
            self.peers = peers
            self.connected = connected ?? UInt64(peers.count)
            self.connecting = connecting
        }

        init(_ f: Fields) throws(ProtocolError) {
            grant = try f.uint64("grant")
            access = try f.accessSet("access")
            maxPeers = try f.uint64("maxPeers")
            expiresInMillis = try f.uint64IfPresent("expiresInMillis")
            peers = []
            for p in try f.objects("peers") {
                peers.append(Peer(peer: try p.uint64("peer"), address: try p.string("address"), generation: try p.uint64("generation")))
            }
            // Older daemons sent neither count: then every peer was listed, and connecting
            // ones among them.
            connected = try f.uint64IfPresent("connected") ?? UInt64(peers.count)
            connecting = try f.uint64IfPresent("connecting") ?? 0
        }

        var json: JSONValue {
            var o = ObjectWriter()
            o.set("grant", .integer(grant))
            o.set("access", access.wire)
            o.set("maxPeers", .integer(maxPeers))
            o.set("expiresInMillis", expiresInMillis.map(JSONValue.integer))
            o.set("peers", .array(peers.map { peer in
                var p = ObjectWriter()
                p.set("peer", .integer(peer.peer))
                p.set("address", .string(peer.address))
                p.set("generation", .integer(peer.generation))
                return p.value
            }))
            o.set("connected", .integer(connected))
            o.set("connecting", .integer(connecting))
            return o.value
        }
    }
}
