import LinuxFile
import SystemPackage

/// How an MR over a file range is made.
public enum Strategy: String, Sendable, Codable, CaseIterable {
    /// `IBV_ACCESS_ON_DEMAND`: nothing pinned; the device faults pages in and the kernel
    /// invalidates them when the file's layout changes.
    case odp
    /// A classic MR: pages pinned for the MR's life. Safe only while mrleased holds the lease.
    case pinned
}

/// What a device offers the policy: its name and which RC operations its ODP covers. Built
/// from `ibv_query_device_ex` by the code that owns the device; plain values here.
public struct DeviceCapabilities: Sendable, Hashable {
    public var name: String
    /// `IBV_ODP_SUPPORT`.
    public var odpSupported: Bool
    /// The RC operations ODP covers, as far as regions care (read, write, atomic).
    public var odpRC: RegionAccess
    /// Every RC ODP capability the device names, for messages ("send,recv,read").
    public var odpRCText: String

    public init(name: String, odpSupported: Bool, odpRC: RegionAccess, odpRCText: String) {
        self.name = name
        self.odpSupported = odpSupported
        self.odpRC = odpRC
        self.odpRCText = odpRCText
    }

    /// Why this device's ODP cannot serve `access`, or nil when its RC ODP covers it.
    public func odpGap(for access: RegionAccess) -> String? {
        guard odpSupported else { return "\(name) has no ODP support (general ODP caps lack ODP_SUPPORT)" }
        let missing = access.subtracting(odpRC)
        guard missing.isEmpty else {
            return "\(name) RC ODP lacks \(missing.names.map { $0.uppercased() }.joined(separator: ",")) (has \(odpRCText))"
        }
        return nil
    }
}

/// One trial registration, and the verbs flags it uses (as text: the policy knows no verbs).
public enum TrialKind: String, Sendable, Codable, CaseIterable {
    case pinnedWrite = "pinned-write"
    case pinnedReadOnly = "pinned-read-only"
    case odp

    /// The trial a strategy's registration is, for an access.
    public static func of(_ strategy: Strategy, access: RegionAccess) -> TrialKind {
        switch strategy {
        case .odp: .odp
        case .pinned: access.isWritable ? .pinnedWrite : .pinnedReadOnly
        }
    }

    /// Whether the registration asks for a writable pin (LOCAL_WRITE or REMOTE_WRITE).
    public var pinsForWrite: Bool { self == .pinnedWrite }
}

/// What happened when a registration was tried.
public enum TrialOutcome: Sendable, Equatable {
    case registered
    case failed(op: String, errno: Errno)
    case notTried(reason: String)

    public var errno: Errno? {
        if case .failed(_, let errno) = self { return errno }
        return nil
    }
}

public struct Trial: Sendable, Equatable {
    public var kind: TrialKind
    /// The verbs access flags used, as `AccessFlags` prints them ("LOCAL_WRITE|REMOTE_READ").
    public var flags: String
    public var outcome: TrialOutcome

    public init(kind: TrialKind, flags: String, outcome: TrialOutcome) {
        self.kind = kind
        self.flags = flags
        self.outcome = outcome
    }
}

/// Why no strategy can serve a request.
public struct StrategyRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: RefusalCode { .strategyUnavailable }
    /// The kernel's answer to the registration that would have been used, when one was tried.
    public var errno: Errno?
    public var message: String

    public init(errno: Errno?, message: String) {
        self.errno = errno
        self.message = message
    }

    public var description: String { message }
}

/// The outcome of choosing: a strategy and why, or a refusal and why.
public enum StrategyDecision: Sendable, Equatable {
    case use(Strategy, reason: String)
    case refuse(StrategyRefusal)

    public var strategy: Strategy? {
        if case .use(let strategy, _) = self { return strategy }
        return nil
    }
}

/// Picks the strategy for one (device, file, access) from what the device offers and what the
/// kernel answered to trial registrations. Pure: the engine or the doctor makes the trials.
///
/// ODP first when the device's RC ODP covers the access: nothing is pinned, so a layout change
/// cannot leave the NIC writing into blocks the file no longer owns, and it is the only way
/// FS-DAX can be registered at all. Otherwise a pinned MR where the kernel allows it
/// (docs/kernel-matrix.md: never on FS-DAX; writable page cache only before 6.5; shmem always).
public enum StrategyChooser {
    public static func choose(
        device: DeviceCapabilities, backing: Backing, access: RegionAccess,
        trials: [Trial], preference: Strategy? = nil
    ) -> StrategyDecision {
        let odpTrial = trials.first { $0.kind == .odp }
        let pinnedTrial = trials.first { $0.kind == TrialKind.of(.pinned, access: access) }
        let missingODP = device.odpGap(for: access)

        var odpReason: String
        if let missingODP {
            odpReason = missingODP
        } else if let odpTrial, case .failed(let op, let errno) = odpTrial.outcome {
            odpReason = "\(op) refused an ODP registration (\(errno.symbolicName))"
        } else if let odpTrial, case .notTried(let why) = odpTrial.outcome {
            odpReason = "ODP not tried: \(why)"
        } else if odpTrial == nil {
            odpReason = "ODP not tried"
        } else {
            odpReason = ""
        }
        let odpWorks = missingODP == nil && odpTrial?.outcome == .registered
        let pinnedWorks = pinnedTrial?.outcome == .registered

        if odpWorks && preference != .pinned {
            return .use(.odp, reason: "\(device.name) RC ODP covers \(access) and the ODP registration succeeded")
        }
        if pinnedWorks && preference != .odp {
            let why = odpWorks ? "pinned was asked for" : odpReason
            return .use(.pinned, reason: "pinned registration on \(backing.rawValue) succeeded; no ODP: \(why)")
        }
        if preference == .pinned && odpWorks {
            return .refuse(StrategyRefusal(errno: pinnedTrial?.outcome.errno,
                message: "pinned was asked for but \(pinnedText(pinnedTrial, backing: backing)); ODP would work"))
        }
        if preference == .odp && pinnedWorks {
            return .refuse(StrategyRefusal(errno: odpTrial?.outcome.errno,
                message: "ODP was asked for but \(odpReason); a pinned MR would work"))
        }
        return .refuse(StrategyRefusal(
            errno: pinnedTrial?.outcome.errno ?? odpTrial?.outcome.errno,
            message: "\(pinnedText(pinnedTrial, backing: backing)); and \(odpReason)"))
    }

    /// The pinned trial's failure, explained by the kernel behaviour behind it.
    static func pinnedText(_ trial: Trial?, backing: Backing) -> String {
        guard let trial else { return "no pinned registration was tried" }
        switch trial.outcome {
        case .registered:
            return "a pinned registration works"
        case .notTried(let reason):
            return "pinned registration not tried: \(reason)"
        case .failed(let op, let errno):
            var text = "\(op) refused a pinned registration (\(trial.flags)) on a \(backing.rawValue) file (\(errno.symbolicName))"
            switch (backing, errno) {
            case (.fsDAX, .notSupported):
                text += ": the kernel never long-term pins FS-DAX pages"
            case (.pageCache, .badAddress) where trial.kind.pinsForWrite:
                text += ": this kernel refuses writable long-term pins of file-backed page-cache pages (Linux 6.5+)"
            case (.shmem, .badAddress) where trial.kind.pinsForWrite:
                // Writable, so no read-only mapping was refused: a page could not be made.
                text += ": a page of the range could not be faulted in for writing (a tmpfs past its size= limit, or"
                    + " out of memory); register less, or make room"
            case (_, .badAddress):
                text += ": kernels before 6.2 pin even read-only MRs for writing (FOLL_FORCE|FOLL_WRITE), which a"
                    + " read-only shared mapping refuses; pass an fd opened O_RDWR"
            default:
                break
            }
            return text
        }
    }
}
