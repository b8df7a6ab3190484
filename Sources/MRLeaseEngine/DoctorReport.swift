import Verbs

/// Everything `mrlease doctor` found, as plain values: rendered as a table or JSON by the CLI,
/// asserted on by tests.
public struct DoctorReport: Sendable, Codable {
    public var host: HostReport
    public var files: [FileReport]

    /// 0 when every file has a strategy, 1 when a path was unusable (missing, not a regular
    /// file, no FIEMAP), 3 when a usable file would be refused a registration.
    public var exitCode: Int32 {
        if files.contains(where: { $0.error != nil }) { return 1 }
        if files.contains(where: { $0.strategy == nil }) { return 3 }
        return 0
    }
}

public struct HostReport: Sendable, Codable {
    public var kernel: String
    public var devices: [DeviceReport]
    /// Set when no device could be listed or none exists, in plain words.
    public var rdmaProblem: String?
    /// RLIMIT_MEMLOCK in bytes; nil means unlimited.
    public var memlockSoft: UInt64?
    public var memlockHard: UInt64?
    public var leaseBreakTimeSeconds: Int?
    public var leasesEnabled: Bool
    /// CAP_LEASE: leases on files this process does not own.
    public var capLease: Bool
    public var capIPCLock: Bool
    /// How mrleased notices a layout change through a client's own fd (`LayoutProtection`).
    public var layoutProtection: String
}

public struct DeviceReport: Sendable, Codable {
    public var name: String
    public var guid: String
    public var firmware: String?
    public var ports: [PortReport]
    public var odpSupported: Bool
    public var odpImplicit: Bool
    public var odpRC: [String]
    public var odpUC: [String]
    public var odpUD: [String]
    /// The ODP integrity self-test's word (`ODPIntegrity.code`: "intact", "corrupts-unaligned",
    /// "not-applicable", "failed"), the transfer alignment it implies, and what it saw.
    public var odpIntegrity: String?
    public var transferAlignment: Int?
    public var odpIntegrityDetail: String?
    public var error: String?
}

public struct PortReport: Sendable, Codable {
    public var port: Int
    public var state: String
    public var linkLayer: String
    public var activeMTU: Int
    public var gids: [String]
}

public struct FileReport: Sendable, Codable {
    public var path: String
    /// Why this path cannot be used at all (missing, directory, FIFO, no FIEMAP), with errno.
    public var error: String?
    public var errno: String?
    public var filesystem: String?
    public var backing: String?
    public var dax: Bool?
    public var mountDAX: String?
    public var size: UInt64?
    public var device: String?
    public var inode: UInt64?
    public var extentCount: Int?
    public var extentNote: String?
    public var openedWritable: Bool?
    public var lease: LeaseReport?
    public var access: String
    public var trials: [TrialReport]
    /// The strategy mrleased would use, or nil when it would refuse (see `refusal`).
    public var strategy: String?
    /// The registration plan the daemon would execute on the chosen device: each attempt in
    /// order with why it is tried, then what is not tried and why.
    public var plan: [String]?
    public var strategyDevice: String?
    public var strategyReason: String?
    /// The layout policies a region with that strategy may have (`follow` for ODP, `revoke`
    /// always), and why.
    public var layoutPolicies: [String]?
    public var layoutPolicyReason: String?
    public var refusal: String?
    /// The refusal's stable code, the one the daemon would answer `register` with.
    public var refusalCode: String?
    public var refusalErrno: String?
}

public struct LeaseReport: Sendable, Codable {
    public var type: String
    public var granted: Bool
    public var errno: String?
    public var message: String
}

public struct TrialReport: Sendable, Codable {
    public var device: String
    public var kind: String
    public var flags: String
    /// "registered", "failed" or "not-tried".
    public var result: String
    public var op: String?
    public var errno: String?
    public var errnoValue: Int32?
    public var note: String?
}
