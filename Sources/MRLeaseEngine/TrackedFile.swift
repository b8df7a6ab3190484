import LinuxFile
import MRLeasePolicy
import SystemPackage

/// What the engine knows of a file's block layout.
enum Extents {
    /// FIEMAP's answer; nil where the filesystem has no block layout (shmem).
    case known(ExtentMap?)
    /// FIEMAP failed: the layout could not be read, so no comparison with it can say
    /// "unchanged".
    case unknown(Errno)

    /// Whether `[offset, offset+length)` moved from `self` to `now`.
    func change(to now: Extents, offset: UInt64, length: UInt64) -> LayoutChange {
        guard case .known(let before) = self, case .known(let after) = now else { return .unknown }
        switch (before, after) {
        case (nil, nil): return .unchanged
        case (let before?, let after?): return before.differs(from: after, offset: offset, length: length) ? .changed : .unchanged
        default: return .changed
        }
    }

    func count(offset: UInt64, length: UInt64) -> Int {
        guard case .known(let map?) = self else { return 0 }
        return map.extents(overlapping: offset, length: length).count
    }
}

/// One file with live regions: the engine's own fd for it, its lease, the extent map the
/// regions were registered against, and the lifecycle that revokes and restores them together.
///
/// Two kinds of regions share it. *Guarded* ones (layout policy `revoke`: every pinned region)
/// are the lifecycle's: the lease is held while there is one, and a break or a layout change
/// revokes and restores them. *Following* ones (`follow`: ODP) are not the lifecycle's: no lease
/// is taken for them, nothing revokes them, and a layout check compares their ranges against
/// `followExtents` and tells their owners (`layout`), or loses the ones the file no longer
/// covers. Each kind has its own baseline, since each is compared at its own time.
final class TrackedFile {
    let key: FileKey
    /// Our own duplicate of the client's fd: the same open file description, so the client's
    /// fd does not count as "another open" against our lease.
    let fd: FileDescriptor
    let writable: Bool
    let backing: Backing
    /// What the guarded regions were registered (or last restored) against.
    var extents: Extents
    var size: UInt64
    /// What the following regions' owners were last told of (at registration, or the last
    /// layout check that compared them).
    var followExtents: Extents
    @exclusivity(unchecked) var lifecycle = FileLifecycle(regions: [])
    @exclusivity(unchecked) var regions = RegionTable()
    /// The file's shared mappings, by span: each region is registered in the one covering it.
    @exclusivity(unchecked) var windows: [WindowSpan: MappedWindow] = [:]
    /// How a region about to be reported lost was lost, where the reason alone does not say.
    var lossMessages: [RegionID: String] = [:]
    /// The strategy that worked last, per writability, tried first for the next region.
    @exclusivity(unchecked) var strategyCache = StrategyCache()
    /// Why a region of this file got its strategy, when the first attempt worked: the same
    /// words for every such region with the same access and preference, so they are made
    /// (and stored) once, not once per registration.
    /// A handful of entries, so a scan: no hashing on the registration path.
    @exclusivity(unchecked) var reasons: [(key: ReasonKey, reason: String)] = []
    /// The window the last registration used: most files have one, and most registrations
    /// land in the window before them.
    @exclusivity(unchecked) var lastWindow: MappedWindow?
    @exclusivity(unchecked) var leaseHeld = false
    /// One more each time the lease is taken: a pin made on a worker (`PinJob`) is good only
    /// if the lease it began under was held throughout.
    var leaseEpoch: UInt64 = 0
    /// The windows of registrations whose pin runs on a worker (`PinJob`), one entry each:
    /// they keep the file tracked, its lease, and their window mapped.
    @exclusivity(unchecked) var pinWindows: [MappedWindow] = []
    /// The restoration waiting for its pins, if one is.
    var restoration: Restoration?
    /// Whether IN_MODIFY came while pins were under way: compared when the last is in.
    var touchedWhilePinning = false
    var timer: UInt64?
    /// The file's one inotify watch (one per inode, one mask): layout changes and unlinks
    /// always, closes too while `watchingCloses` (released, waiting to restore).
    var watch: Int32?
    var watchingCloses = false
    /// When the layout was last compared with `extents` (monotonic ns), and the debounce
    /// timer of a comparison put off until `layoutCheckInterval` has passed.
    var layoutCheckedAt: UInt64?
    var layoutTimer: UInt64?
    /// The regions a layout check found changed, for the restore to report `changed` where
    /// FIEMAP cannot show it (shmem's pages).
    var layoutChanged: Set<RegionID> = []
    /// Whether the owners were told the file lost its last name.
    var unlinkReported = false
    /// When the current break arrived (monotonic ns), for break-to-unlock latency.
    var breakStarted: UInt64?
    /// The owners the last revocation told, in the order they were told: one alone acks the
    /// whole file without a walk (`Engine.acknowledge(file:owner:)`).
    var revokingOwners: [OwnerID] = []

    init(key: FileKey, fd: FileDescriptor, writable: Bool, backing: Backing, size: UInt64, extents: Extents, timing: FileLifecycle.Timing) {
        self.key = key
        self.fd = fd
        self.writable = writable
        self.backing = backing
        self.size = size
        self.extents = extents
        self.followExtents = extents
        self.lifecycle = FileLifecycle(regions: [], timing: timing)
    }

    /// Writable regions need a write lease on the O_RDWR fd: a read lease is refused while any
    /// writable fd exists, our own included (docs/kernel-matrix.md).
    var leaseType: LeaseType { writable ? .write : .read }

    /// Whether the regions' MRs are registered: leased, or quiescing for a break.
    var mrsRegistered: Bool {
        switch lifecycle.phase {
        case .leased, .revoking: true
        case .released, .lost: false
        }
    }

    var lease: FileLease { FileLease(fd: fd) }

    /// Whether some region follows the file (is not the lifecycle's).
    var hasFollowingRegions: Bool { regions.count > lifecycle.regions.count }

    /// Whether nothing keeps the file tracked: no region, and no pin under way.
    var isIdle: Bool { regions.isEmpty && pinWindows.isEmpty }

    /// Whether the lease is needed: some region is guarded.
    var hasGuardedRegions: Bool { !lifecycle.regions.isEmpty }
}

/// Reads a file's extents: FIEMAP, synced. The engine's one way to look at a layout, behind a
/// seam so a test can make it fail after registration.
public struct ExtentReader: Sendable {
    public let read: @Sendable (FileDescriptor, Backing) throws(Errno) -> ExtentMap?

    public init(_ read: @escaping @Sendable (FileDescriptor, Backing) throws(Errno) -> ExtentMap?) {
        self.read = read
    }

    /// FIEMAP; nil where the filesystem has no block layout (shmem answers EOPNOTSUPP).
    public static let fiemap = ExtentReader { fd, backing throws(Errno) in
        do throws(Errno) {
            return try fd.extents(sync: true)
        } catch {
            if backing == .shmem && (error == .notSupported || error == .inappropriateIOCTLForDevice) { return nil }
            throw error
        }
    }
}

/// What a strategy reason depends on, for a file (its backing and device are fixed): the
/// access, the preference, the strategy that worked at the first attempt, and which strategies
/// the plan skipped.
struct ReasonKey: Hashable {
    var access: RegionAccess
    var preference: Strategy?
    var strategy: Strategy
    var skipped: Int
}

/// The strategy that worked last for a file, per writability: two fields, not a dictionary.
struct StrategyCache {
    private var writable: Strategy?
    private var readOnly: Strategy?

    subscript(isWritable: Bool) -> Strategy? {
        get { isWritable ? writable : readOnly }
        set { if isWritable { writable = newValue } else { readOnly = newValue } }
    }
}

extension TrackedFile {
    func reason(for key: ReasonKey) -> String? {
        reasons.first { $0.key == key }?.reason
    }

    func remember(_ reason: String, for key: ReasonKey) {
        if reasons.count < 16 { reasons.append((key, reason)) }
    }
}
