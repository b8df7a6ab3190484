import Foundation
import LinuxFile
import SystemPackage
import Verbs

/// What a client asks remote peers may do with a region. Maps one-to-one onto verbs access
/// flags: a read-only region never gets REMOTE_WRITE.
public struct RegionAccess: OptionSet, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let read = RegionAccess(rawValue: 1 << 0)
    public static let write = RegionAccess(rawValue: 1 << 1)
    public static let atomic = RegionAccess(rawValue: 1 << 2)

    /// The verbs access flags for a pinned MR. Remote write and atomic need LOCAL_WRITE too
    /// (the verbs spec requires it for both).
    public var verbsFlags: AccessFlags {
        var flags: AccessFlags = []
        if contains(.read) { flags.insert(.remoteRead) }
        if contains(.write) { flags.formUnion([.remoteWrite, .localWrite]) }
        if contains(.atomic) { flags.formUnion([.remoteAtomic, .localWrite]) }
        return flags
    }

    /// The RC ODP capabilities a device must have to serve this access from ODP memory.
    public var requiredODP: ODPTransportCaps {
        var caps: ODPTransportCaps = []
        if contains(.read) { caps.insert(.read) }
        if contains(.write) { caps.insert(.write) }
        if contains(.atomic) { caps.insert(.atomic) }
        return caps
    }

    /// Whether the region needs a writable fd and mapping.
    public var isWritable: Bool { contains(.write) || contains(.atomic) }

    public var names: [String] {
        [(RegionAccess.read, "read"), (.write, "write"), (.atomic, "atomic")].filter { contains($0.0) }.map(\.1)
    }

    public var description: String { names.joined(separator: ",") }

    /// Parses "read,write" style lists; nil for unknown words or an empty list.
    public init?(names: String) {
        var access: RegionAccess = []
        for word in names.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            switch word {
            case "read": access.insert(.read)
            case "write": access.insert(.write)
            case "atomic": access.insert(.atomic)
            default: return nil
            }
        }
        guard !access.isEmpty else { return nil }
        self = access
    }
}

/// How an MR over a file range is made.
public enum Strategy: String, Sendable, Codable, CaseIterable {
    /// `IBV_ACCESS_ON_DEMAND`: nothing pinned; the device faults pages in and the kernel
    /// invalidates them when the file's layout changes.
    case odp
    /// A classic MR: pages pinned for the MR's life. Safe only while mrleased holds the lease.
    case pinned
}

/// One trial registration the probe makes, and the verbs flags it uses.
public enum TrialKind: String, Sendable, Codable, CaseIterable {
    case pinnedWrite = "pinned-write"
    case pinnedReadOnly = "pinned-read-only"
    case odp

    public func flags(for access: RegionAccess) -> AccessFlags {
        switch self {
        case .pinnedWrite: access.verbsFlags.union([.localWrite, .remoteWrite])
        case .pinnedReadOnly: access.verbsFlags.subtracting([.localWrite, .remoteWrite, .remoteAtomic]).union(.remoteRead)
        case .odp: access.verbsFlags.union(.onDemand)
        }
    }
}

/// What happened when the probe tried a registration.
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
    public var flags: AccessFlags
    public var outcome: TrialOutcome

    public init(kind: TrialKind, flags: AccessFlags, outcome: TrialOutcome) {
        self.kind = kind
        self.flags = flags
        self.outcome = outcome
    }
}

/// Why no strategy can serve a request. `code` is the stable wire code.
public struct StrategyRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: String { "strategy-unavailable" }
    /// The kernel's answer to the registration that would have been used, when one was tried.
    public var errno: Errno?
    public var message: String

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
/// kernel answered to trial registrations. Pure: the probe makes the trials, this decides.
///
/// ODP first when the device's RC ODP covers the access: nothing is pinned, so a layout change
/// cannot leave the NIC writing into blocks the file no longer owns, and it is the only way
/// FS-DAX can be registered at all. Otherwise a pinned MR where the kernel allows it
/// (KERNEL-FACTS: never on FS-DAX; writable page cache only before 6.5; shmem always).
public enum StrategyChooser {
    public static func choose(
        device: String, odp: ODPCaps, backing: Backing, access: RegionAccess,
        trials: [Trial], preference: Strategy? = nil
    ) -> StrategyDecision {
        let odpTrial = trials.first { $0.kind == .odp }
        let pinnedKind: TrialKind = access.isWritable ? .pinnedWrite : .pinnedReadOnly
        let pinnedTrial = trials.first { $0.kind == pinnedKind }
        let missingODP = odpGap(device: device, odp: odp, access: access)

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
            return .use(.odp, reason: "\(device) RC ODP covers \(access.requiredODP) and the ODP registration succeeded")
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

    /// Why the device's ODP cannot serve `access`, or nil when its RC ODP covers it.
    static func odpGap(device: String, odp: ODPCaps, access: RegionAccess) -> String? {
        guard odp.supported else { return "\(device) has no ODP support (general ODP caps lack ODP_SUPPORT)" }
        let missing = access.requiredODP.subtracting(odp.rc)
        guard missing.isEmpty else { return "\(device) RC ODP lacks \(missing) (has \(odp.rc))" }
        return nil
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
            case (.pageCache, .badAddress) where trial.flags.contains(.localWrite) || trial.flags.contains(.remoteWrite):
                text += ": this kernel refuses writable long-term pins of file-backed page-cache pages (Linux 6.5+)"
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
