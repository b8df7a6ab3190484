import Glibc
import Logging
import MRLeaseEngine
import MRLeaseGrant
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

/// The rdma_cm side of remote access: the listeners, the grants (`GrantBook`), and every
/// peer's connection. Driven by the daemon's loop (its channel is one more source); every
/// call returns the events owners must hear instead of sending them.
final class PeerService {
    /// rdma_cm and verbs: the device's (`DevicePeerVerbs`), or a recording stand-in.
    let verbs: any PeerVerbs
    /// The bound listeners and the endpoints they really have (port 0 resolved).
    private(set) var listeners: [(endpoint: GrantEndpoint, id: any PeerCMID)] = []
    var book = GrantBook()
    /// Every peer connected or connecting, by its rdma_cm id: the one peer index (a grant's
    /// peers are `peers(of:)`).
    var peers: [ObjectIdentifier: PeerConnection] = [:]
    /// Each grant's PD and MR over its region's current registration, made at the first
    /// connect of each generation; withdrawn by the engine before that registration goes.
    var exposures: [UInt64: GrantExposure] = [:]
    /// What a revocation stopped but did not yet take down, by region: the peers' connections
    /// (disconnected: their QPs in the error state) and the grants' exposures (their MRs
    /// deregistered). Their QPs, ids and PDs go once the region is revoked, after the unlock.
    private var retiring: [RegionID: (owner: OwnerID, peers: [PeerConnection], exposures: [GrantExposure])] = [:]
    /// Connect requests held unanswered while their region is revoked, by region: answered
    /// when it is restored (admitted) or gone, or rejected `region-revoking` once
    /// `limits.holdNanos` have passed (docs/protocol.md §8). At most a grant's free slots each.
    var held: [RegionID: [HeldConnect]] = [:]
    /// Where grants' PDs and MRs are made: a worker thread for a device, inline for stand-ins.
    var maker: ExposureMaker
    /// The job making each grant's exposure for its region's current generation, with the
    /// connect requests waiting for it (`PeerService+Admission`).
    var registering: [UInt64: ExposureJob] = [:]
    var nextPeer: UInt64 = 1
    /// The alignment the device's ODP copies need (the start-up self-test's); 1 for pinned.
    let odpAlignment: UInt32
    let logger: Logger
    /// How long a peer is told to wait before retrying while its region is revoked.
    let revokingRetryMillis: UInt32
    /// The port's active MTU: where ODP copies are page-bound (odpAlignment > 1), a packet
    /// that does not start a page is corrupted, so page-aligned transfers are enough only when
    /// every packet is a whole page (MTU 4096).
    let activeMTU: Int

    let limits: PeerLimits

    /// The responder resources (incoming READs and atomics in flight) a peer may ask for.
    static let maxResponderResources: UInt8 = 16

    init(verbs: any PeerVerbs, maker: ExposureMaker, endpoints: [GrantEndpoint], odpAlignment: UInt32, revokingRetryMillis: UInt32,
         limits: PeerLimits = PeerLimits(), logger: Logger) throws(PeerSetupError) {
        self.verbs = verbs
        self.maker = maker
        self.limits = limits
        self.odpAlignment = odpAlignment
        self.revokingRetryMillis = revokingRetryMillis
        self.logger = logger
        activeMTU = verbs.activeMTU
        for endpoint in endpoints {
            let (id, port, device): (any PeerCMID, UInt16, String?)
            do { (id, port, device) = try verbs.listen(on: endpoint) } catch { throw .verbs(error) }
            // Peers' QPs must be made in this device's PDs: a listener on another device's
            // address would accept connections no QP of ours can serve.
            guard device == verbs.deviceName else {
                do { try id.destroy() } catch { logger.warning("destroying the refused listener failed", metadata: ["error": "\(error)"]) }
                throw .address(endpoint, device: device, served: verbs.deviceName)
            }
            let actual = GrantEndpoint(address: endpoint.address, port: port)
            listeners.append((actual, id))
            logger.info("listening for peers", metadata: ["endpoint": "\(actual)", "device": "\(verbs.deviceName)"])
        }
    }

    var endpoints: [GrantEndpoint] { listeners.map(\.endpoint) }

    /// Peers connected or connecting through any grant (`stats`' `peers`).
    var peerCount: Int { peers.count }

    /// A grant's peers, connected and connecting, oldest first.
    func peers(of grant: UInt64) -> [PeerConnection] {
        peers.values.filter { $0.grant == grant }.sorted { $0.id < $1.id }
    }

    /// The RDMA device that carries `endpoint`'s address (rdma_bind_addr picks it), for a
    /// daemon told to listen but not which device to serve: it serves the listener's.
    static func device(of endpoint: GrantEndpoint) throws(PeerSetupError) -> String {
        let context: Context?
        do {
            let channel = try CMEventChannel()
            let id = try channel.createID()
            defer { _ = try? id.destroy() }
            try id.bind(address: endpoint.host, port: 0)
            context = try id.context()
        } catch { throw .verbs(error) }
        guard let context else { throw .address(endpoint, device: nil, served: nil) }
        return context.device.name
    }

    // MARK: Grants (requests from owners)

    /// Makes a grant on `region` (the caller checked it is the owner's); returns it and when
    /// it expires (monotonic ns), for the caller's timer.
    func grant(_ request: Request.Grant, region: RegionInfo, owner: OwnerID, uid: UInt32,
               now: UInt64) throws(ProtocolError) -> (result: GrantResult, expiresAt: UInt64?) {
        guard let endpoint = listeners.first?.endpoint else {
            throw ProtocolError(.remoteAccessUnavailable, "mrleased is not listening for peers; set `listen = ADDR:PORT` in its config (or --listen) and restart it")
        }
        if alignment(for: region.strategy) > 1, activeMTU < Int(odpAlignment) {
            throw ProtocolError(.remoteAccessUnavailable, "region \(region.id.rawValue) is ODP on \(verbs.deviceName), whose ODP copies corrupt packets that do not start a page (the start-up self-test), and its port's active MTU is \(activeMTU): peers' transfers would be split into packets that do not start pages. Raise the interface's MTU so the RDMA MTU is 4096 (e.g. ip link set DEV mtu 9000), or register the region pinned")
        }
        let regionAccess = region.access.wire
        let access = request.access ?? regionAccess
        guard access.isSubset(of: regionAccess) else {
            let extra = access.subtracting(regionAccess).map(\.rawValue).sorted().joined(separator: ", ")
            throw ProtocolError(.accessDenied, "region \(region.id.rawValue) was registered without \(extra); a grant gives at most the region's access")
        }
        let onRegion = book.count(on: region.id)
        guard onRegion < limits.grantsPerRegion else {
            throw ProtocolError(.quotaExceeded, "region \(region.id.rawValue) has \(onRegion) grants, the most one region may have (max-grants-per-region \(limits.grantsPerRegion)); revoke one (revoke-grant) or give several peers one grant (maxPeers)")
        }
        let ofUID = book.count(ofUID: uid)
        guard ofUID < limits.grantsPerUID else {
            throw ProtocolError(.quotaExceeded, "uid \(uid) holds \(ofUID) grants, the most one uid may hold (max-grants-per-uid \(limits.grantsPerUID)); revoke some first")
        }
        let secret: GrantSecret
        let id: UInt64
        do {
            secret = try GrantSecret.random()
            id = try book.makeID()
        } catch {
            throw ProtocolError(.internal, "getrandom failed: \(error); no grant was made, retry")
        }
        // Request.Grant bounds the expiry to ten years: nothing here can overflow.
        let expiresAt = request.expiresInMillis.map { now + $0 * 1_000_000 }
        let record = GrantRecord(id: id, owner: owner, uid: uid, region: region.id, secret: secret, access: GrantAccess(access),
                                 maxPeers: Int(request.maxPeers ?? 1), expiresAt: expiresAt, endpoint: endpoint)
        book.add(record)
        // Never the secret or the descriptor: the log is not the peer.
        logger.info("grant made", metadata: ["grant": "\(id)", "region": "\(region.id)", "client": "\(owner)",
                                             "access": "\(access.map(\.rawValue).sorted())", "maxPeers": "\(record.maxPeers)"])
        let result = GrantResult(grant: id, region: region.id.rawValue, descriptor: record.descriptor.text, endpoint: "\(endpoint)",
                                 access: access, maxPeers: UInt64(record.maxPeers), expiresInMillis: request.expiresInMillis,
                                 alignment: UInt64(alignment(for: region.strategy)))
        return (result, expiresAt)
    }

    /// Ends an owner's grant: its peers are disconnected and later connects hear `revoked`.
    func revokeGrant(_ id: UInt64, owner: OwnerID) throws(ProtocolError) -> [PeerNotice] {
        guard let grant = book.grants[id], grant.owner == owner else {
            throw ProtocolError(.unknownGrant, "no grant \(id) on this connection (it was revoked, expired, or is another connection's)")
        }
        return end(grant, .revoked, reason: .grantEnded)
    }

    /// The transfer alignment peers of a region with `strategy` must keep.
    func alignment(for strategy: Strategy) -> UInt32 {
        switch strategy {
        case .odp: odpAlignment
        case .pinned: 1
        }
    }

    // MARK: What happens to regions and owners

    /// The one entry of the engine's notices into the peer service (the daemon's fan-out
    /// hands it each notice after the owner's session): what the region's grants and peers
    /// become, and what their owners must hear.
    func receive(_ event: EngineEvent, engine: Engine, now: UInt64) -> [PeerNotice] {
        switch event {
        case .revoking(let revocation): return revocation.regions.flatMap(regionRevoking)
        case .revoked(let id): regionRevoked(id)
        // Connect requests held while it was revoked are answered now, with the new keys.
        case .restored(let id, _, _): regionRestored(id, engine: engine, now: now)
        case .lost(let id, _, _), .deregistered(let id): return regionGone(id)
        // A following region's layout change is the owner's news only: its peers keep their
        // connections and keys, and reach the file's current pages.
        case .unlinked, .layout: break
        }
        return []
    }

    /// A revocation began. The engine has stopped the region's peers already (it withdrew the
    /// grants' exposures: `rdma_disconnect` of each peer, `ibv_dereg_mr` of each grant's MR,
    /// before the owner heard `revoking`); here they are forgotten, their owners told, and
    /// their QPs, ids and PDs kept for `regionRevoked` (after the unlock: the breaker does not
    /// wait for them). The grants stay: a peer that reconnects after the restoration gets the
    /// new generation's keys.
    func regionRevoking(_ region: RegionID) -> [PeerNotice] {
        var notices: [PeerNotice] = []
        let grants = book.grants(on: region)
        guard let owner = grants.first?.owner else { return [] }
        var stopped = retiring[region] ?? (owner, [], [])
        for grant in grants {
            for peer in peers(of: grant.id) {
                forget(peer, disconnecting: false)
                stopped.peers.append(peer)
                if peer.established { notices.append(disconnected(peer, of: grant, reason: .revoking)) }
            }
            if let exposure = exposures.removeValue(forKey: grant.id) { stopped.exposures.append(exposure) }
        }
        if !stopped.peers.isEmpty || !stopped.exposures.isEmpty { retiring[region] = stopped }
        return notices
    }

    /// The region's revocation unlocked the file: what `regionRevoking` stopped is taken down.
    func regionRevoked(_ region: RegionID) {
        guard let stopped = retiring.removeValue(forKey: region) else { return }
        for peer in stopped.peers { destroy(peer.connection, what: "peer \(peer.id)") }
        for exposure in stopped.exposures { close(exposure, grant: nil) }
    }

    /// The region was deregistered or lost: its grants end.
    func regionGone(_ region: RegionID) -> [PeerNotice] {
        defer { regionRevoked(region) }
        rejectHeld(of: region, .regionLost)
        return book.grants(on: region).flatMap { end($0, .regionGone, reason: .regionGone) }
    }

    /// The owner's connection ended: its grants end with it (no one is left to tell), and
    /// what revocations of its regions stopped goes now (their `revoked` may never come: the
    /// engine tells a gone owner nothing).
    func ownerGone(_ owner: OwnerID) {
        for grant in book.grants(of: owner) { _ = end(grant, .ownerGone, reason: .grantEnded) }
        for region in retiring.filter({ $0.value.owner == owner }).keys.sorted() { regionRevoked(region) }
    }

    /// Ends grants whose expiry has passed.
    func expire(now: UInt64) -> [PeerNotice] {
        book.grants.values.filter { ($0.expiresAt ?? .max) <= now }.sorted { $0.id < $1.id }
            .flatMap { end($0, .expired, reason: .grantEnded) }
    }

    /// When the earliest live grant expires (monotonic ns); nil: none has an expiry.
    var nextExpiry: UInt64? { book.grants.values.compactMap(\.expiresAt).min() }

    /// When the earliest handshake under way, or held connect request, runs out of time
    /// (monotonic ns); nil: none.
    var nextHandshakeDeadline: UInt64? {
        let handshake = peers.values.lazy.filter { !$0.established }.map { $0.acceptedAt + self.limits.handshakeNanos }.min()
        return [handshake, nextHeldDeadline].compactMap { $0 }.min()
    }

    /// Takes down every peer whose handshake did not reach ESTABLISHED within the bound:
    /// its cm_id is destroyed (the CM rejects the connection) and its slot is free again. A
    /// peer that sent its connect request and never completes (no RTU) would otherwise hold
    /// the slot for as long as its process lives: the CM does not time it out (rxe, 209 s).
    /// Held connect requests past their bound are rejected (`expireHeld`).
    func expireHandshakes(now: UInt64) {
        expireHeld(now: now)
        let late = peers.values.filter { !$0.established && $0.acceptedAt + limits.handshakeNanos <= now }
        for peer in late.sorted(by: { $0.id < $1.id }) {
            guard let grant = book.grants[peer.grant] else { continue }
            drop(peer, disconnecting: false)
            logger.warning("peer handshake timed out: its slot is free again", metadata: [
                "peer": "\(peer.id)", "grant": "\(grant.id)", "address": "\(peer.address)", "handshakeMillis": "\(limits.handshakeNanos / 1_000_000)"])
        }
    }

    /// The daemon is stopping: every peer is disconnected, every exposure withdrawn, the
    /// listeners closed.
    func shutDown() -> [PeerNotice] {
        var notices: [PeerNotice] = []
        for grant in book.grants.values.sorted(by: { $0.id < $1.id }) {
            notices += disconnectPeers(of: grant, reason: .shutdown)
            rejectWaiting(of: grant.id, .busy, retryAfter: 1000)
            closeExposure(of: grant)
            book.end(grant.id, .ownerGone)
        }
        // Waits for a registration under way; what it made is closed (no grant is left).
        maker.shutDown()
        for job in maker.finished() { discard(job) }
        for region in retiring.keys.sorted() { regionRevoked(region) }
        rejectHeld(of: nil, .busy, retryAfter: 1000)
        for listener in listeners { destroy(listener.id, what: "listener") }
        listeners = []
        return notices
    }

    /// What `list` shows of a region's grants: never a secret.
    func summaries(of region: RegionID, now: UInt64) -> [RegionList.Grant] {
        book.grants(on: region).map { grant in
            let all = peers(of: grant.id)
            let connected = all.filter(\.established)
            return RegionList.Grant(grant: grant.id, access: grant.access.wire, maxPeers: UInt64(grant.maxPeers),
                                    expiresInMillis: grant.expiresAt.map { $0 > now ? ($0 - now) / 1_000_000 : 0 },
                                    peers: connected.prefix(RegionList.Grant.maxListedPeers).map {
                                        RegionList.Grant.Peer(peer: $0.id, address: $0.address, generation: $0.generation)
                                    },
                                    connected: UInt64(connected.count), connecting: UInt64(all.count - connected.count))
        }
    }

    private func end(_ grant: GrantRecord, _ why: GrantEnd, reason: PeerDisconnectReason) -> [PeerNotice] {
        let notices = disconnectPeers(of: grant, reason: reason)
        rejectWaiting(of: grant.id, why.rejectReason)
        closeExposure(of: grant)
        book.end(grant.id, why)
        rejectHeld(of: grant, why.rejectReason)
        logger.info("grant ended", metadata: ["grant": "\(grant.id)", "region": "\(grant.region)", "why": "\(why)"])
        return why == .ownerGone ? [] : notices
    }

    private func disconnectPeers(of grant: GrantRecord, reason: PeerDisconnectReason) -> [PeerNotice] {
        var notices: [PeerNotice] = []
        for peer in peers(of: grant.id) {
            drop(peer, disconnecting: true)
            if peer.established { notices.append(disconnected(peer, of: grant, reason: reason)) }
        }
        return notices
    }

    private func disconnected(_ peer: PeerConnection, of grant: GrantRecord, reason: PeerDisconnectReason) -> PeerNotice {
        PeerNotice(owner: grant.owner, event: .peerDisconnected(.init(region: grant.region.rawValue, grant: grant.id, peer: peer.id, reason: reason)))
    }

    /// Takes the grant's exposure down at once: MR, then QPs and ids, then PD.
    func closeExposure(of grant: GrantRecord) {
        guard let exposure = exposures.removeValue(forKey: grant.id) else { return }
        close(exposure, grant: grant.id)
    }

    func close(_ exposure: GrantExposure, grant: UInt64?) {
        do { try exposure.close() } catch {
            logger.error("closing a grant's PD failed: what refused stays allocated until its last reference goes",
                         metadata: ["grant": "\(grant.map(String.init) ?? "-")", "op": "\(error.op)", "errno": "\(error.errno.symbolicName)", "error": "\(error)"])
        }
    }

    /// Forgets a peer and takes its connection down: `rdma_disconnect` first (its QP moves to
    /// the error state at once and the peer gets a DREQ), then the QP and the id.
    func drop(_ peer: PeerConnection, disconnecting: Bool) {
        forget(peer, disconnecting: disconnecting)
        destroy(peer.connection, what: "peer \(peer.id)")
    }

    /// Forgets a peer and, when asked, disconnects it (`rdma_disconnect`); its QP and id stay.
    private func forget(_ peer: PeerConnection, disconnecting: Bool) {
        peers[ObjectIdentifier(peer.connection)] = nil
        if disconnecting, !peer.connection.isDestroyed {
            do { try peer.connection.disconnect() } catch {
                // EINVAL for a connection not yet established: destroying it rejects it.
                logger.debug("rdma_disconnect failed", metadata: ["peer": "\(peer.id)", "errno": "\(error.errno.symbolicName)"])
            }
        }
    }

    func destroy(_ id: any PeerCMID, what: String) {
        do { try id.destroy() } catch {
            logger.error("destroying an rdma_cm id failed", metadata: ["what": "\(what)", "op": "\(error.op)", "errno": "\(error.errno.symbolicName)"])
        }
    }
}
