import MRLeaseEngine
import MRLeaseGrant
import MRLeasePolicy
import MRLeaseProtocol
import Verbs

/// A connect request held while its region is revoked (`PeerService.held`).
struct HeldConnect {
    var event: PeerCMEvent
    var grant: UInt64
    /// When it was held (monotonic ns).
    var since: UInt64
}

/// rdma_cm's side of the peer service: connect requests (admitted, rejected, or held while
/// their region is revoked), handshakes and disconnects.
extension PeerService {
    // MARK: rdma_cm events

    /// Handles every pending rdma_cm event.
    func handleEvents(engine: Engine, now: UInt64) -> [PeerNotice] {
        var notices: [PeerNotice] = []
        while true {
            let event: PeerCMEvent?
            do { event = try verbs.nextEvent() } catch {
                // An event for an id destroyed meanwhile (ENOENT) is acknowledged and dropped;
                // anything else is logged, and the next readiness tries again.
                if error.errno == .noSuchFileOrDirectory { continue }
                logger.error("rdma_get_cm_event failed", metadata: ["op": "\(error.op)", "errno": "\(error.errno.symbolicName)"])
                return notices
            }
            guard let event else { return notices }
            notices += handle(event, engine: engine, now: now)
        }
    }

    func handle(_ event: PeerCMEvent, engine: Engine, now: UInt64) -> [PeerNotice] {
        switch event.kind {
        case .connectRequest:
            connectRequested(event, engine: engine, now: now)
            return []
        case .established:
            guard let peer = peers[ObjectIdentifier(event.id)], let grant = book.grants[peer.grant] else { return [] }
            peer.established = true
            logger.info("peer connected", metadata: ["peer": "\(peer.id)", "grant": "\(grant.id)", "address": "\(peer.address)",
                                                     "generation": "\(peer.generation)"])
            return [PeerNotice(owner: grant.owner, event: .peerConnected(.init(
                region: grant.region.rawValue, grant: grant.id, peer: peer.id, address: peer.address, generation: peer.generation)))]
        case .disconnected, .rejected, .unreachable, .connectError:
            if let region = heldRegion(of: event.id) {
                // A held request the peer gave up on (its CM rejected ours, timing out).
                held[region]?.removeAll { $0.event.id === event.id }
                if held[region]?.isEmpty == true { held[region] = nil }
                destroy(event.id, what: "held connect")
                return []
            }
            guard let peer = peers[ObjectIdentifier(event.id)], let grant = book.grants[peer.grant] else {
                // An id we dropped already; answer a DISCONNECTED anyway (rdma_disconnect(3)).
                if event.kind == .disconnected, !event.id.isDestroyed { _ = try? event.id.disconnect() }
                return []
            }
            // Answering the peer's DREQ (DISCONNECTED) with our own DREP ends it at once.
            drop(peer, disconnecting: event.kind == .disconnected)
            logger.info("peer gone", metadata: ["peer": "\(peer.id)", "grant": "\(grant.id)", "event": "\(event.kind)", "status": "\(event.status)"])
            guard peer.established else { return [] }
            return [PeerNotice(owner: grant.owner, event: .peerDisconnected(.init(
                region: grant.region.rawValue, grant: grant.id, peer: peer.id, reason: .peer)))]
        default:
            logger.debug("rdma_cm event ignored", metadata: ["event": "\(event.kind)", "status": "\(event.status)"])
            return []
        }
    }

    /// Admits a connect request, holds it while its region is revoked, or rejects it with a
    /// reason code (docs/protocol.md §8). `holding: false` for a request held already.
    func connectRequested(_ event: PeerCMEvent, engine: Engine, now: UInt64, holding: Bool = true) {
        let connection = event.id
        let address = connection.peerAddress()
        let grant: GrantRecord
        switch book.admit(event.privateData, now: now, taken: { self.peers(of: $0).count }) {
        case .rejected(let reason):
            return reject(connection, reason, retryAfter: reason.isRetryable ? 100 : 0, address: address)
        case .admitted(let admitted):
            grant = admitted
        }
        let target: ExposureTarget
        do {
            guard let current = try engine.exposureTarget(grant.region) else {
                let waiting = held[grant.region]?.filter { $0.grant == grant.id }.count ?? 0
                if holding, peers(of: grant.id).count + waiting < grant.maxPeers {
                    // Answered when the region is restored: no retry, no backoff, for the peer.
                    held[grant.region, default: []].append(HeldConnect(event: event, grant: grant.id, since: now))
                    logger.info("peer held while its region is revoked", metadata: ["address": "\(address)", "grant": "\(grant.id)"])
                    return
                }
                return reject(connection, .regionRevoking, retryAfter: revokingRetryMillis, address: address, grant: grant.id)
            }
            target = current
        } catch {
            return reject(connection, .regionLost, address: address, grant: grant.id)
        }
        do throws(VerbsError) {
            let exposure = try currentExposure(of: grant, target: target, engine: engine)
            let queuePair = try exposure.domain.createQueuePair(on: connection)
            // Only live ones: a peer that drops and reconnects within one generation must not
            // grow the list (a dropped peer's id is destroyed).
            exposure.connections.removeAll { $0.isDestroyed }
            exposure.connections.append(connection)
            let accept: AcceptPrivateData
            do {
                accept = try AcceptPrivateData(access: grant.access, remoteAddress: exposure.memory.address,
                                               length: UInt64(target.length), rkey: exposure.memory.rkey,
                                               transferAlignment: alignment(for: target.strategy),
                                               generation: target.generation, grantID: grant.id)
            } catch {
                throw VerbsError(op: "accept private data", errno: .invalidArgument, detail: "\(error)")
            }
            let wanted = event.initiatorDepth ?? 1
            try connection.accept(privateData: accept.encoded(),
                                  responderResources: min(max(wanted, 1), Self.maxResponderResources), initiatorDepth: 0)
            let peer = PeerConnection(id: nextPeer, grant: grant.id, connection: connection, queuePair: queuePair,
                                      address: address, generation: target.generation, acceptedAt: now)
            nextPeer += 1
            peers[ObjectIdentifier(connection)] = peer
        } catch {
            logger.warning("peer not admitted: could not make its QP or the grant's MR", metadata: [
                "grant": "\(grant.id)", "address": "\(address)", "op": "\(error.op)", "errno": "\(error.errno.symbolicName)", "error": "\(error)"])
            reject(connection, .busy, retryAfter: 1000, address: address, grant: grant.id)
        }
    }

    /// The grant's exposure of the region's current generation, made (PD, MR) if there is none.
    func currentExposure(of grant: GrantRecord, target: ExposureTarget, engine: Engine) throws(VerbsError) -> GrantExposure {
        if let exposure = exposures[grant.id], !exposure.isWithdrawn, exposure.generation == target.generation { return exposure }
        closeExposure(of: grant)
        let domain = try verbs.makePD()
        let memory = try domain.register(address: target.address, length: target.length,
                                         access: Self.flags(for: grant.access, registeredWith: target.flags))
        let exposure = GrantExposure(generation: target.generation, domain: domain, memory: memory)
        do { try engine.expose(target.region, generation: target.generation, exposure) } catch {
            // The registration went between the target and now (nothing runs in between, so
            // only a bug gets here); expose() withdrew it.
            throw VerbsError(op: "expose", errno: .noSuchFileOrDirectory, detail: "\(error)")
        }
        exposures[grant.id] = exposure
        return exposure
    }

    /// The grant MR's flags: the region's own (ODP, and LOCAL_WRITE, which decides how pages
    /// are pinned), with remote rights cut to what the grant gives. The kernel requires
    /// LOCAL_WRITE with REMOTE_WRITE or REMOTE_ATOMIC.
    static func flags(for access: GrantAccess, registeredWith region: AccessFlags) -> AccessFlags {
        var flags = region.subtracting([.remoteRead, .remoteWrite, .remoteAtomic])
        if access.contains(.read) { flags.insert(.remoteRead) }
        if access.contains(.write) { flags.formUnion([.remoteWrite, .localWrite]) }
        if access.contains(.atomic) { flags.formUnion([.remoteAtomic, .localWrite]) }
        return flags
    }

    func reject(_ connection: any PeerCMID, _ reason: RejectReason, retryAfter: UInt32 = 0, address: String, grant: UInt64? = nil) {
        do { try connection.reject(privateData: RejectPrivateData(reason: reason, retryAfterMilliseconds: retryAfter).encoded()) } catch {
            logger.warning("rdma_reject failed", metadata: ["address": "\(address)", "errno": "\(error.errno.symbolicName)"])
        }
        destroy(connection, what: "rejected connect")
        logger.info("peer rejected", metadata: ["address": "\(address)", "reason": "\(reason)", "grant": "\(grant.map(String.init) ?? "-")"])
    }

    // MARK: Held connect requests

    /// The region is back: its held requests are answered as new ones would be now (admitted
    /// with the new generation's keys, or rejected for what became of the grant).
    func regionRestored(_ region: RegionID, engine: Engine, now: UInt64) {
        for request in held.removeValue(forKey: region) ?? [] {
            connectRequested(request.event, engine: engine, now: now, holding: false)
        }
    }

    /// Rejects the held requests of `region` (all regions: nil) with `reason`.
    func rejectHeld(of region: RegionID?, _ reason: RejectReason, retryAfter: UInt32 = 0) {
        let regions = region.map { [$0] } ?? held.keys.sorted()
        for region in regions {
            for request in held.removeValue(forKey: region) ?? [] {
                reject(request.event.id, reason, retryAfter: retryAfter, address: request.event.id.peerAddress(), grant: request.grant)
            }
        }
    }

    /// Rejects the held requests of an ended grant with why it ended.
    func rejectHeld(of grant: GrantRecord, _ reason: RejectReason) {
        guard let requests = held[grant.region] else { return }
        let (ended, others) = requests.partitioned { $0.grant == grant.id }
        held[grant.region] = others.isEmpty ? nil : others
        for request in ended { reject(request.event.id, reason, address: request.event.id.peerAddress(), grant: grant.id) }
    }

    /// When the earliest held request has waited `limits.holdNanos` (monotonic ns); nil: none.
    var nextHeldDeadline: UInt64? { held.values.joined().map { $0.since + limits.holdNanos }.min() }

    /// Rejects `region-revoking` (with the usual retry hint) every request held for
    /// `limits.holdNanos`: a revocation that long is not a short pause.
    func expireHeld(now: UInt64) {
        for region in held.keys.sorted() {
            let (late, waiting) = (held[region] ?? []).partitioned { $0.since + limits.holdNanos <= now }
            held[region] = waiting.isEmpty ? nil : waiting
            for request in late {
                reject(request.event.id, .regionRevoking, retryAfter: revokingRetryMillis, address: request.event.id.peerAddress(), grant: request.grant)
            }
        }
    }

    private func heldRegion(of id: any PeerCMID) -> RegionID? {
        held.first { $0.value.contains { $0.event.id === id } }?.key
    }
}

extension Array {
    /// (the elements that satisfy `belongs`, the others), each in order.
    func partitioned(_ belongs: (Element) -> Bool) -> ([Element], [Element]) {
        var yes: [Element] = [], no: [Element] = []
        for element in self { if belongs(element) { yes.append(element) } else { no.append(element) } }
        return (yes, no)
    }
}
