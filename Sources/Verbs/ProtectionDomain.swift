import CRDMA

/// A protection domain: MRs and QPs in one PD can be used together, and only together.
///
/// Owns its `ibv_pd` and keeps its `Context` alive. Each client of the daemon gets its own PD,
/// so one client's rkeys are useless on another client's QPs.
public final class ProtectionDomain {
    public let context: Context
    let pointer: UnsafeMutablePointer<ibv_pd>

    init(context: Context, pointer: UnsafeMutablePointer<ibv_pd>) {
        self.context = context
        self.pointer = pointer
    }

    deinit {
        // Children (MRs, QPs) hold this PD, so by now none remain; EBUSY cannot happen.
        _ = ibv_dealloc_pd(pointer)
    }

    /// Registers `[address, address+length)` for the given access.
    ///
    /// With `.onDemand` the pages are not pinned: the device faults them in and the kernel
    /// invalidates them when the mapping changes. Without it the pages are pinned for as long
    /// as the MR lives, which the kernel refuses for FS-DAX (EOPNOTSUPP) and, from 6.5 on, for
    /// writable file-backed page-cache mappings (EFAULT).
    ///
    /// The corresponding C function is `ibv_reg_mr` (through `ibv_reg_mr_iova2`, iova = address).
    public func register(address: UnsafeMutableRawPointer, length: Int, access: AccessFlags) throws(VerbsError) -> MemoryRegion {
        guard let mr = mrl_reg_mr(pointer, address, length, access.rawValue) else {
            throw VerbsError(op: "ibv_reg_mr", errno: currentErrno(),
                             detail: "\(length) bytes, access \(access)")
        }
        return MemoryRegion(protectionDomain: self, pointer: mr, access: access)
    }

    /// Creates a reliable-connected queue pair.
    ///
    /// The corresponding C function is `ibv_create_qp`.
    public func createQueuePair(
        sendQueue: CompletionQueue, receiveQueue: CompletionQueue,
        maxSend: UInt32 = 64, maxReceive: UInt32 = 64, maxInlineData: UInt32 = 0
    ) throws(VerbsError) -> QueuePair {
        var attributes = ibv_qp_init_attr()
        attributes.send_cq = sendQueue.pointer
        attributes.recv_cq = receiveQueue.pointer
        attributes.qp_type = IBV_QPT_RC
        attributes.cap.max_send_wr = maxSend
        attributes.cap.max_recv_wr = maxReceive
        attributes.cap.max_send_sge = 1
        attributes.cap.max_recv_sge = 1
        attributes.cap.max_inline_data = maxInlineData
        attributes.sq_sig_all = 1
        guard let qp = ibv_create_qp(pointer, &attributes) else {
            throw VerbsError(op: "ibv_create_qp", errno: currentErrno(), detail: "RC")
        }
        return QueuePair(protectionDomain: self, sendQueue: sendQueue, receiveQueue: receiveQueue, pointer: qp)
    }
}
