import LinuxFile
import SystemPackage

/// One file with live regions: the engine's own fd for it, its lease, the extent map the
/// regions were registered against, and the lifecycle that revokes and restores them together.
final class TrackedFile {
    let key: FileKey
    /// Our own duplicate of the client's fd: the same open file description, so the client's
    /// fd does not count as "another open" against our lease.
    let fd: FileDescriptor
    let writable: Bool
    let backing: Backing
    var extents: ExtentMap?
    var size: UInt64
    var lifecycle = FileLifecycle(regions: [])
    var regions: [RegionID: Region] = [:]
    /// The strategy that worked last, per writability, tried first for the next region.
    var strategyCache: [Bool: Strategy] = [:]
    var leaseHeld = false
    var timer: UInt64?
    var watch: Int32?
    /// When the current break arrived (monotonic ns), for break-to-unlock latency.
    var breakStarted: UInt64?

    init(key: FileKey, fd: FileDescriptor, writable: Bool, backing: Backing, size: UInt64, extents: ExtentMap?, timing: FileLifecycle.Timing) {
        self.key = key
        self.fd = fd
        self.writable = writable
        self.backing = backing
        self.size = size
        self.extents = extents
        self.lifecycle = FileLifecycle(regions: [], timing: timing)
    }

    /// Writable regions need a write lease on the O_RDWR fd: a read lease is refused while any
    /// writable fd exists, our own included (KERNEL-FACTS).
    var leaseType: LeaseType { writable ? .write : .read }

    var lease: FileLease { FileLease(fd: fd) }

    /// FIEMAP, synced; nil where the filesystem has no block layout (shmem answers EOPNOTSUPP).
    static func readExtents(_ fd: FileDescriptor, backing: Backing) throws(Errno) -> ExtentMap? {
        do {
            return try fd.extents(sync: true)
        } catch {
            if backing == .shmem && (error == .notSupported || error == .inappropriateIOCTLForDevice) { return nil }
            throw error
        }
    }
}
