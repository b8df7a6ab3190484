import SystemPackage
import Verbs

/// Why the engine refused a request. `code` is the stable machine code the protocol puts on
/// the wire; `description` is the message for humans: the operation, the errno, what to do.
public enum EngineError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Someone else has the file open, so the kernel refuses our lease (EAGAIN).
    case fileBusy(leaseType: String)
    /// The fd's open mode does not allow the access asked for.
    case accessDenied(String)
    case notRegularFile(kind: String)
    case rangeOutOfFile(offset: UInt64, length: UInt64, size: UInt64)
    case badAlignment(offset: UInt64, pageSize: Int)
    case strategyUnavailable(StrategyRefusal)
    case unknownRegion(RegionID)
    /// A system call failed where the caller can do nothing but report it.
    case system(op: String, errno: Errno)

    public var code: String {
        switch self {
        case .fileBusy: "file-busy"
        case .accessDenied: "access-denied"
        case .notRegularFile: "not-regular-file"
        case .rangeOutOfFile: "range-out-of-file"
        case .badAlignment: "bad-alignment"
        case .strategyUnavailable: "strategy-unavailable"
        case .unknownRegion: "unknown-region"
        case .system: "internal"
        }
    }

    public var errno: Errno? {
        switch self {
        case .fileBusy: .resourceTemporarilyUnavailable
        case .strategyUnavailable(let refusal): refusal.errno
        case .system(_, let errno): errno
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .fileBusy(let type):
            "F_SETLEASE (\(type)) refused with EAGAIN: the file is open elsewhere (another process, or a second open of your own); close other opens, or pass the fd you use"
        case .accessDenied(let why):
            why
        case .notRegularFile(let kind):
            "the fd is a \(kind), not a regular file: only regular files can be registered"
        case .rangeOutOfFile(let offset, let length, let size):
            "range [\(offset), \(offset + length)) is not inside the file (size \(size)); extend the file first"
        case .badAlignment(let offset, let page):
            "offset \(offset) is not a multiple of the page size (\(page))"
        case .strategyUnavailable(let refusal):
            refusal.message
        case .unknownRegion(let region):
            "no region \(region) (deregistered, lost, or owned by another client)"
        case .system(let op, let errno):
            "\(op) failed: \(errno.symbolicName) (\(errno))"
        }
    }
}

/// What owners are told about their regions. Keys change on every re-registration; the
/// region id does not.
public enum EngineEvent: Sendable, Equatable {
    /// Stop issuing RDMA to the region and acknowledge; at `deadline` (monotonic ns) the MR
    /// goes whether or not you did.
    case revoking(RegionID, reason: String, deadline: UInt64)
    case revoked(RegionID)
    case restored(RegionID, keys: MRKeys, layoutChanged: Bool)
    case lost(RegionID, reason: String)
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
