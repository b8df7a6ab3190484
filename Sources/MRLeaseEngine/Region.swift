import LinuxFile
import MRLeasePolicy
import Verbs

/// A registered range of a tracked file, as `list` reports it.
public struct RegionInfo: Sendable, Equatable {
    public var id: RegionID
    public var owner: OwnerID
    public var file: FileKey
    public var offset: UInt64
    public var length: UInt64
    public var access: RegionAccess
    public var strategy: Strategy
    public var strategyReason: String
    /// `follow` (an ODP MR that stays through layout changes) or `revoke`.
    public var layoutPolicy: LayoutPolicy
    public var backing: Backing
    public var device: String
    public var state: RegionState
    /// nil while revoked: there is no MR then.
    public var keys: MRKeys?
    /// 1 at registration, one more at each restoration: a peer's keys are good for one
    /// generation (docs/protocol.md, remote access).
    public var generation: UInt64 = 1
}

/// A tracked file's identity: (device, inode). Two fds of one file are one tracked file.
public struct FileKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var device: DeviceNumber
    public var inode: UInt64
    public init(device: DeviceNumber, inode: UInt64) {
        self.device = device
        self.inode = inode
    }
    public static func < (a: FileKey, b: FileKey) -> Bool {
        (a.device.major, a.device.minor, a.inode) < (b.device.major, b.device.minor, b.inode)
    }
    public var description: String { "\(device):\(inode)" }
}

/// The engine's record of one region: what was asked, and its current mapping and MR.
final class Region {
    let id: RegionID
    let owner: OwnerID
    /// The uid the owner runs as: usage is counted per uid.
    let uid: UInt32
    /// How it was registered; a restoration re-runs it with the strategy that worked.
    let plan: RegistrationPlan
    var offset: UInt64 { plan.offset }
    var length: UInt64 { plan.length }
    var access: RegionAccess { plan.access }
    var strategy: Strategy
    var strategyReason: String
    /// Decided at registration from the plan and the strategy that worked; never changes (a
    /// restoration keeps the strategy).
    let policy: LayoutPolicy
    var state: RegionState = .registered
    /// Whether the file's revocation in progress waits for this region's ack: set for every
    /// guarded region when owners are told, cleared by its ack, its removal or the revocation.
    /// The lifecycle counts them (`FileLifecycle.Phase.revoking`).
    var awaitingAck = false
    /// What the last restoration found of the region's extents.
    var layout: LayoutChange = .unchanged
    /// The file's shared mapping the MR is registered in: kept while the region is revoked
    /// (restoration registers into it again), given back when the region goes.
    var window: MappedWindow?
    var mr: (any RegisteredMemory)?
    /// The flags `mr` was registered with: an exposure registers the same pages the same way.
    var flags: AccessFlags
    /// 1 at registration, one more at each restoration.
    var generation: UInt64 = 1
    /// What else reaches the region's memory (a grant's MR and its peers' QPs): withdrawn
    /// before the MR is deregistered, whatever tears the region down.
    var exposures: [any RegionExposure] = []

    init(id: RegionID, owner: OwnerID, uid: UInt32, plan: RegistrationPlan,
         strategy: Strategy, strategyReason: String, window: MappedWindow, mr: any RegisteredMemory, flags: AccessFlags) {
        self.id = id
        self.owner = owner
        self.uid = uid
        self.plan = plan
        self.strategy = strategy
        self.strategyReason = strategyReason
        self.policy = plan.layoutPolicy(for: strategy)
        self.window = window
        self.mr = mr
        self.flags = flags
    }

    /// Whether the file's lease guards this region: its lifecycle revokes and restores it.
    var isGuarded: Bool { policy == .revoke }

    var keys: MRKeys? { mr.map { MRKeys(lkey: $0.lkey, rkey: $0.rkey, address: $0.address) } }

    /// The region's first byte in the daemon's address space (nil once the region is gone).
    var address: UnsafeMutableRawPointer? { window?.address(of: offset) }

    /// Withdraws every exposure (each stops its peers' wire and deregisters its MR) and forgets
    /// them: no peer reaches the pages through them after this returns. The first failure.
    func withdrawExposures() -> VerbsError? {
        var failure: VerbsError?
        for exposure in exposures {
            do throws(VerbsError) { try exposure.withdraw() } catch { failure = failure ?? error }
        }
        exposures = []
        return failure
    }

    /// Withdraws every exposure, then deregisters the MR: nothing reaches the pages after
    /// this returns. The mapping stays (the engine gives the window back when the region goes).
    /// Returns the first failure, if any (a failed ibv_dereg_mr leaves nothing the engine could
    /// retry: the MR is dropped regardless). Does nothing on a region without an MR.
    func deregister() -> VerbsError? {
        deregister(retiring: nil)
    }

    /// `deregister()`, handing the deregistered MR's object to `retired` instead of freeing it
    /// here: a revocation frees its thousands of MR objects after the unlock, not before.
    func deregister(retiring retired: UnsafeMutablePointer<[any RegisteredMemory]>?) -> VerbsError? {
        // Exposures first: no peer may reach the pages once the lease can go.
        var failure = exposures.isEmpty ? nil : withdrawExposures()
        guard let mr else { return failure }
        do { try mr.deregister() } catch { failure = failure ?? error }
        retired?.pointee.append(mr)
        self.mr = nil
        return failure
    }
}
