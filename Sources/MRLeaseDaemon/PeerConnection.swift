import MRLeaseEngine
import MRLeaseProtocol
import Verbs

/// A grant's reach into one registration of its region: its own PD (one per grant, so a
/// peer of grant A holds no key that works on region B, even B of the same client), an MR over
/// the same pages, and the peers' QPs in that PD. The engine withdraws it before the region's
/// MR is deregistered (`RegionExposure`), whatever the reason.
final class GrantExposure: RegionExposure {
    let generation: UInt64
    let domain: any PeerPD
    let memory: any PeerMR
    /// The peers' connections made in this PD (PeerService adds each it accepts).
    var connections: [any PeerCMID] = []
    private(set) var isWithdrawn = false

    init(generation: UInt64, domain: any PeerPD, memory: any PeerMR) {
        self.generation = generation
        self.domain = domain
        self.memory = memory
    }

    /// Stops all access through the grant, at the floor: `rdma_disconnect` of each peer's
    /// connection (its QP moves to the error state, the peer gets a DREQ), then `ibv_dereg_mr`
    /// of the grant's MR, the only one in its PD, so no QP of the PD reaches a byte of the
    /// region from then on. That is all that must happen before the lease goes; the QPs, the ids
    /// and the PD go in `close()`, after the unlock when a revocation is under way.
    func withdraw() throws(VerbsError) {
        guard !isWithdrawn else { return }
        isWithdrawn = true
        var failure: VerbsError?
        for connection in connections where !connection.isDestroyed {
            do { try connection.disconnect() } catch {
                // EINVAL for a connection not yet established: its QP has carried nothing, and
                // the MR below goes all the same; destroying the id later rejects it.
                if error.errno != .invalidArgument { failure = failure ?? error }
            }
        }
        do { try memory.deregister() } catch { failure = failure ?? error }
        if let failure { throw failure }
    }

    /// Withdraws it if that has not happened, then closes the PD in order (each id's QP, then
    /// the id, then the PD: ClientDomain's ordered close). Again, nothing.
    func close() throws(VerbsError) {
        var failure: VerbsError?
        do { try withdraw() } catch { failure = error }
        do { try domain.close() } catch { failure = failure ?? error }
        if let failure { throw failure }
    }
}

/// One peer's connection: its rdma_cm id, its QP and its CQ. The QP must be held: the id
/// holds it only weakly, and a QP dropped is destroyed at once (the connection would then
/// carry QP number 0, which the CM rejects as a stale connection).
final class PeerConnection {
    let id: UInt64
    let grant: UInt64
    let connection: any PeerCMID
    /// Its QP and CQ (`PeerPD.createQueuePair`).
    let queuePair: AnyObject
    let address: String
    let generation: UInt64
    /// When the connect request was accepted (monotonic ns): a handshake not ESTABLISHED by
    /// `acceptedAt + handshake bound` gives its slot back.
    let acceptedAt: UInt64
    var established = false

    init(id: UInt64, grant: UInt64, connection: any PeerCMID, queuePair: AnyObject, address: String,
         generation: UInt64, acceptedAt: UInt64) {
        self.id = id
        self.acceptedAt = acceptedAt
        self.grant = grant
        self.connection = connection
        self.queuePair = queuePair
        self.address = address
        self.generation = generation
    }
}

/// The bounds on grants and handshakes (from the configuration: `max-grants-per-region`,
/// `max-grants-per-uid`, `peer-handshake-ms`).
struct PeerLimits {
    var grantsPerRegion = 16
    var grantsPerUID = 1024
    /// Nanoseconds a peer has from its accepted connect request to ESTABLISHED.
    var handshakeNanos: UInt64 = 5_000_000_000
    /// Nanoseconds a connect request is held while its region is revoked: well inside the
    /// 5 s a peer of docs/protocol.md §9 waits for an rdma_cm event, and than the CM's own
    /// response timeout (about 4 s with librdmacm's default of 20).
    var holdNanos: UInt64 = 1_000_000_000
}

/// An event for a grant's owner, as PeerService returns it (the daemon delivers it).
struct PeerNotice {
    var owner: OwnerID
    var event: Event
}
