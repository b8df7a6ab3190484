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
