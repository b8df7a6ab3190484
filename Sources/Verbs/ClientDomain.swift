/// A protection domain with everything made in it and the rdma_cm connections whose QPs it
/// holds: one grant's MR and its peers' QPs in the daemon, or one peer's side in the peer
/// library. Keys of one domain are useless on another domain's QPs.
///
/// `close()` takes it all down in the one order that cannot fail for ordering reasons:
/// connections (they hold QPs), then QPs (they use MRs' lkeys and carry MW bindings), then MWs
/// (rxe refuses to deregister an MR with a window bound to it), then MRs, then the PD — the
/// order pyverbs' `PD.close` follows (`close_weakrefs` before `ibv_dealloc_pd`). The PD does
/// the QP → MW → MR → PD part, since everything made in it is recorded there; this type adds
/// what is the client's but not the PD's (the connections). Objects someone still holds stay
/// valid Swift objects after `close()`: their `deregister()`/`destroy()` then do nothing.
public final class ClientDomain {
    public let protectionDomain: ProtectionDomain
    /// The rdma_cm ids with a QP in this domain: destroyed (QP, then id) before the PD closes.
    private var connections = WeakChildren<CMID>()

    /// Allocates the domain's PD on `context`. For a client that will connect through rdma_cm,
    /// `context` must be librdmacm's own (`Context.librdmacm(deviceNamed:)`).
    ///
    /// The corresponding C function is `ibv_alloc_pd`.
    public init(context: Context) throws(VerbsError) {
        protectionDomain = try context.allocateProtectionDomain()
    }

    deinit {
        // The ordered close, for an owner that dropped the domain without closing it. A failure
        // cannot be reported from here; whatever refused stays allocated until its own deinit
        // (children hold the PD, so the PD still goes last). Owners that must know call close().
        try? close()
    }

    public var context: Context { protectionDomain.context }
    public var isOpen: Bool { protectionDomain.isOpen }

    /// Registers `[address, address+length)` in this domain's PD.
    ///
    /// The corresponding C function is `ibv_reg_mr`.
    public func register(address: UnsafeMutableRawPointer, length: Int, access: AccessFlags) throws(VerbsError) -> MemoryRegion {
        try protectionDomain.register(address: address, length: length, access: access)
    }

    /// Creates `id`'s RC QP in this domain's PD (the PD must be on librdmacm's context for the
    /// id's device) and records the id, so `close()` tears the connection down first.
    ///
    /// The corresponding C function is `rdma_create_qp`.
    public func createQueuePair(on id: CMID, sendQueue: CompletionQueue, receiveQueue: CompletionQueue,
                                maxSend: UInt32 = 64, maxReceive: UInt32 = 64) throws(VerbsError) -> QueuePair {
        let queuePair = try id.createQueuePair(in: protectionDomain, sendQueue: sendQueue, receiveQueue: receiveQueue,
                                               maxSend: maxSend, maxReceive: maxReceive)
        connections.insert(id)
        return queuePair
    }

    /// Closes the domain in order: connections (each id's QP, then the id: the peer sees a
    /// disconnect), then the PD with its QPs, MWs and MRs. Every object is tried even after one
    /// fails; the first failure is thrown. Calling it again does nothing.
    ///
    /// The corresponding C functions are `ibv_destroy_qp`, `rdma_destroy_id`, `ibv_dereg_mr`
    /// and `ibv_dealloc_pd`.
    public func close() throws(VerbsError) {
        var failure: VerbsError?
        for id in connections.live {
            do throws(VerbsError) { try id.destroy() } catch { failure = failure ?? error }
        }
        do throws(VerbsError) { try protectionDomain.close() } catch { failure = failure ?? error }
        if let failure { throw failure }
    }
}
