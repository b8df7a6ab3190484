import MRLeaseGrant

/// What the daemon's accept said the peer may do now: the region as this connection reaches it.
/// Changes only with a new connection (after a revocation: new generation and rkey, maybe a new
/// address, length or alignment).
public struct GrantTerms: Sendable, Hashable, CustomStringConvertible {
    public var grantID: UInt64
    public var access: GrantAccess
    /// The address to put in work requests: the region's first byte.
    public var remoteAddress: UInt64
    public var length: UInt64
    public var rkey: UInt32
    /// Offsets and lengths of every READ and WRITE must be multiples of it.
    public var transferAlignment: UInt64
    /// Increases with every registration of the region (so with every restoration).
    public var generation: UInt64

    public init(_ accept: AcceptPrivateData) {
        grantID = accept.grantID
        access = accept.access
        remoteAddress = accept.remoteAddress
        length = accept.length
        rkey = accept.rkey
        transferAlignment = UInt64(accept.transferAlignment)
        generation = accept.generation
    }

    public var description: String {
        "generation \(generation), rkey 0x\(String(rkey, radix: 16)), \(length) bytes at 0x\(String(remoteAddress, radix: 16)), "
            + "access \(access.names), alignment \(transferAlignment)"
    }
}

extension GrantAccess {
    /// "read,write,atomic" (the CLI's and the daemon's spelling).
    public var names: String {
        let named: [(GrantAccess, String)] = [(.read, "read"), (.write, "write"), (.atomic, "atomic")]
        let list = named.filter { contains($0.0) }.map(\.1)
        return list.isEmpty ? "none" : list.joined(separator: ",")
    }
}
