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
}

extension MemoryRegion: RegisteredMemory {}

/// The verbs side of the engine: registers memory in an owner's PD. The real one is
/// `VerbsRegistrar`; host tests use a double to check ordering, never to claim RDMA works.
public protocol Registrar: AnyObject {
    var deviceName: String { get }
    var odp: ODPCaps { get }
    func register(owner: OwnerID, address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) throws(VerbsError) -> any RegisteredMemory
    /// The owner has no regions left: its PD may go.
    func release(owner: OwnerID)
}

/// Registers on one real device, with one protection domain per owner.
public final class VerbsRegistrar: Registrar {
    public let context: Context
    public let odp: ODPCaps
    private var domains: [OwnerID: ProtectionDomain] = [:]

    public init(context: Context) throws(VerbsError) {
        self.context = context
        self.odp = try context.query().odp
    }

    /// Opens the named device, or the first one when `name` is nil.
    public convenience init(deviceNamed name: String?) throws(VerbsError) {
        let devices = try Device.list()
        guard let device = devices.first(where: { name == nil || $0.name == name }) else {
            throw VerbsError(op: "ibv_get_device_list", errno: .operationNotSupportedByDevice,
                             detail: name.map { "no RDMA device named \($0)" } ?? "no RDMA devices")
        }
        try self.init(context: try device.open())
    }

    public var deviceName: String { context.device.name }

    public func protectionDomain(for owner: OwnerID) throws(VerbsError) -> ProtectionDomain {
        if let pd = domains[owner] { return pd }
        let pd = try context.allocateProtectionDomain()
        domains[owner] = pd
        return pd
    }

    public func register(owner: OwnerID, address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) throws(VerbsError) -> any RegisteredMemory {
        try protectionDomain(for: owner).register(address: address, length: length, access: flags)
    }

    public func release(owner: OwnerID) {
        // MRs hold their PD, so a PD still referenced by a live MR outlives this.
        domains[owner] = nil
    }
}
