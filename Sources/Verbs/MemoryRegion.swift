import CRDMA

/// A registered memory region. Owns its `ibv_mr` and keeps its `ProtectionDomain` alive.
///
/// `deregister()` releases it deterministically (the engine must deregister before it unlocks a
/// lease); `deinit` releases it if nobody did.
public final class MemoryRegion {
    public let protectionDomain: ProtectionDomain
    public let access: AccessFlags
    public let lkey: UInt32
    public let rkey: UInt32
    public let address: UInt64
    public let length: Int
    private var pointer: UnsafeMutablePointer<ibv_mr>?

    init(protectionDomain: ProtectionDomain, pointer: UnsafeMutablePointer<ibv_mr>, access: AccessFlags) {
        self.protectionDomain = protectionDomain
        self.pointer = pointer
        self.access = access
        lkey = pointer.pointee.lkey
        rkey = pointer.pointee.rkey
        address = UInt64(UInt(bitPattern: pointer.pointee.addr))
        length = pointer.pointee.length
    }

    deinit {
        if let pointer { _ = ibv_dereg_mr(pointer) }
    }

    public var isRegistered: Bool { pointer != nil }

    /// Asks the device to fault the MR's pages in now rather than at the first access (an ODP
    /// MR only; others answer EOPNOTSUPP or EINVAL): `forWriting` faults them writable, as a
    /// remote WRITE needs. Without `synchronous` the call only starts the work.
    ///
    /// The corresponding C function is `ibv_advise_mr` with `IBV_ADVISE_MR_ADVICE_PREFETCH` or
    /// `IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE` (and `IBV_ADVISE_MR_FLAG_FLUSH` when synchronous).
    public func prefetch(forWriting: Bool, synchronous: Bool = false) throws(VerbsError) {
        guard pointer != nil else { throw VerbsError(op: "ibv_advise_mr", errno: .invalidArgument, detail: "rkey \(rkey) is deregistered") }
        let pd = try protectionDomain.open(for: "ibv_advise_mr")
        let advice = forWriting ? IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE : IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH
        let flags = synchronous ? UInt32(IB_UVERBS_ADVISE_MR_FLAG_FLUSH.rawValue) : 0
        // One scatter entry holds at most 4 GiB - 1: longer MRs are advised in pieces.
        var offset = 0
        repeat {
            let piece = min(length - offset, Int(UInt32.max) & ~0xFFF)
            var sge = ibv_sge(addr: address + UInt64(offset), length: UInt32(piece), lkey: lkey)
            try check("ibv_advise_mr", ibv_advise_mr(pd, advice, flags, &sge, 1), detail: "rkey \(rkey)")
            offset += piece
        } while offset < length
    }

    /// Deregisters the MR: after this returns, the device no longer accepts its keys.
    /// Calling it again does nothing.
    ///
    /// The corresponding C function is `ibv_dereg_mr`.
    public func deregister() throws(VerbsError) {
        guard let pointer else { return }
        try check("ibv_dereg_mr", ibv_dereg_mr(pointer), detail: "rkey \(rkey)")
        self.pointer = nil
    }
}
