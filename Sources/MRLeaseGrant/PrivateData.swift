/// The rdma_cm private data mrleased and its peers exchange, and its limits.
///
/// Every block starts with the same 4-byte header — magic "ML" (4D 4C), version, kind — and
/// its fields are in network order. A sender sends exactly the layout's size; a receiver may
/// get more, because the IB CM (which rdma_cm uses over InfiniBand and RoCE, rxe included)
/// always delivers a message's full private-data field, zero-filled after what was sent
/// (rdma_connect(3): "the actual amount of data transferred ... may be larger than that
/// requested"; the kernel's cma.c reports a REJ's private_data_len as
/// IB_CM_REJ_PRIVATE_DATA_SIZE whatever was sent). So decoders accept input from the layout's
/// size up to the limit, and require everything after the layout to be zero: anything else is
/// a sender that does not speak this version.
public enum PrivateDataLimit {
    /// A connect request (IB CM REQ) carries 92 bytes of private data (IBTA spec vol. 1, ch. 12;
    /// IB_CM_REQ_PRIVATE_DATA_SIZE in the kernel's include/rdma/ibta_vol1_c12.h), of which rdma_cm
    /// keeps 36 for its own header (struct cma_hdr in drivers/infiniband/core/cma.c): 56 left
    /// for RDMA_PS_TCP, as librdmacm's rdma_connect(3) says.
    public static let connectRequest = 56
    /// An accept (IB CM REP): 196 bytes (IB_CM_REP_PRIVATE_DATA_SIZE in include/rdma/ib_cm.h;
    /// rdma_accept(3): 196 for RDMA_PS_TCP).
    public static let accept = 196
    /// A reject (IB CM REJ): 148 bytes (IB_CM_REJ_PRIVATE_DATA_SIZE in include/rdma/ib_cm.h;
    /// ib_send_cm_rej refuses more with EINVAL).
    public static let reject = 148
}

/// The header every private-data block starts with.
enum PrivateDataHeader {
    static let magic: [UInt8] = [0x4D, 0x4C]  // "ML"
    static let size = 4

    enum Kind: UInt8 {
        case connectRequest = 1
        case accept = 2
        case reject = 3

        var layout: GrantFormatError.Layout {
            switch self {
            case .connectRequest: return .connectRequest
            case .accept: return .accept
            case .reject: return .reject
            }
        }
    }

    static func writer(_ kind: Kind, size: Int) -> ByteWriter {
        var writer = ByteWriter(capacity: size)
        writer.append(magic)
        writer.append(GrantFormat.version)
        writer.append(kind.rawValue)
        return writer
    }

    /// Checks size limits and the header, and returns a reader positioned after it.
    static func reader(_ input: some Collection<UInt8>, kind: Kind, size: Int, limit: Int) throws(GrantFormatError) -> ByteReader {
        let layout = kind.layout
        if input.count > limit { throw GrantFormatError(layout, .oversized(limit: limit, got: input.count)) }
        var reader = ByteReader(Array(input), layout: layout)
        try reader.require(Self.size, totalNeeded: size)
        guard try reader.bytes(magic.count).elementsEqual(magic) else { throw GrantFormatError(layout, .badMagic) }
        let version = try reader.byte()
        guard version == GrantFormat.version else { throw GrantFormatError(layout, .unsupportedVersion(version)) }
        let kindByte = try reader.byte()
        guard kindByte == kind.rawValue else { throw GrantFormatError(layout, .wrongKind(kindByte)) }
        try reader.require(size - reader.offset, totalNeeded: size)
        return reader
    }
}
