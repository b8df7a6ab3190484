import MRLeasePolicy
import Verbs

/// The verbs side of the policy's words: which access flags a region's MR carries, and what a
/// device's ODP capabilities mean to the policy.
extension RegionAccess {
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
}

extension Strategy {
    /// The flags a region's MR with this strategy carries, for `access`.
    public func flags(for access: RegionAccess) -> AccessFlags {
        switch self {
        case .odp: access.verbsFlags.union(.onDemand)
        case .pinned: access.verbsFlags
        }
    }
}

extension TrialKind {
    /// The flags this trial registers with, for `access`.
    public func flags(for access: RegionAccess) -> AccessFlags {
        switch self {
        case .pinnedWrite: access.verbsFlags.union([.localWrite, .remoteWrite])
        case .pinnedReadOnly: access.verbsFlags.subtracting([.localWrite, .remoteWrite, .remoteAtomic]).union(.remoteRead)
        case .odp: access.verbsFlags.union(.onDemand)
        }
    }
}

extension Trial {
    public init(kind: TrialKind, flags: AccessFlags, outcome: TrialOutcome) {
        self.init(kind: kind, flags: "\(flags)", outcome: outcome)
    }
}

extension DeviceCapabilities {
    /// A device's capabilities as the policy sees them, from `ibv_query_device_ex`'s ODP caps.
    public init(name: String, odp: ODPCaps) {
        var rc: RegionAccess = []
        if odp.rc.contains(.read) { rc.insert(.read) }
        if odp.rc.contains(.write) { rc.insert(.write) }
        if odp.rc.contains(.atomic) { rc.insert(.atomic) }
        self.init(name: name, odpSupported: odp.supported, odpRC: rc, odpRCText: "\(odp.rc)")
    }
}
