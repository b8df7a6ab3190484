import CRDMA

/// `ibv_access_flags`: what local and remote peers may do with an MR.
public struct AccessFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let localWrite = AccessFlags(rawValue: IBV_ACCESS_LOCAL_WRITE.rawValue)
    public static let remoteWrite = AccessFlags(rawValue: IBV_ACCESS_REMOTE_WRITE.rawValue)
    public static let remoteRead = AccessFlags(rawValue: IBV_ACCESS_REMOTE_READ.rawValue)
    public static let remoteAtomic = AccessFlags(rawValue: IBV_ACCESS_REMOTE_ATOMIC.rawValue)
    public static let onDemand = AccessFlags(rawValue: IBV_ACCESS_ON_DEMAND.rawValue)

    static let named: [(AccessFlags, String)] = [
        (.localWrite, "LOCAL_WRITE"), (.remoteWrite, "REMOTE_WRITE"), (.remoteRead, "REMOTE_READ"),
        (.remoteAtomic, "REMOTE_ATOMIC"), (.onDemand, "ON_DEMAND"),
    ]

    public var description: String {
        let names = Self.named.filter { contains($0.0) }.map(\.1)
        return names.isEmpty ? "none" : names.joined(separator: "|")
    }
}
