import LinuxFile
import MRLeaseEngine
import MRLeaseGrant
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

// The one place the engine's words meet the wire's. Every mapping is an exhaustive switch: a
// new case on either side fails to compile here instead of falling back to a default.

extension RegionAccess {
    init(wire: Set<Access>) {
        self = []
        for access in wire {
            switch access {
            case .read: insert(.read)
            case .write: insert(.write)
            case .atomic: insert(.atomic)
            }
        }
    }

    var wire: Set<Access> {
        Set(Access.allCases.filter { access in
            switch access {
            case .read: contains(.read)
            case .write: contains(.write)
            case .atomic: contains(.atomic)
            }
        })
    }
}

extension Strategy {
    var wire: RegionStrategy {
        switch self {
        case .odp: .odp
        case .pinned: .pinned
        }
    }

    /// The engine's preference for a request's `strategy`: nil lets the plan choose.
    init?(wire: StrategyPreference) {
        switch wire {
        case .odp: self = .odp
        case .pinned: self = .pinned
        case .any: return nil
        }
    }
}

extension Backing {
    var wire: FileBacking {
        switch self {
        case .fsDAX: .fsDAX
        case .pageCache: .pageCache
        case .shmem: .shmem
        }
    }
}

extension LayoutPolicy {
    var wire: RegionLayoutPolicy {
        switch self {
        case .follow: .follow
        case .revoke: .revoke
        }
    }

    init(wire: RegionLayoutPolicy) {
        switch wire {
        case .follow: self = .follow
        case .revoke: self = .revoke
        }
    }
}

extension RegionState {
    var wire: RegionStatus {
        switch self {
        case .registered: .registered
        case .revoking: .revoking
        case .revoked: .revoked
        case .lost: .lost
        }
    }
}

extension RegionLoss {
    var wire: LossReason {
        switch self {
        case .rangeTruncated: .rangeTruncated
        case .unlinked: .unlinked
        case .restoreFailed: .restoreFailed
        case .revoked: .revoked
        }
    }
}

extension RevocationCause {
    var wire: RevocationReason {
        switch self {
        case .leaseBreak: .leaseBreak
        case .layoutChanged: .layoutChanged
        }
    }
}

extension MRLeasePolicy.LayoutProtection {
    var wire: MRLeaseProtocol.LayoutProtection {
        switch self {
        case .inotifyDetect: .inotifyDetect
        case .none: .none
        }
    }
}

extension LayoutChange {
    var wire: LayoutStatus {
        switch self {
        case .changed: .changed
        case .unchanged: .unchanged
        case .unknown: .unknown
        }
    }
}

extension RefusalCode {
    var wire: ErrorCode {
        switch self {
        case .notRegularFile: .notRegularFile
        case .accessDenied: .accessDenied
        case .badAlignment: .badAlignment
        case .rangeOutOfFile: .rangeOutOfFile
        case .strategyUnavailable: .strategyUnavailable
        case .unsupportedFilesystem: .unsupportedFilesystem
        }
    }
}

extension ProtocolError {
    init(_ refusal: PlanRefusal) {
        self.init(refusal.code.wire, refusal.message, errnoName: refusal.errno?.symbolicName, errnoValue: refusal.errno?.rawValue)
    }

    init(_ error: EngineError) {
        if case .system(let op, let errno) = error, errno == .tooManyOpenFiles || errno == .tooManyOpenFilesInSystem {
            let limit = errno == .tooManyOpenFiles
                ? "its RLIMIT_NOFILE (LimitNOFILE= in mrleased.service; it raises its soft limit to the hard one at start)"
                : "the system's open-file limit (sysctl fs.file-max)"
            self.init(.outOfFDs, "mrleased is out of file descriptors (\(op): \(errno.symbolicName)), so nothing was done; retry later, or have the operator raise \(limit) or release regions",
                      errnoName: errno.symbolicName, errnoValue: errno.rawValue)
            return
        }
        let code: ErrorCode = switch error {
        case .refused(let refusal): refusal.code.wire
        case .fileBusy, .interrupted: .fileBusy
        case .unknownRegion: .unknownRegion
        case .system, .bug: .internal
        }
        self.init(code, error.description, errnoName: error.errno?.symbolicName, errnoValue: error.errno?.rawValue)
    }
}

extension Event {
    /// The wire form of an engine event: one per region of a revocation (`revoking`), or one
    /// per file (`revoking-file`, several if its runs do not fit one message) for a
    /// connection that asked; `now` turns the revoking deadline into milliseconds. None for
    /// `deregistered`: the owner asked, and its reply says so.
    static func wire(_ event: EngineEvent, now: UInt64, perFile: Bool) -> [Event] {
        guard case .revoking(let revocation) = event else { return Event(event, now: now).map { [$0] } ?? [] }
        let millis = revocation.deadline > now ? (revocation.deadline - now) / 1_000_000 : 0
        if perFile {
            return RevokingFile.events(file: revocation.file.wire, regions: revocation.regions.map(\.rawValue),
                                       reason: revocation.cause.wire, deadlineMillis: millis).map(Event.revokingFile)
        }
        return revocation.regions.map { .revoking(.init(region: $0.rawValue, reason: revocation.cause.wire, deadlineMillis: millis)) }
    }

    /// The wire form of an engine event about one region; nil for `deregistered` and for
    /// `revoking`, which `wire(_:now:perFile:)` spells.
    init?(_ event: EngineEvent, now: UInt64) {
        switch event {
        case .revoking:
            return nil
        case .revoked(let id):
            self = .revoked(region: id.rawValue)
        case .restored(let id, let keys, let layout):
            self = .restored(.init(region: id.rawValue, lkey: keys.lkey, rkey: keys.rkey, address: keys.address, layout: layout.wire))
        case .lost(let id, let reason, let message):
            self = .lost(.init(region: id.rawValue, reason: reason.wire, message: message ?? reason.rawValue))
        case .unlinked(let id):
            self = .unlinked(region: id.rawValue)
        case .layout(let id, let layout, let size):
            self = .layout(.init(region: id.rawValue, layout: layout.wire, size: size))
        case .deregistered:
            return nil
        }
    }
}

extension ODPIntegrity {
    var wire: ODPIntegrityStatus {
        switch self {
        case .intact: .intact
        case .corrupts: .corruptsUnaligned
        case .notApplicable: .notApplicable
        case .failed: .failed
        }
    }

    /// What the self-test saw, for `hello`'s `odpIntegrityDetail`; nil when intact.
    var detail: String? {
        switch self {
        case .intact: nil
        case .corrupts(let detail), .notApplicable(let detail): detail
        case .failed(let error): "\(error)"
        }
    }
}

extension GrantAccess {
    /// The grant formats' bit for each wire word (docs/protocol.md §8: 1 read, 2 write, 4 atomic).
    init(_ right: Access) {
        switch right {
        case .read: self = .read
        case .write: self = .write
        case .atomic: self = .atomic
        }
    }

    init(_ access: Set<Access>) {
        self = access.reduce(into: []) { bits, right in bits.insert(GrantAccess(right)) }
    }

    var wire: Set<Access> { Set(Access.allCases.filter { contains(GrantAccess($0)) }) }
}

extension FileKey {
    /// `major:minor:inode`, as `list` and `revoking-file` name a file.
    var wire: String { description }

    /// A file named as `list` names it; nil for anything else.
    init?(wire: String) {
        guard let (major, minor, inode) = FileName.parse(wire) else { return nil }
        self.init(device: DeviceNumber(major: major, minor: minor), inode: inode)
    }
}
