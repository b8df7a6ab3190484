import LinuxFile
import SystemPackage

/// The stable codes a registration is refused with, spelled as the wire spells them
/// (docs/protocol.md §6). The daemon maps them to its error codes in one exhaustive switch.
public enum RefusalCode: String, Sendable, Hashable, CaseIterable {
    case notRegularFile = "not-regular-file"
    case accessDenied = "access-denied"
    case badAlignment = "bad-alignment"
    case rangeOutOfFile = "range-out-of-file"
    case strategyUnavailable = "strategy-unavailable"
    /// The file's filesystem cannot show its extent map (FIEMAP: 9p, FUSE, NFS…).
    case unsupportedFilesystem = "unsupported-filesystem"
}

/// Why a registration is refused: a stable code, the message for a human (what is wrong and
/// what to do), and the errno behind it when there is one.
public struct PlanRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: RefusalCode
    public var message: String
    public var errno: Errno?
    /// Whether the refusal is about one range (a `register-batch` names its index) rather
    /// than the fd itself (its file type or open mode: every range would be refused alike).
    public var aboutRange: Bool

    public init(_ code: RefusalCode, _ message: String, errno: Errno? = nil, aboutRange: Bool = true) {
        self.code = code
        self.message = message
        self.errno = errno
        self.aboutRange = aboutRange
    }

    public var description: String { message }

    /// The refusal of a file whose filesystem has no extent map to show: the kernel answers
    /// FS_IOC_FIEMAP with EOPNOTSUPP when the filesystem has no `fiemap` operation (9p, FUSE,
    /// NFS), ENOTTY where the ioctl is not routed at all. Without extents the daemon cannot
    /// tell a layout change under an MR, so it does not register such a file. nil for any
    /// other errno: a failure of this one read, not a property of the filesystem.
    public static func noExtentMap(filesystem: String, errno: Errno) -> PlanRefusal? {
        guard errno == .notSupported || errno == .inappropriateIOCTLForDevice else { return nil }
        return PlanRefusal(.unsupportedFilesystem,
                           "\(filesystem) does not support FIEMAP (FS_IOC_FIEMAP: \(errno.symbolicName)): mrleased cannot track this file's extents, so it will not register it; use a file on ext4, xfs or tmpfs",
                           errno: errno, aboutRange: false)
    }
}

/// How the fd a client passed was opened (`fcntl(F_GETFL)`), as far as registration cares.
public enum OpenMode: String, Sendable, Hashable, CaseIterable {
    case readOnly = "O_RDONLY"
    case readWrite = "O_RDWR"
    case writeOnly = "O_WRONLY"
    /// O_PATH: reads as O_RDONLY in O_ACCMODE, but cannot be mapped at all.
    case path = "O_PATH"
}

/// What the policy needs to know about the file, from statx/statfs of the passed fd.
public struct PlannedFile: Sendable, Equatable {
    public var kind: FileKind
    public var filesystem: String
    public var isPseudoFile: Bool
    public var backing: Backing
    public var size: UInt64
    /// The file's owner (statx `stx_uid`): the one uid the kernel lets lease it without CAP_LEASE.
    public var owner: UInt32

    public init(kind: FileKind, filesystem: String, isPseudoFile: Bool, backing: Backing, size: UInt64, owner: UInt32 = 0) {
        self.kind = kind
        self.filesystem = filesystem
        self.isPseudoFile = isPseudoFile
        self.backing = backing
        self.size = size
        self.owner = owner
    }

    public init(_ facts: FileFacts) {
        self.init(kind: facts.kind, filesystem: facts.filesystem, isPseudoFile: facts.isPseudoFile,
                  backing: facts.backing, size: facts.size, owner: facts.owner)
    }
}

/// Who asks for the registration, as far as the lease is concerned. The daemon takes the lease
/// with its own CAP_LEASE, so it applies the kernel's rule to the client instead (fs/locks.c
/// `generic_setlease`: a caller whose fsuid does not own the inode needs CAP_LEASE, else
/// EACCES): without it, anyone who can read a file could make every open-for-write of it wait
/// out a lease break.
public struct Lessee: Sendable, Equatable {
    /// The client's uid (SO_PEERCRED; the doctor: its own euid).
    public var uid: UInt32
    /// Whether this caller may lease files it does not own: what CAP_LEASE is to the kernel.
    /// The daemon grants it to uid 0 and to the operator's `lease-others-uids` and
    /// `lease-others-groups` (`LeaseOthersRule`); the doctor passes its own capability.
    public var mayLeaseOthers: Bool

    public init(uid: UInt32, mayLeaseOthers: Bool) {
        self.uid = uid
        self.mayLeaseOthers = mayLeaseOthers
    }

    /// A caller that may lease any file (the engine's own callers: tests, the benchmark).
    public static let privileged = Lessee(uid: 0, mayLeaseOthers: true)
}

/// Which clients may have the daemon lease files they do not own: uid 0, and the uids and
/// groups (primary or supplementary) the operator lists. Empty lists: only root.
public struct LeaseOthersRule: Sendable, Equatable {
    public var uids: Set<UInt32>
    public var groups: Set<UInt32>

    public init(uids: Set<UInt32> = [], groups: Set<UInt32> = []) {
        self.uids = uids
        self.groups = groups
    }

    /// Whether a client with `uid` in `groups` (its primary and supplementary gids) may.
    public func allows(uid: UInt32, groups clientGroups: Set<UInt32>) -> Bool {
        uid == 0 || uids.contains(uid) || !groups.isDisjoint(with: clientGroups)
    }
}

/// How one range of one file is to be registered: the validated range, and the strategies to
/// try in order, each with why it is tried; the ones not worth trying carry why not. Made by
/// one pure function, `RegistrationPlan.make`, that the daemon, the engine and the doctor all
/// use: a rule about what may be registered lives nowhere else.
public struct RegistrationPlan: Sendable, Equatable {
    public struct Attempt: Sendable, Equatable {
        public var strategy: Strategy
        public var kind: TrialKind
        public var reason: String
    }

    public var offset: UInt64
    public var length: UInt64
    public var access: RegionAccess
    public var backing: Backing
    /// Whether the fd allows a writable mapping (O_RDWR). The lease follows it.
    public var writableFD: Bool
    public var preference: Strategy?
    /// The layout policy asked for (the request's, else the daemon's `layout-policy`): what an
    /// ODP registration gets. A pinned one always gets `revoke` (`layoutPolicy(for:)`).
    public var layoutPolicy: LayoutPolicy
    /// nil on a host without an RDMA device: nothing can be tried.
    public var device: DeviceCapabilities? {
        get { choices.device }
        set { choices = Choices(device: newValue, noDeviceReason: noDeviceReason, attempts: attempts, skipped: skipped) }
    }
    /// Why the plan has no device, for the refusal ("no RDMA device: …").
    public var noDeviceReason: String? {
        get { choices.noDeviceReason }
        set { choices = Choices(device: device, noDeviceReason: newValue, attempts: attempts, skipped: skipped) }
    }
    /// In order; empty when nothing can work (then `decide(trials: [])` says why).
    public var attempts: [Attempt] {
        get { choices.attempts }
        set { choices = Choices(device: device, noDeviceReason: noDeviceReason, attempts: newValue, skipped: skipped) }
    }
    /// Registrations not worth trying on this device, as trials that say why.
    public var skipped: [Trial] {
        get { choices.skipped }
        set { choices = Choices(device: device, noDeviceReason: noDeviceReason, attempts: attempts, skipped: newValue) }
    }

    /// The parts of a plan that hold strings and arrays, in one immutable box shared by its
    /// copies: the engine keeps a plan per region and copies it on every registration, and a
    /// copy now retains one object instead of each string and array (callgrind: the copies
    /// were a tenth of a registration's instructions, docs/benchmarks.md).
    final class Choices: Sendable {
        let device: DeviceCapabilities?
        let noDeviceReason: String?
        let attempts: [Attempt]
        let skipped: [Trial]

        init(device: DeviceCapabilities?, noDeviceReason: String?, attempts: [Attempt], skipped: [Trial]) {
            self.device = device
            self.noDeviceReason = noDeviceReason
            self.attempts = attempts
            self.skipped = skipped
        }
    }

    private var choices: Choices

    init(offset: UInt64, length: UInt64, access: RegionAccess, backing: Backing, writableFD: Bool, preference: Strategy?,
         layoutPolicy: LayoutPolicy, device: DeviceCapabilities?, noDeviceReason: String?, attempts: [Attempt], skipped: [Trial]) {
        self.offset = offset
        self.length = length
        self.access = access
        self.backing = backing
        self.writableFD = writableFD
        self.preference = preference
        self.layoutPolicy = layoutPolicy
        self.choices = Choices(device: device, noDeviceReason: noDeviceReason, attempts: attempts, skipped: skipped)
    }

    public static func == (a: RegistrationPlan, b: RegistrationPlan) -> Bool {
        a.offset == b.offset && a.length == b.length && a.access == b.access && a.backing == b.backing
            && a.writableFD == b.writableFD && a.preference == b.preference && a.layoutPolicy == b.layoutPolicy
            && (a.choices === b.choices
                || (a.device == b.device && a.noDeviceReason == b.noDeviceReason && a.attempts == b.attempts && a.skipped == b.skipped))
    }

    /// Plans `[offset, offset+length)` of a file opened `mode` for `access` by `lessee`. The
    /// checks run in the order a client fixes them: the file, the fd's mode, who may lease it,
    /// the access, the offset, the range; then which strategies the device makes possible.
    public static func make(
        file: PlannedFile, mode: OpenMode, offset: UInt64, length: UInt64, access: RegionAccess,
        preference: Strategy? = nil, layoutPolicy: LayoutPolicy = .follow, device: DeviceCapabilities?,
        noDeviceReason: String? = nil, lessee: Lessee, pageSize: UInt64
    ) -> Result<RegistrationPlan, PlanRefusal> {
        guard file.kind == .regular else {
            return .failure(PlanRefusal(.notRegularFile, "the fd is a \(file.kind.rawValue), not a regular file: only regular files with memory behind them can be registered",
                                        aboutRange: false))
        }
        guard !file.isPseudoFile else {
            return .failure(PlanRefusal(.notRegularFile, "the fd is a file on \(file.filesystem), a pseudo filesystem: its files have no memory behind them to register",
                                        aboutRange: false))
        }
        if mode == .path || mode == .writeOnly {
            return .failure(PlanRefusal(.accessDenied, "the fd was opened \(mode.rawValue): the file must be mapped, which needs O_RDONLY or O_RDWR",
                                        aboutRange: false))
        }
        guard file.owner == lessee.uid || lessee.mayLeaseOthers else {
            return .failure(PlanRefusal(.accessDenied, "uid \(lessee.uid) does not own this file (its owner is uid \(file.owner)), and the daemon would have to lease it: the kernel lets only a file's owner or a CAP_LEASE holder do that, and a lease makes every open for write of the file wait. Register as the file's owner, or ask the operator to list your uid or group in lease-others-uids / lease-others-groups",
                                        errno: .permissionDenied, aboutRange: false))
        }
        if access.isWritable && mode != .readWrite {
            return .failure(PlanRefusal(.accessDenied, "\(access) access needs an fd opened O_RDWR; this fd is read-only"))
        }
        if let refusal = rangeRefusal(offset: offset, length: length, fileSize: file.size, pageSize: pageSize) {
            return .failure(refusal)
        }
        var attempts: [Attempt] = [], skipped: [Trial] = []
        func plan() -> RegistrationPlan {
            RegistrationPlan(offset: offset, length: length, access: access, backing: file.backing, writableFD: mode == .readWrite,
                             preference: preference, layoutPolicy: layoutPolicy, device: device, noDeviceReason: noDeviceReason,
                             attempts: attempts, skipped: skipped)
        }
        guard let device else { return .success(plan()) }
        let order: [Strategy] = preference.map { [$0] } ?? [.odp, .pinned]
        for strategy in order {
            let kind = TrialKind.of(strategy, access: access)
            let reason: String
            switch strategy {
            case .odp:
                if let gap = device.odpGap(for: access) {
                    skipped.append(Trial(kind: kind, flags: "", outcome: .notTried(reason: gap)))
                    continue
                }
                reason = "\(device.name) RC ODP covers \(access)"
            case .pinned:
                reason = "pinned on \(file.backing.rawValue) under the lease"
            }
            attempts.append(Attempt(strategy: strategy, kind: kind, reason: reason))
        }
        return .success(plan())
    }

    /// Why `[offset, offset+length)` cannot be a region of a file of `fileSize` bytes, if it
    /// cannot: the range's own checks, the last of `make`'s.
    static func rangeRefusal(offset: UInt64, length: UInt64, fileSize: UInt64, pageSize: UInt64) -> PlanRefusal? {
        guard offset % pageSize == 0 else {
            return PlanRefusal(.badAlignment, "offset \(offset) is not a multiple of the page size (\(pageSize))")
        }
        // Written so that no sum can overflow: offset + length may pass 2^64.
        guard length > 0, offset < fileSize, length <= fileSize - offset else {
            let end = offset.addingReportingOverflow(length)
            let range = end.overflow ? "[\(offset), \(offset) + \(length))" : "[\(offset), \(end.partialValue))"
            return PlanRefusal(.rangeOutOfFile, "range \(range) is not inside the file (size \(fileSize)); extend the file first")
        }
        return nil
    }

    /// This plan for another range of the same file, as `make` would plan it with the same
    /// file, mode, access, preference, layout policy, device and lessee: every check but the
    /// range's passed already, and the strategies to try do not depend on the range
    /// (`PlanCache` plans a range like one before this way).
    public func moved(offset: UInt64, length: UInt64, fileSize: UInt64, pageSize: UInt64) -> Result<RegistrationPlan, PlanRefusal> {
        if let refusal = Self.rangeRefusal(offset: offset, length: length, fileSize: fileSize, pageSize: pageSize) {
            return .failure(refusal)
        }
        var plan = self
        plan.offset = offset
        plan.length = length
        return .success(plan)
    }

    /// The layout policy a registration with `strategy` gets: the one asked for when the MR is
    /// ODP; `revoke` when it is pinned, since a pinned MR keeps the pages the file drops and
    /// only a revocation before the change keeps peers' WRITEs out of them.
    public func layoutPolicy(for strategy: Strategy) -> LayoutPolicy {
        switch strategy {
        case .odp: layoutPolicy
        case .pinned: .revoke
        }
    }

    /// The decision, once the attempts were made (`trials`, in order; a failure that ends the
    /// trying early leaves the rest out). Pure: the same answers give the same decision
    /// wherever they were measured.
    public func decide(trials: [Trial]) -> Result<(Strategy, reason: String), PlanRefusal> {
        guard let device else {
            return .failure(PlanRefusal(.strategyUnavailable, noDeviceReason ?? "no RDMA device on this host", errno: .operationNotSupportedByDevice))  // ENODEV
        }
        switch StrategyChooser.choose(device: device, backing: backing, access: access, trials: skipped + trials,
                                      preference: preference) {
        case .use(let strategy, let reason):
            return .success((strategy, reason))
        case .refuse(let refusal):
            return .failure(PlanRefusal(.strategyUnavailable, refusal.message, errno: refusal.errno))
        }
    }

    /// The same plan with `strategy` tried first: the engine knows which one this file took
    /// last time, and a failing trial costs a mapping and a syscall.
    public func trying(first strategy: Strategy) -> RegistrationPlan {
        var plan = self
        plan.attempts = attempts.filter { $0.strategy == strategy } + attempts.filter { $0.strategy != strategy }
        return plan
    }

    /// The same plan with only `strategy` (a restoration keeps the region's strategy).
    public func only(_ strategy: Strategy) -> RegistrationPlan {
        var plan = self
        plan.preference = strategy
        plan.attempts = attempts.filter { $0.strategy == strategy }
        return plan
    }

    /// Whether a kernel's refusal of an attempt means "try the next strategy" (the errnos the
    /// kernel uses to refuse a kind of registration) rather than a failure to report.
    public static func fallsThrough(_ errno: Errno) -> Bool {
        [.notSupported, .badAddress, .invalidArgument].contains(errno)
    }
}
