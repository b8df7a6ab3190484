import LinuxFile
import MRLeasePolicy
import SystemPackage
import Verbs

/// Why the engine refused a request: the plan's refusal (the request itself), or the state of
/// the file, or a system call. `description` is the message for humans: the operation, the
/// errno, what to do.
public enum EngineError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The registration plan's refusal: the fd, the range or the device cannot serve it.
    case refused(PlanRefusal)
    /// The kernel refused our lease (EAGAIN: someone else has the file open), or the file is
    /// being revoked or restored, or held read-only for other regions.
    case fileBusy(leaseType: String)
    case unknownRegion(RegionID)
    /// The file changed under a registration in progress (its lease broke while a worker
    /// pinned the range): nothing was registered, and asking again is the remedy.
    case interrupted(String)
    /// A system call failed where the caller can do nothing but report it.
    case system(op: String, errno: Errno)
    /// Something the engine's own rules say cannot happen did: a bug, reported as such (no
    /// errno: no call failed), never dressed up as a kernel's answer.
    case bug(String)

    public var errno: Errno? {
        switch self {
        case .refused(let refusal): refusal.errno
        case .fileBusy: .resourceTemporarilyUnavailable
        case .unknownRegion, .interrupted: nil
        case .system(_, let errno): errno
        case .bug: nil
        }
    }

    public var description: String {
        switch self {
        case .refused(let refusal):
            refusal.message
        case .fileBusy(let type):
            "F_SETLEASE (\(type)) refused with EAGAIN: the file is open elsewhere (another process, or a second open of your own); close other opens, or pass the fd you use"
        case .unknownRegion(let region):
            "no region \(region) (deregistered, lost, or owned by another client)"
        case .interrupted(let what):
            what
        case .system(let op, let errno):
            "\(op) failed: \(errno.symbolicName) (\(errno))"
        case .bug(let what):
            "an mrleased bug: \(what); please report it with the daemon's log"
        }
    }
}

/// What owners are told about their regions. Keys change on every re-registration; the
/// region id does not.
public enum EngineEvent: Sendable, Equatable {
    /// Stop issuing RDMA to these regions of one file and acknowledge; at the deadline the
    /// MRs go whether or not you did. One per owner and file: a break of 10 000 regions is one
    /// event, not 10 000.
    case revoking(Revocation)
    case revoked(RegionID)
    case restored(RegionID, keys: MRKeys, layout: LayoutChange)
    /// `message` says how, where the reason alone does not (a failed re-registration).
    case lost(RegionID, reason: RegionLoss, message: String?)
    /// The file lost its last name while registered. Nothing is revoked: the inode and its
    /// data live while any fd (the engine's own included) is open, and the MR stays coherent;
    /// but the space comes back only when the region is deregistered.
    case unlinked(RegionID)
    /// A `follow` region's range changed in the file (`changed`), or the daemon could not
    /// read the extents to tell (`unknown`); `size` is the file's size now. Nothing was
    /// revoked: the MR, its keys and its peers stay, and follow the file.
    case layout(RegionID, layout: LayoutChange, size: UInt64)
    /// The region is gone because its owner deregistered it: its MR, and the exposures of its
    /// grants, are gone already. Not for the owner, whose reply says so; for the other
    /// subscribers (the peer service ends the region's grants, so their peers hear
    /// `region-gone`).
    case deregistered(RegionID)

    /// The regions the event is about: one, or a revocation's.
    public var regions: [RegionID] {
        switch self {
        case .revoking(let revocation): revocation.regions
        case .revoked(let id), .restored(let id, _, _), .lost(let id, _, _), .unlinked(let id),
             .layout(let id, _, _), .deregistered(let id): [id]
        }
    }
}

/// One owner's regions of one file that a revocation takes.
public struct Revocation: Sendable, Equatable {
    public var file: FileKey
    /// Ascending, every one the owner's.
    public var regions: [RegionID]
    public var cause: RevocationCause
    /// Monotonic ns.
    public var deadline: UInt64

    public init(file: FileKey, regions: [RegionID], cause: RevocationCause, deadline: UInt64) {
        self.file = file
        self.regions = regions
        self.cause = cause
        self.deadline = deadline
    }
}

/// One event for one owner, as an engine call returns it: the engine never calls out while
/// it is changing state; its caller routes what it returns.
public struct EngineNotice: Sendable, Equatable {
    public var owner: OwnerID
    public var event: EngineEvent

    public init(owner: OwnerID, event: EngineEvent) {
        self.owner = owner
        self.event = event
    }
}

/// The keys and address a peer needs to reach a region through its current MR.
public struct MRKeys: Sendable, Equatable, Hashable, Codable {
    public var lkey: UInt32
    public var rkey: UInt32
    public var address: UInt64
    public init(lkey: UInt32, rkey: UInt32, address: UInt64) {
        self.lkey = lkey
        self.rkey = rkey
        self.address = address
    }
}

/// What one uid holds in regions, over all its owners.
public struct Usage: Sendable, Equatable {
    public var regions = 0
    public var bytes: UInt64 = 0
    public init() {}
}
