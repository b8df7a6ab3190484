/// What a grant lets a peer do to its region. mrlease's own bits (not IBV_ACCESS_* values, which
/// are one library's ABI); a bit this version does not define is an error, a new bit is a new
/// version.
public struct GrantAccess: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let read = GrantAccess(rawValue: 1 << 0)
    public static let write = GrantAccess(rawValue: 1 << 1)
    /// Compare-and-swap and fetch-and-add (8 bytes, 8-byte aligned, as verbs define them).
    public static let atomic = GrantAccess(rawValue: 1 << 2)
    public static let all: GrantAccess = [.read, .write, .atomic]
}

/// What the daemon returns in rdma_accept's private data: where and how the peer may reach the
/// region now. Version 1, 48 bytes:
///
///     0  2  magic "ML" (4D 4C)
///     2  1  version (1)
///     3  1  kind (2 = accept)
///     4  4  access (GrantAccess bits: 1 read, 2 write, 4 atomic)
///     8  8  remote address (the address to put in the work request)
///    16  8  length in bytes
///    24  4  rkey
///    28  4  transfer alignment: a power of two; offsets and lengths of every transfer must be
///           multiples of it (4096 where the device's ODP copies are page-bound, else 1)
///    32  8  generation: changes whenever the region is registered again after a revocation
///    40  8  grant id (the peer checks the answer is for the grant it asked for)
///
/// Received with up to 148 bytes of zero padding (196 in all, PrivateDataLimit.accept).
public struct AcceptPrivateData: Equatable, Sendable, CustomStringConvertible {
    public static let size = 48

    public let access: GrantAccess
    public let remoteAddress: UInt64
    public let length: UInt64
    public let rkey: UInt32
    public let transferAlignment: UInt32
    public let generation: UInt64
    public let grantID: UInt64

    /// The one place the rules live for both sides: some access and no unknown bit, a
    /// non-empty region whose end fits in 64 bits, and a power-of-two alignment.
    public init(access: GrantAccess, remoteAddress: UInt64, length: UInt64, rkey: UInt32,
                transferAlignment: UInt32, generation: UInt64, grantID: UInt64) throws(GrantFormatError) {
        let unknown = access.rawValue & ~GrantAccess.all.rawValue
        if unknown != 0 { throw GrantFormatError(.accept, .unknownAccessBits(unknown)) }
        if access.isEmpty { throw GrantFormatError(.accept, .noAccess) }
        if length == 0 { throw GrantFormatError(.accept, .zeroLength) }
        if remoteAddress.addingReportingOverflow(length).overflow { throw GrantFormatError(.accept, .addressOverflow) }
        if transferAlignment == 0 || transferAlignment & (transferAlignment - 1) != 0 {
            throw GrantFormatError(.accept, .badAlignment(transferAlignment))
        }
        self.access = access
        self.remoteAddress = remoteAddress
        self.length = length
        self.rkey = rkey
        self.transferAlignment = transferAlignment
        self.generation = generation
        self.grantID = grantID
    }

    public func encoded() -> [UInt8] {
        var writer = PrivateDataHeader.writer(.accept, size: Self.size)
        writer.append(bigEndian: access.rawValue)
        writer.append(bigEndian: remoteAddress)
        writer.append(bigEndian: length)
        writer.append(bigEndian: rkey)
        writer.append(bigEndian: transferAlignment)
        writer.append(bigEndian: generation)
        writer.append(bigEndian: grantID)
        return writer.bytes
    }

    public init(decoding input: some Collection<UInt8>) throws(GrantFormatError) {
        var reader = try PrivateDataHeader.reader(input, kind: .accept, size: Self.size, limit: PrivateDataLimit.accept)
        let access = GrantAccess(rawValue: try reader.uint32())
        let remoteAddress = try reader.uint64()
        let length = try reader.uint64()
        let rkey = try reader.uint32()
        let alignment = try reader.uint32()
        let generation = try reader.uint64()
        let grantID = try reader.uint64()
        try reader.requireZeroRest()
        try self.init(access: access, remoteAddress: remoteAddress, length: length, rkey: rkey,
                      transferAlignment: alignment, generation: generation, grantID: grantID)
    }

    public var description: String {
        "accept for grant \(grantID): \(length) bytes at 0x\(String(remoteAddress, radix: 16)) rkey 0x\(String(rkey, radix: 16)), "
            + "access 0x\(String(access.rawValue, radix: 16)), alignment \(transferAlignment), generation \(generation)"
    }
}
