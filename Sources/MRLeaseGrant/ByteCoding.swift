/// Big-endian (network order) reading and writing of the fixed-width fields every layout here
/// uses. Network order because these bytes cross machines, the endpoint's port and address are
/// network order in every sockaddr already, and rdma-core's own examples (rping) put addresses
/// and rkeys in private data with htobe64/htobe32: a C peer converts with be64toh/be32toh.
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    mutating func append(_ value: UInt8) { bytes.append(value) }
    mutating func append(_ values: some Sequence<UInt8>) { bytes.append(contentsOf: values) }
    mutating func append(bigEndian value: UInt16) { appendBigEndian(UInt64(value), width: 2) }
    mutating func append(bigEndian value: UInt32) { appendBigEndian(UInt64(value), width: 4) }
    mutating func append(bigEndian value: UInt64) { appendBigEndian(value, width: 8) }

    private mutating func appendBigEndian(_ value: UInt64, width: Int) {
        for index in stride(from: width - 1, through: 0, by: -1) {
            bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))))
        }
    }
}

/// Reads fields in order from a byte array; running past the end is `truncated` for the layout.
struct ByteReader {
    let bytes: [UInt8]
    let layout: GrantFormatError.Layout
    private(set) var offset = 0

    init(_ bytes: [UInt8], layout: GrantFormatError.Layout) {
        self.bytes = bytes
        self.layout = layout
    }

    var remaining: Int { bytes.count - offset }

    /// Checks that `count` bytes remain, naming the total size the layout needs when they do not.
    func require(_ count: Int, totalNeeded: Int? = nil) throws(GrantFormatError) {
        if remaining < count {
            throw GrantFormatError(layout, .truncated(needed: totalNeeded ?? offset + count, got: bytes.count))
        }
    }

    mutating func byte() throws(GrantFormatError) -> UInt8 {
        try require(1)
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func bytes(_ count: Int) throws(GrantFormatError) -> ArraySlice<UInt8> {
        try require(count)
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    mutating func uint16() throws(GrantFormatError) -> UInt16 { UInt16(try bigEndian(width: 2)) }
    mutating func uint32() throws(GrantFormatError) -> UInt32 { UInt32(try bigEndian(width: 4)) }
    mutating func uint64() throws(GrantFormatError) -> UInt64 { try bigEndian(width: 8) }

    private mutating func bigEndian(width: Int) throws(GrantFormatError) -> UInt64 {
        var value: UInt64 = 0
        for byte in try bytes(width) { value = value << 8 | UInt64(byte) }
        return value
    }

    /// The bytes from the current offset on must be zero (reserved space, or the padding rdma_cm
    /// adds up to the message's full private-data size).
    func requireZeroRest() throws(GrantFormatError) {
        if let index = bytes[offset...].firstIndex(where: { $0 != 0 }) {
            throw GrantFormatError(layout, .nonZeroReserved(offset: index))
        }
    }
}
