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
            if forgetWaiting(event.id) {
                // A request waiting for its grant's MR whose peer gave up.
                destroy(event.id, what: "waiting connect")
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
        switch book.admit(event.privateData, now: now, taken: { self.taken(by: $0) }) {
        case .rejected(let reason):
            return reject(connection, reason, retryAfter: reason.isRetryable ? 100 : 0, address: address)
        case .admitted(let admitted):
            grant = admitted
        }
        let target: ExposureTarget
        do {
            guard let current = try engine.exposureTarget(grant.region) else {
                let waiting = held[grant.region]?.filter { $0.grant == grant.id }.count ?? 0
                if holding, taken(by: grant.id) + waiting < grant.maxPeers {
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
        if let exposure = exposures[grant.id], !exposure.isWithdrawn, exposure.generation == target.generation {
            return accept(event, grant: grant, exposure: exposure, target: target, now: now)
        }
        // The grant's first connect of this generation: its PD and MR are made off the loop,
        // and the request waits for them (with any other that comes meanwhile).
        if let job = registering[grant.id], job.generation == target.generation {
            job.waiting.append(event)
            return
        }
        closeExposure(of: grant)   // an older generation's, withdrawn already
        let job = ExposureJob(grant: grant.id, region: grant.region, generation: target.generation, address: target.address,
                              length: target.length, flags: Self.flags(for: grant.access, registeredWith: target.flags))
        // An older generation's job is left to finish unheeded; its requests wait for this one.
        job.waiting = (registering[grant.id]?.waiting ?? []) + [event]
        registering[grant.id] = job
        maker.submit(job)
        if maker.descriptor == nil { exposuresMade(engine: engine, now: now) }
    }

    /// Connects admitted for `grant`: its peers, and the requests waiting for its exposure.
    func taken(by grant: UInt64) -> Int {
        peers(of: grant).count + (registering[grant]?.waiting.count ?? 0)
    }

    /// Accepts a connect request on the grant's current exposure: a QP in the grant's PD, and
    /// the accept's private data with the generation's address and keys.
    func accept(_ event: PeerCMEvent, grant: GrantRecord, exposure: GrantExposure, target: ExposureTarget, now: UInt64) {
        let connection = event.id
        let address = connection.peerAddress()
        let terms: AcceptPrivateData
        do {
            terms = try AcceptPrivateData(access: grant.access, remoteAddress: exposure.memory.address,
                                          length: UInt64(target.length), rkey: exposure.memory.rkey,
                                          transferAlignment: alignment(for: target.strategy),
                                          generation: target.generation, grantID: grant.id)
        } catch {
            // Each field was checked when the grant was made and the region registered (access
            // not empty, length not 0, a mapping's address, a power-of-two alignment): a bug.
            logger.error("peer not admitted: an mrleased bug: the accept's terms do not encode", metadata: [
                "grant": "\(grant.id)", "address": "\(address)", "error": "\(error)"])
            return reject(connection, .busy, retryAfter: 1000, address: address, grant: grant.id)
        }
        do throws(VerbsError) {
            let queuePair = try exposure.domain.createQueuePair(on: connection)
            // Only live ones: a peer that drops and reconnects within one generation must not
            // grow the list (a dropped peer's id is destroyed).
            exposure.connections.removeAll { $0.isDestroyed }
            exposure.connections.append(connection)
            let wanted = event.initiatorDepth ?? 1
            try connection.accept(privateData: terms.encoded(),
                                  responderResources: min(max(wanted, 1), Self.maxResponderResources), initiatorDepth: 0)
            let peer = PeerConnection(id: nextPeer, grant: grant.id, connection: connection, queuePair: queuePair,
                                      address: address, generation: target.generation, acceptedAt: now)
            nextPeer += 1
            peers[ObjectIdentifier(connection)] = peer
        } catch {
            logger.warning("peer not admitted: could not make its QP", metadata: [
                "grant": "\(grant.id)", "address": "\(address)", "op": "\(error.op)", "errno": "\(error.errno.symbolicName)", "error": "\(error)"])
            reject(connection, .busy, retryAfter: 1000, address: address, grant: grant.id)
        }
    }

    // MARK: Exposures made off the loop

    /// Takes the jobs the maker finished: a job still its grant's, for the generation the
    /// region still has, becomes the grant's exposure (the engine withdraws it with the
    /// region) and its requests are accepted; a job overtaken (a revocation, a newer job, the
    /// grant's end) is closed, and its requests are answered as new ones would be now.
    func exposuresMade(engine: Engine, now: UInt64) {
        for job in maker.finished() {
            if let failure = job.closeFailure {
                logger.error("closing a grant's PD after its MR was refused failed", metadata: [
                    "grant": "\(job.grant)", "op": "\(failure.op)", "errno": "\(failure.errno.symbolicName)"])
            }
            guard registering[job.grant] === job, let grant = book.grants[job.grant] else {
                // Overtaken: its requests moved to the newer job, or were rejected with the grant.
                discard(job)
                continue
            }
            registering[job.grant] = nil
            let target: ExposureTarget?
            do { target = try engine.exposureTarget(job.region) } catch {
                discard(job)
                for event in job.waiting { reject(event.id, .regionLost, address: event.id.peerAddress(), grant: grant.id) }
                continue
            }
            guard let target, target.generation == job.generation else {
                // Revoked (or registered again) while the MR was being made: what it covers may
                // be gone. Its requests are held, or admitted on the new generation.
                discard(job)
                for event in job.waiting { connectRequested(event, engine: engine, now: now) }
                continue
            }
            let made: (domain: any PeerPD, memory: any PeerMR)
            switch job.made {
            case .success(let pair)?:
                made = pair
            case .failure(let error)?:
                logger.warning("peers not admitted: could not make the grant's MR", metadata: [
                    "grant": "\(grant.id)", "op": "\(error.op)", "errno": "\(error.errno.symbolicName)", "error": "\(error)"])
                for event in job.waiting { reject(event.id, .busy, retryAfter: 1000, address: event.id.peerAddress(), grant: grant.id) }
                continue
            case nil:   // not run: the daemon is stopping
                for event in job.waiting { reject(event.id, .busy, retryAfter: 1000, address: event.id.peerAddress(), grant: grant.id) }
                continue
            }
            let exposure = GrantExposure(generation: job.generation, domain: made.domain, memory: made.memory)
            do { try engine.expose(job.region, generation: job.generation, exposure) } catch {
                // expose() withdrew it; the target above was current, so only a bug gets here.
                logger.error("a grant's exposure was refused by the engine", metadata: ["grant": "\(grant.id)", "error": "\(error)"])
                close(exposure, grant: grant.id)
                for event in job.waiting { reject(event.id, .busy, retryAfter: 1000, address: event.id.peerAddress(), grant: grant.id) }
                continue
            }
            exposures[grant.id] = exposure
            logger.debug("grant MR made off the loop", metadata: ["grant": "\(grant.id)", "generation": "\(job.generation)",
                                                                  "bytes": "\(job.length)", "micros": "\(job.nanos / 1000)"])
            for event in job.waiting { accept(event, grant: grant, exposure: exposure, target: target, now: now) }
        }
    }

    /// Closes what a job made that will not be used.
    func discard(_ job: ExposureJob) {
        guard case .success(let made)? = job.made else { return }
        close(GrantExposure(generation: job.generation, domain: made.domain, memory: made.memory), grant: job.grant)
    }

    /// Rejects the requests waiting for `grant`'s exposure; its job, if running, is left to
    /// finish unheeded.
    func rejectWaiting(of grant: UInt64, _ reason: RejectReason, retryAfter: UInt32 = 0) {
        guard let job = registering.removeValue(forKey: grant) else { return }
        for event in job.waiting { reject(event.id, reason, retryAfter: retryAfter, address: event.id.peerAddress(), grant: grant) }
        job.waiting = []
    }

    /// A waiting request whose peer gave up: forgotten, true; false when `id` waits for nothing.
    func forgetWaiting(_ id: any PeerCMID) -> Bool {
        for job in registering.values {
            guard let index = job.waiting.firstIndex(where: { $0.id === id }) else { continue }
            job.waiting.remove(at: index)
            return true
        }
        return false
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
