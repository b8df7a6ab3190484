/// What a peer puts in rdma_connect's private data to reach a grant. Version 1, 32 bytes:
///
///     0  2  magic "ML" (4D 4C)
///     2  1  version (1)
///     3  1  kind (1 = connect request)
///     4  4  flags: none defined in version 1, must be 0
///     8  8  grant id
///    16 16  secret
///
/// Received with up to 24 bytes of zero padding (56 in all, PrivateDataLimit.connectRequest).
public struct ConnectPrivateData: Equatable, Sendable, CustomStringConvertible {
    public static let size = 32

    public var grantID: UInt64
    public var secret: GrantSecret

    public init(grantID: UInt64, secret: GrantSecret) {
        self.grantID = grantID
        self.secret = secret
    }

    /// The request for the grant a descriptor names.
    public init(_ descriptor: GrantDescriptor) {
        self.init(grantID: descriptor.grantID, secret: descriptor.secret)
    }

    public func encoded() -> [UInt8] {
        var writer = PrivateDataHeader.writer(.connectRequest, size: Self.size)
        writer.append(bigEndian: UInt32(0))
        writer.append(bigEndian: grantID)
        writer.append(secret.bytes)
        return writer.bytes
    }

    public init(decoding input: some Collection<UInt8>) throws(GrantFormatError) {
        var reader = try PrivateDataHeader.reader(input, kind: .connectRequest, size: Self.size, limit: PrivateDataLimit.connectRequest)
        let flags = try reader.uint32()
        if flags != 0 { throw GrantFormatError(.connectRequest, .unknownFlags(flags)) }
        grantID = try reader.uint64()
        secret = try GrantSecret(bytes: try reader.bytes(GrantSecret.byteCount))
        try reader.requireZeroRest()
    }

    public var description: String { "connect request for grant \(grantID) (secret hidden)" }
}
