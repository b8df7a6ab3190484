import Logging
import LinuxFile
import MRLeasePolicy
import Verbs

/// Who a region belongs to: one daemon client, or one test. Owners share the registrar's one
/// region PD, which holds no queue pair (see `VerbsRegistrar`): what keeps one owner's regions
/// from another's peers is the grant's own PD, not the owner's.
public struct OwnerID: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: OwnerID, b: OwnerID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "o\(rawValue)" }
}

/// A live MR as the engine sees it.
public protocol RegisteredMemory: AnyObject {
    var lkey: UInt32 { get }
    var rkey: UInt32 { get }
    var address: UInt64 { get }
    func deregister() throws(VerbsError)
    /// Starts faulting an ODP MR's pages in (`ibv_advise_mr` PREFETCH, or PREFETCH_WRITE).
    func prefetch(forWriting: Bool, synchronous: Bool) throws(VerbsError)
}

extension MemoryRegion: RegisteredMemory {}

/// Something besides the region's own MR that reaches the region's memory: a grant's MR in the
/// grant's PD, and the queue pairs of the peers using it. The engine withdraws every exposure of
/// a region when a revocation begins (before the owner hears `revoking`) and before it
/// deregisters the region's MR, whatever the reason (layout change, deregistration, the owner
/// leaving), so nothing reaches the pages once the lease can go. `withdraw()` must stop all
/// access before it returns, and do nothing when called again; freeing what it stopped is its
/// maker's business, later.
public protocol RegionExposure: AnyObject {
    var isWithdrawn: Bool { get }
    func withdraw() throws(VerbsError)
}

/// What an exposure of a region must cover: the region's mapping as the engine registered it.
public struct ExposureTarget {
    public var region: RegionID
    public var owner: OwnerID
    /// The first byte of the region in the daemon's mapping.
    public var address: UnsafeMutableRawPointer
    public var length: Int
    /// The flags the region's MR was registered with (ODP included).
    public var flags: AccessFlags
    public var strategy: Strategy
    public var generation: UInt64
}

/// The verbs side of the engine: registers a region's memory (the registration that pins a
/// pinned region's pages, or holds an ODP region's mapping in the device). The real one is
/// `VerbsRegistrar`; host tests use a double to check ordering, never to claim RDMA works.
public protocol Registrar: AnyObject {
    var deviceName: String { get }
    var odp: ODPCaps { get }
    /// Thread-safe for `VerbsRegistrar`: a pin worker calls it while the engine's thread
    /// registers too.
    func register(address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) throws(VerbsError) -> any RegisteredMemory
    /// The same range as `slices` MRs pinned in parallel, held as one (`SlicedMemory`): for
    /// a large pinned range. A double may register it whole.
    func register(address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags, slices: Int) throws(VerbsError) -> any RegisteredMemory
    /// Forgets what it keeps of MRs that are gone, after many went at once.
    func forgetGone()
}

extension Registrar {
    public func forgetGone() {}

    public func register(address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags, slices: Int) throws(VerbsError) -> any RegisteredMemory {
        try register(address: address, length: length, flags: flags)
    }
}

/// A region's registration made of several MRs over consecutive slices of its range, pinned in
/// parallel. It stands for one registration: a region's own MR is never used for RDMA (see
/// `VerbsRegistrar`), so what it must do is hold the pages and go; its keys and address are
/// the first slice's, and they change with every registration as a whole MR's do. Peers reach
/// the region through a grant's own MR of the whole range, never through these.
public final class SlicedMemory: RegisteredMemory {
    public let slices: [any RegisteredMemory]

    public init(_ slices: [any RegisteredMemory]) {
        precondition(!slices.isEmpty, "a sliced registration of no slice")
        self.slices = slices
    }

    public var lkey: UInt32 { slices[0].lkey }
    public var rkey: UInt32 { slices[0].rkey }
    public var address: UInt64 { slices[0].address }

    /// Deregisters every slice (all are tried); the first failure is thrown.
    public func deregister() throws(VerbsError) {
        var failure: VerbsError?
        for slice in slices {
            do throws(VerbsError) { try slice.deregister() } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
    }

    public func prefetch(forWriting: Bool, synchronous: Bool) throws(VerbsError) {
        for slice in slices { try slice.prefetch(forWriting: forWriting, synchronous: synchronous) }
    }
}

/// Registers on one real device, every region in one PD that holds no queue pair.
///
/// The region MR's job is the registration itself: it pins a pinned region's pages (what the
/// lease protects) or maps an ODP region in the device, and its keys identify that
/// registration (they change when the region is registered again). Nobody reaches memory
/// through it: the daemon creates no QP in this PD, a client process cannot use another
/// process's keys, and peers reach a region only through a grant's PD (its own MR of the same
/// mapping, with the grant's rights). Until 2026-12 each owner had a PD of its own; it never
/// held a QP either, so it isolated nothing and cost an `ibv_alloc_pd` per client.
public final class VerbsRegistrar: Registrar {
    public let context: Context
    public let odp: ODPCaps
    /// The region PD. Tests and benchmarks make loopback QPs in it to play a peer; the
    /// daemon never does.
    public let protectionDomain: ProtectionDomain

    public init(context: Context) throws(VerbsError) {
        self.context = context
        self.odp = try context.query().odp
        self.protectionDomain = try context.allocateProtectionDomain()
    }

    /// Opens the named device, or the first one when `name` is nil, on librdmacm's context
    /// for it: `rdma_create_qp` accepts only PDs allocated on the context its `rdma_cm_id`
    /// was bound to, which is always one of `rdma_get_devices()`'s. Only when librdmacm has no
    /// context for the device (no `rdma_ucm`, or the device is not one it lists) does this
    /// open its own with `ibv_open_device`, and it logs that its PDs cannot carry rdma_cm QPs.
    public convenience init(deviceNamed name: String?, logger: Logger = Logger(label: "mrleased.registrar")) throws(VerbsError) {
        let devices = try Device.list()
        guard let device = devices.first(where: { name == nil || $0.name == name }) else {
            throw VerbsError(op: "ibv_get_device_list", errno: .operationNotSupportedByDevice,
                             detail: name.map { "no RDMA device named \($0)" } ?? "no RDMA devices")
        }
        let shared: Context?
        var why: String
        do {
            shared = try Context.librdmacm(deviceNamed: device.name)
            why = "rdma_get_devices does not list it"
        } catch {
            shared = nil
            why = "\(error)"
        }
        if let shared {
            try self.init(context: shared)
        } else {
            logger.warning("librdmacm has no context for the device: opened with ibv_open_device, so rdma_create_qp will refuse this registrar's PDs",
                           metadata: ["device": "\(device.name)", "op": "rdma_get_devices", "reason": "\(why)"])
            try self.init(context: try device.open())
        }
    }

    public var deviceName: String { context.device.name }

    public func register(address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) throws(VerbsError) -> any RegisteredMemory {
        try protectionDomain.register(address: address, length: length, access: flags)
    }

    public func register(address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags, slices: Int) throws(VerbsError) -> any RegisteredMemory {
        guard slices > 1 else { return try register(address: address, length: length, flags: flags) }
        let parts = try protectionDomain.register(address: address, length: length, access: flags, slices: slices, pageSize: SharedMapping.pageSize)
        return parts.count == 1 ? parts[0] : SlicedMemory(parts)
    }

    public func forgetGone() { protectionDomain.forgetGone() }
}
