/// What a client hands to a peer so the peer can reach one grant: the daemon's endpoint, the
/// grant id and the secret. Version 1, byte by byte (network order; docs/protocol.md §8):
///
///     0   3  magic 9A B9 60 (the text form starts "mrlg")
///     3   1  version (1)
///     4   1  address family: 4 or 6
///     5   2  port
///     7   n  address: 4 bytes (IPv4) or 16 (IPv6)
///     7+n 8  grant id
///    15+n 16 secret
///    31+n 4  CRC-32 (zlib's) of bytes 0 ..< 31+n
///
/// 39 bytes (IPv4) or 51 (IPv6), both multiples of 3, so the text is 52 or 68 base64url
/// characters without padding. The magic makes every descriptor's text start "mrlg": a person
/// or a secret scanner recognises one in a log or a paste, and it never starts with "-" (a
/// command line would take that for an option).
///
/// The descriptor holds the secret: its `text` and `encoded()` are the credential, to be given
/// only to the peer. `description` hides the secret.
public struct GrantDescriptor: Equatable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public static let magic: [UInt8] = [0x9A, 0xB9, 0x60]
    public static let textPrefix = "mrlg"
    static let checksumSize = 4

    public var endpoint: GrantEndpoint
    public var grantID: UInt64
    public var secret: GrantSecret

    public init(endpoint: GrantEndpoint, grantID: UInt64, secret: GrantSecret) {
        self.endpoint = endpoint
        self.grantID = grantID
        self.secret = secret
    }

    /// The encoded size for an address family byte (4 or 6).
    static func size(addressSize: Int) -> Int { 7 + addressSize + 8 + GrantSecret.byteCount + checksumSize }

    public func encoded() -> [UInt8] {
        let address = endpoint.addressBytes
        var writer = ByteWriter(capacity: Self.size(addressSize: address.count))
        writer.append(Self.magic)
        writer.append(GrantFormat.version)
        writer.append(endpoint.familyByte)
        writer.append(bigEndian: endpoint.port)
        writer.append(address)
        writer.append(bigEndian: grantID)
        writer.append(secret.bytes)
        writer.append(bigEndian: CRC32.checksum(writer.bytes))
        return writer.bytes
    }

    public init(decoding input: some Collection<UInt8>) throws(GrantFormatError) {
        var reader = ByteReader(Array(input), layout: .descriptor)
        // The smallest descriptor is the IPv4 one: report truncation against it until the family is known.
        try reader.require(Self.magic.count + 2, totalNeeded: Self.size(addressSize: 4))
        guard try reader.bytes(Self.magic.count).elementsEqual(Self.magic) else {
            throw GrantFormatError(.descriptor, .badMagic)
        }
        let version = try reader.byte()
        guard version == GrantFormat.version else { throw GrantFormatError(.descriptor, .unsupportedVersion(version)) }
        let family = try reader.byte()
        let addressSize: Int
        switch family {
        case 4: addressSize = 4
        case 6: addressSize = 16
        default: throw GrantFormatError(.descriptor, .badAddressFamily(family))
        }
        let size = Self.size(addressSize: addressSize)
        try reader.require(size - reader.offset, totalNeeded: size)
        let port = try reader.uint16()
        let address: GrantEndpoint.Address
        if addressSize == 4 {
            address = .ipv4(try reader.uint32())
        } else {
            address = .ipv6(high: try reader.uint64(), low: try reader.uint64())
        }
        grantID = try reader.uint64()
        secret = try GrantSecret(bytes: try reader.bytes(GrantSecret.byteCount))
        let covered = reader.bytes[0..<reader.offset]
        guard try reader.uint32() == CRC32.checksum(covered) else {
            throw GrantFormatError(.descriptor, .checksumMismatch)
        }
        if reader.remaining > 0 { throw GrantFormatError(.descriptor, .trailingBytes(count: reader.remaining)) }
        endpoint = GrantEndpoint(address: address, port: port)
    }

    /// The text form: base64url of `encoded()`, no padding. This is the credential.
    public var text: String { Base64URL.encode(encoded()) }

    /// Reads the text form. Leading and trailing whitespace (a pasted line's newline) is ignored;
    /// anything else that is not the canonical text of a valid descriptor is an error.
    public init(text: String) throws(GrantFormatError) {
        let trimmed = text.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed()
        let body = Substring(String(trimmed))
        guard body.hasPrefix(Self.textPrefix) || Self.textPrefix.hasPrefix(body) else {
            throw GrantFormatError(.descriptorText, .badMagic)
        }
        try self.init(decoding: try Base64URL.decode(body.utf8, layout: .descriptorText))
    }

    public var description: String { "grant \(grantID) at \(endpoint) (secret hidden)" }
    public var debugDescription: String { "GrantDescriptor(\(description))" }
}
