import Logging
import LinuxFile
import MRLeasePolicy
import Verbs

/// Who a region belongs to: one daemon client, or one test. Each owner gets its own PD, so one
/// owner's rkeys are useless on another owner's QPs (the remote-access issue builds on this).
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

/// The verbs side of the engine: registers memory in an owner's PD. The real one is
/// `VerbsRegistrar`; host tests use a double to check ordering, never to claim RDMA works.
public protocol Registrar: AnyObject {
    var deviceName: String { get }
    var odp: ODPCaps { get }
    func register(owner: OwnerID, address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) throws(VerbsError) -> any RegisteredMemory
    /// The owner has no regions left: its PD may go.
    func release(owner: OwnerID)
}

/// Registers on one real device, with one `ClientDomain` (one PD) per owner.
public final class VerbsRegistrar: Registrar {
    public let context: Context
    public let odp: ODPCaps
    private let logger: Logger
    private var domains: [OwnerID: ClientDomain] = [:]

    public init(context: Context, logger: Logger = Logger(label: "mrleased.registrar")) throws(VerbsError) {
        self.context = context
        self.logger = logger
        self.odp = try context.query().odp
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
            try self.init(context: shared, logger: logger)
        } else {
            logger.warning("librdmacm has no context for the device: opened with ibv_open_device, so rdma_create_qp will refuse this registrar's PDs",
                           metadata: ["device": "\(device.name)", "op": "rdma_get_devices", "reason": "\(why)"])
            try self.init(context: try device.open(), logger: logger)
        }
    }

    public var deviceName: String { context.device.name }

    /// The owner's domain, made (with its PD) on first use.
    public func domain(for owner: OwnerID) throws(VerbsError) -> ClientDomain {
        if let domain = domains[owner] { return domain }
        let domain = try ClientDomain(context: context)
        domains[owner] = domain
        return domain
    }

    public func protectionDomain(for owner: OwnerID) throws(VerbsError) -> ProtectionDomain {
        try domain(for: owner).protectionDomain
    }

    public func register(owner: OwnerID, address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) throws(VerbsError) -> any RegisteredMemory {
        try domain(for: owner).register(address: address, length: length, access: flags)
    }

    /// Closes the owner's domain now, in order (its QPs, then MRs, then its PD), rather than
    /// whenever the last reference goes. The engine deregisters its regions first; an MR it
    /// still holds becomes a closed shell whose `deregister()` does nothing.
    public func release(owner: OwnerID) {
        guard let domain = domains.removeValue(forKey: owner) else { return }
        do {
            try domain.close()
        } catch {
            logger.error("closing the owner's domain failed: what refused stays allocated until its last reference goes",
                         metadata: ["owner": "\(owner)", "op": "\(error.op)", "errno": "\(error.errno.symbolicName)",
                                    "error": "\(error)"])
        }
    }
}
