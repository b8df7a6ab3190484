/// Why the daemon refused a connect request. The codes are stable wire values.
public enum RejectReason: UInt16, CaseIterable, Sendable {
    /// The private data was not a valid connect request (size, magic, kind, reserved bytes).
    case malformed = 1
    /// The request's version is one the daemon does not speak; the reject's version byte is
    /// the one it does.
    case unsupportedVersion = 2
    /// No grant has this id (never did, or it ended with its client's connection).
    case unknownGrant = 3
    /// The grant exists and the secret is wrong.
    case badSecret = 4
    case expired = 5
    /// Ended by revoke-grant.
    case revoked = 6
    /// The grant's maximum number of peers are connected; retry when one leaves.
    case tooManyPeers = 7
    /// The region is being revoked (a lease break); retry after the hint: it will be restored
    /// with new keys, or lost.
    case regionRevoking = 8
    /// The region is gone for good (lost after a revocation, or deregistered).
    case regionLost = 9
    /// The daemon could not make the queue pair or window (resources); retry later.
    case busy = 10
    /// The request reached an address or device the grant's region is not registered on.
    case wrongEndpoint = 11

    /// Whether a later attempt with the same descriptor can succeed.
    public var isRetryable: Bool {
        switch self {
        case .tooManyPeers, .regionRevoking, .busy: return true
        case .malformed, .unsupportedVersion, .unknownGrant, .badSecret, .expired, .revoked, .regionLost, .wrongEndpoint:
            return false
        }
    }
}

/// What the daemon puts in rdma_reject's private data. Version 1, 12 bytes:
///
///     0  2  magic "ML" (4D 4C)
///     2  1  version (1)
///     3  1  kind (3 = reject)
///     4  2  reason (RejectReason)
///     6  2  reserved, 0
///     8  4  retry after, milliseconds (0: no hint)
///
/// Received with up to 136 bytes of zero padding (148 in all, PrivateDataLimit.reject). A reject
/// whose private data is all zeros (badMagic) came from the CM, not from mrleased: no listener
/// on that port, or a timeout; rdma_cm's event status names the IB CM reason.
public struct RejectPrivateData: Equatable, Sendable, CustomStringConvertible {
    public static let size = 12

    public var reason: RejectReason
    public var retryAfterMilliseconds: UInt32

    public init(reason: RejectReason, retryAfterMilliseconds: UInt32 = 0) {
        self.reason = reason
        self.retryAfterMilliseconds = retryAfterMilliseconds
    }

    public func encoded() -> [UInt8] {
        var writer = PrivateDataHeader.writer(.reject, size: Self.size)
        writer.append(bigEndian: reason.rawValue)
        writer.append(bigEndian: UInt16(0))
        writer.append(bigEndian: retryAfterMilliseconds)
        return writer.bytes
    }

    public init(decoding input: some Collection<UInt8>) throws(GrantFormatError) {
        var reader = try PrivateDataHeader.reader(input, kind: .reject, size: Self.size, limit: PrivateDataLimit.reject)
        let code = try reader.uint16()
        let reservedOffset = reader.offset
        if try reader.uint16() != 0 { throw GrantFormatError(.reject, .nonZeroReserved(offset: reservedOffset)) }
        retryAfterMilliseconds = try reader.uint32()
        try reader.requireZeroRest()
        guard let reason = RejectReason(rawValue: code) else { throw GrantFormatError(.reject, .unknownReason(code)) }
        self.reason = reason
    }

    public var description: String {
        retryAfterMilliseconds == 0 ? "rejected: \(reason)" : "rejected: \(reason), retry after \(retryAfterMilliseconds) ms"
    }
}
