import MRLeaseEngine
import MRLeaseGrant
import MRLeasePolicy

/// One grant: who made it, on which region, what a peer may do, and its secret. The secret
/// never leaves this record except into the descriptor sent to the owner. Facts only: its
/// peers and its exposure are the peer service's (`PeerService.peers`, `.exposures`).
final class GrantRecord {
    let id: UInt64
    let owner: OwnerID
    /// The owner's uid: `max-grants-per-uid` counts grants per uid, across connections.
    let uid: UInt32
    let region: RegionID
    let secret: GrantSecret
    let access: GrantAccess
    let maxPeers: Int
    /// Monotonic nanoseconds; nil: no expiry.
    let expiresAt: UInt64?
    let endpoint: GrantEndpoint

    init(id: UInt64, owner: OwnerID, uid: UInt32 = 0, region: RegionID, secret: GrantSecret, access: GrantAccess, maxPeers: Int,
         expiresAt: UInt64?, endpoint: GrantEndpoint) {
        self.id = id
        self.owner = owner
        self.uid = uid
        self.region = region
        self.secret = secret
        self.access = access
        self.maxPeers = maxPeers
        self.expiresAt = expiresAt
        self.endpoint = endpoint
    }

    var descriptor: GrantDescriptor { GrantDescriptor(endpoint: endpoint, grantID: id, secret: secret) }
}

/// Why a grant ended: what a later connect with its descriptor is told.
enum GrantEnd: Sendable {
    case revoked, expired, regionGone, ownerGone

    var rejectReason: RejectReason {
        switch self {
        case .revoked: .revoked
        case .expired: .expired
        case .regionGone: .regionLost
        // docs/protocol.md §8: a grant that ended with its client's connection is unknown.
        case .ownerGone: .unknownGrant
        }
    }
}

/// What is kept of a grant after it ended: why, and its secret, so that a connect naming it
/// is still checked against the secret before it hears why (a wrong secret learns nothing).
struct EndedGrant {
    let why: GrantEnd
    let secret: GrantSecret
}

/// A grant, or why a connect request may not have one.
enum Admission {
    case admitted(GrantRecord)
    case rejected(RejectReason)
}

/// The grants the daemon holds, and the rules for admitting a connect request to one. Pure:
/// no verbs, no clock of its own (callers pass `now`), so the rules are tested on the host.
struct GrantBook {
    private(set) var grants: [UInt64: GrantRecord] = [:]
    /// The live grants of each region and of each owner: `list` asks per region, and a
    /// revocation per file, without walking every grant.
    private var onRegion: [RegionID: Set<UInt64>] = [:]
    private var ofOwner: [OwnerID: Set<UInt64>] = [:]
    /// Live grants per uid (`max-grants-per-uid`).
    private var countOfUID: [UInt32: Int] = [:]
    /// Ended grants with their secrets, so a late connect with the right secret hears why
    /// (revoked, expired) rather than "unknown". The oldest ends are forgotten past `endedLimit`
    /// (a connect naming one then hears `unknown-grant`, as for an id that never existed).
    private var ended: [UInt64: EndedGrant] = [:]
    private var endedOrder: [UInt64] = []
    static let endedLimit = 4096
    /// Where grant ids come from: random by default, so an id tells nothing about how many
    /// grants exist or which ended how; tests pass a counter.
    private var nextRandom: () throws(KernelRandomError) -> UInt64

    init(ids: @escaping () throws(KernelRandomError) -> UInt64 = GrantBook.randomID) {
        nextRandom = ids
    }

    /// A random 64-bit id from getrandom(2), never 0.
    static func randomID() throws(KernelRandomError) -> UInt64 {
        try KernelRandom.uint64()
    }

    /// A new grant id: random, non-zero, and neither live nor remembered as ended (ids are
    /// never reused while the daemon remembers them).
    mutating func makeID() throws(KernelRandomError) -> UInt64 {
        while true {
            let id = try nextRandom()
            if id != 0, grants[id] == nil, ended[id] == nil { return id }
        }
    }

    mutating func add(_ grant: GrantRecord) {
        grants[grant.id] = grant
        onRegion[grant.region, default: []].insert(grant.id)
        ofOwner[grant.owner, default: []].insert(grant.id)
        countOfUID[grant.uid, default: 0] += 1
    }

    /// Live grants on `region`.
    func count(on region: RegionID) -> Int { onRegion[region]?.count ?? 0 }

    /// Live grants of `uid`, across its connections.
    func count(ofUID uid: UInt32) -> Int { countOfUID[uid] ?? 0 }

    /// Removes a live grant and remembers why it ended.
    @discardableResult
    mutating func end(_ id: UInt64, _ why: GrantEnd) -> GrantRecord? {
        guard let grant = grants.removeValue(forKey: id) else { return nil }
        onRegion[grant.region]?.remove(id)
        if onRegion[grant.region]?.isEmpty == true { onRegion[grant.region] = nil }
        ofOwner[grant.owner]?.remove(id)
        if ofOwner[grant.owner]?.isEmpty == true { ofOwner[grant.owner] = nil }
        countOfUID[grant.uid]? -= 1
        if countOfUID[grant.uid] == 0 { countOfUID[grant.uid] = nil }
        ended[id] = EndedGrant(why: why, secret: grant.secret)
        endedOrder.append(id)
        if endedOrder.count > Self.endedLimit {
            let forgotten = endedOrder.count - Self.endedLimit
            for old in endedOrder.prefix(forgotten) { ended[old] = nil }
            endedOrder.removeFirst(forgotten)
        }
        return grant
    }

    func grants(of owner: OwnerID) -> [GrantRecord] {
        (ofOwner[owner] ?? []).sorted().compactMap { grants[$0] }
    }

    func grants(on region: RegionID) -> [GrantRecord] {
        (onRegion[region] ?? []).sorted().compactMap { grants[$0] }
    }

    /// The grant a connect request may use, or why not. `request` is the private data exactly
    /// as received (zero padding included); the secret is compared in constant time. `taken`:
    /// the slots a grant's peers hold (connected and connecting), as the peer service counts.
    func admit(_ request: [UInt8], now: UInt64, taken: (UInt64) -> Int) -> Admission {
        let connect: ConnectPrivateData
        do { connect = try ConnectPrivateData(decoding: request) } catch {
            if case .unsupportedVersion = error.problem { return .rejected(.unsupportedVersion) }
            return .rejected(.malformed)
        }
        // The secret before anything else about the grant, live or ended: a peer without it
        // learns nothing about the grant's state (docs/remote-access.md).
        guard let grant = grants[connect.grantID] else {
            guard let end = ended[connect.grantID] else { return .rejected(.unknownGrant) }
            return .rejected(end.secret == connect.secret ? end.why.rejectReason : .badSecret)
        }
        guard grant.secret == connect.secret else { return .rejected(.badSecret) }
        if let expiry = grant.expiresAt, now >= expiry { return .rejected(.expired) }
        // Established peers and handshakes under way both hold a slot; a handshake that does
        // not complete in time gives its slot back (PeerService.expireHandshakes).
        if taken(grant.id) >= grant.maxPeers { return .rejected(.tooManyPeers) }
        return .admitted(grant)
    }
}
