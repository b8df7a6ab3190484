import MRLeaseEngine
import MRLeaseGrant
import MRLeasePolicy

/// One grant: who made it, on which region, what a peer may do, and its secret. The secret
/// never leaves this record except into the descriptor sent to the owner.
final class GrantRecord {
    let id: UInt64
    let owner: OwnerID
    let region: RegionID
    let secret: GrantSecret
    let access: GrantAccess
    let maxPeers: Int
    /// Monotonic nanoseconds; nil: no expiry.
    let expiresAt: UInt64?
    let endpoint: GrantEndpoint
    /// The grant's PD and MR over the region's current registration, made at the first
    /// connect of each generation; withdrawn (QPs, MR, PD) before that registration goes.
    var exposure: GrantExposure?
    /// Connected and connecting peers, by peer id.
    var peers: [UInt64: PeerConnection] = [:]

    init(id: UInt64, owner: OwnerID, region: RegionID, secret: GrantSecret, access: GrantAccess, maxPeers: Int,
         expiresAt: UInt64?, endpoint: GrantEndpoint) {
        self.id = id
        self.owner = owner
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
    /// Ended grants, so a late connect hears why (revoked, expired) rather than "unknown".
    /// Grant ids are never reused; the oldest ends are forgotten past `endedLimit`.
    private var ended: [UInt64: GrantEnd] = [:]
    private var endedOrder: [UInt64] = []
    static let endedLimit = 4096
    private(set) var nextID: UInt64 = 1

    mutating func makeID() -> UInt64 {
        defer { nextID += 1 }
        return nextID
    }

    mutating func add(_ grant: GrantRecord) {
        grants[grant.id] = grant
        onRegion[grant.region, default: []].insert(grant.id)
        ofOwner[grant.owner, default: []].insert(grant.id)
    }

    /// Removes a live grant and remembers why it ended.
    @discardableResult
    mutating func end(_ id: UInt64, _ why: GrantEnd) -> GrantRecord? {
        guard let grant = grants.removeValue(forKey: id) else { return nil }
        onRegion[grant.region]?.remove(id)
        if onRegion[grant.region]?.isEmpty == true { onRegion[grant.region] = nil }
        ofOwner[grant.owner]?.remove(id)
        if ofOwner[grant.owner]?.isEmpty == true { ofOwner[grant.owner] = nil }
        ended[id] = why
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
    /// as received (zero padding included); the secret is compared in constant time.
    func admit(_ request: [UInt8], now: UInt64) -> Admission {
        let connect: ConnectPrivateData
        do { connect = try ConnectPrivateData(decoding: request) } catch {
            if case .unsupportedVersion = error.problem { return .rejected(.unsupportedVersion) }
            return .rejected(.malformed)
        }
        guard let grant = grants[connect.grantID] else {
            return .rejected(ended[connect.grantID]?.rejectReason ?? RejectReason.unknownGrant)
        }
        // The secret before anything else about the grant: a peer without it learns nothing
        // about the grant's state.
        guard grant.secret == connect.secret else { return .rejected(.badSecret) }
        if let expiry = grant.expiresAt, now >= expiry { return .rejected(.expired) }
        if grant.peers.count >= grant.maxPeers { return .rejected(.tooManyPeers) }
        return .admitted(grant)
    }
}
