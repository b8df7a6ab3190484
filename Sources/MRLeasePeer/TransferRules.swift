import MRLeaseGrant

/// What an application asks of a peer: the operations the rules below judge.
public enum PeerOperation: String, Sendable, Hashable, CaseIterable {
    case write, read, compareAndSwap = "compare-and-swap", fetchAdd = "fetch-add", persist

    /// The grant access the operation needs. `persist` is an RDMA READ (READ-after-WRITE).
    public var requiredAccess: GrantAccess {
        switch self {
        case .write: .write
        case .read, .persist: .read
        case .compareAndSwap, .fetchAdd: .atomic
        }
    }

    var isAtomic: Bool { self == .compareAndSwap || self == .fetchAdd }
}

/// Why a transfer was refused before anything was posted. Every text says what is wrong and
/// what to do; nothing was sent to the region.
public enum TransferProblem: Sendable, Hashable, CustomStringConvertible {
    case outOfBounds(offset: UInt64, length: UInt64, regionLength: UInt64)
    case notGranted(needed: GrantAccess, granted: GrantAccess)
    /// Offset or length not a multiple of the grant's transfer alignment.
    case misaligned(offset: UInt64, length: UInt64, alignment: UInt64)
    /// Atomics work on 8 bytes at an 8-byte-aligned offset (verbs' rule; the responder NAKs others).
    case atomicMisaligned(offset: UInt64)

    public var description: String {
        switch self {
        case .outOfBounds(let offset, let length, let regionLength):
            return "\(length) bytes at offset \(offset) end past the region's \(regionLength) bytes; "
                + "keep offset + length within the region (its length is in the accept: Peer.terms.length)"
        case .notGranted(let needed, let granted):
            return "the grant allows \(granted.names), not \(needed.names); ask the region's owner for a grant with "
                + "\(needed.names) access (mrlease register --grant-access)"
        case .misaligned(let offset, let length, let alignment):
            return "offset \(offset) and length \(length) must both be multiples of the grant's transfer alignment \(alignment): "
                + "this device's ODP copies land unaligned packets at the wrong place without an error (rxe, "
                + "docs/kernel-matrix.md), so the peer refuses instead of corrupting the file; align both to \(alignment)"
        case .atomicMisaligned(let offset):
            return "offset \(offset) is not a multiple of 8: atomics work on one 8-byte-aligned 8-byte word; use an aligned offset"
        }
    }
}

/// The rules every operation is checked against before a work request is posted, against the
/// terms of the current connection (they are checked again after a reconnect: a restored region
/// may be shorter, or carry another alignment). One place, so the CLI, the library and the
/// tests agree on the texts.
public enum TransferRules {
    /// Checks `length` bytes at `offset` for `operation` under `terms`. Zero-length reads and
    /// writes pass (nothing will be posted) if the offset is inside or at the end of the region.
    public static func check(_ operation: PeerOperation, offset: UInt64, length: UInt64,
                             terms: GrantTerms) -> TransferProblem? {
        let needed = operation.requiredAccess
        if !terms.access.contains(needed) { return .notGranted(needed: needed, granted: terms.access) }
        let (end, overflow) = offset.addingReportingOverflow(length)
        if overflow || end > terms.length {
            return .outOfBounds(offset: offset, length: length, regionLength: terms.length)
        }
        if operation.isAtomic {
            return offset % 8 == 0 ? nil : .atomicMisaligned(offset: offset)
        }
        if offset % terms.transferAlignment != 0 || length % terms.transferAlignment != 0 {
            return .misaligned(offset: offset, length: length, alignment: terms.transferAlignment)
        }
        return nil
    }

    /// The READ `persist` posts: `alignment` bytes (at least 1) at the aligned-down offset of the
    /// last byte written, clamped into the region. Any READ on the QP is ordered after every
    /// earlier WRITE on it; the one that touches the written range also makes the responder
    /// fault in the same pages on ODP.
    public static func persistRead(after writeEnd: UInt64, terms: GrantTerms) -> (offset: UInt64, length: UInt64) {
        let length = min(max(terms.transferAlignment, 1), terms.length)
        let last = writeEnd == 0 ? 0 : writeEnd - 1
        var offset = last - last % length
        if offset + length > terms.length { offset = terms.length - length }
        return (offset - offset % terms.transferAlignment, length)
    }
}
