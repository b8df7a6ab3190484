/// Why bytes (or text) are not a valid grant descriptor or private-data block.
///
/// Says which layout was being read and what was wrong with it, never the secret: a problem's
/// text names offsets and counts, not byte values taken from the input.
public struct GrantFormatError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Layout: String, Sendable {
        case descriptor = "grant descriptor"
        case descriptorText = "grant descriptor text"
        case connectRequest = "connect-request private data"
        case accept = "accept private data"
        case reject = "reject private data"
        case secret = "grant secret"
    }

    public enum Problem: Equatable, Sendable {
        /// Fewer bytes than the layout needs.
        case truncated(needed: Int, got: Int)
        /// More bytes than the rdma_cm limit for this message (or than the layout, for a descriptor).
        case oversized(limit: Int, got: Int)
        /// The first bytes are not this layout's magic: not written by mrlease.
        case badMagic
        case unsupportedVersion(UInt8)
        /// Private data of another message (a connect request where an accept was expected).
        case wrongKind(UInt8)
        case badAddressFamily(UInt8)
        /// Bytes after a complete descriptor.
        case trailingBytes(count: Int)
        /// A reserved byte, or the rdma_cm padding after the layout, is not zero.
        case nonZeroReserved(offset: Int)
        case checksumMismatch
        /// Text: a character outside base64url's alphabet (its offset, not its value).
        case invalidCharacter(offset: Int)
        /// Text: a length no base64url encoding without padding has (1 more than a multiple of 4).
        case invalidTextLength(Int)
        /// Text: the last character carries bits that are not zero, so the text is not the one
        /// canonical encoding of its bytes.
        case nonCanonicalText
        case unknownFlags(UInt32)
        case unknownAccessBits(UInt32)
        case noAccess
        /// Transfer alignment that is not a power of two.
        case badAlignment(UInt32)
        case zeroLength
        /// remote address + length does not fit in 64 bits.
        case addressOverflow
        case unknownReason(UInt16)
        /// A secret of the wrong size (GrantSecret(bytes:)).
        case wrongSecretLength(Int)
    }

    public let layout: Layout
    public let problem: Problem

    public init(_ layout: Layout, _ problem: Problem) {
        self.layout = layout
        self.problem = problem
    }

    public var description: String {
        "\(layout.rawValue): \(problemText)"
    }

    private var problemText: String {
        switch problem {
        case .truncated(let needed, let got):
            return "truncated: \(got) bytes where \(needed) are needed; copy the whole \(layout.rawValue)"
        case .oversized(let limit, let got):
            return "\(got) bytes, more than the \(limit) allowed"
        case .badMagic:
            return layout == .descriptor || layout == .descriptorText
                ? "not an mrlease grant descriptor (its text starts with \"mrlg\")"
                : "not written by mrlease (no \"ML\" magic; all zeros is what rdma_cm delivers when the other side sent no private data)"
        case .unsupportedVersion(let version):
            return "version \(version) is not supported (this build speaks version \(GrantFormat.version)); upgrade the older side"
        case .wrongKind(let kind):
            return "message kind \(kind) where \(expectedKind) was expected"
        case .badAddressFamily(let family):
            return "address family \(family) is neither 4 (IPv4) nor 6 (IPv6)"
        case .trailingBytes(let count):
            return "\(count) bytes after the end; copy exactly one descriptor"
        case .nonZeroReserved(let offset):
            return "reserved byte at offset \(offset) is not zero"
        case .checksumMismatch:
            return "checksum does not match: the descriptor was altered or mistyped; copy it again"
        case .invalidCharacter(let offset):
            return "character \(offset) is not in the base64url alphabet (A-Z a-z 0-9 - _)"
        case .invalidTextLength(let length):
            return "\(length) characters is not a base64url length; copy the whole descriptor"
        case .nonCanonicalText:
            return "the last character is not the canonical encoding; copy the descriptor again"
        case .unknownFlags(let flags):
            return "unknown flags 0x\(String(flags, radix: 16))"
        case .unknownAccessBits(let bits):
            return "unknown access bits 0x\(String(bits, radix: 16))"
        case .noAccess:
            return "grants no access (neither read, write nor atomic)"
        case .badAlignment(let alignment):
            return "transfer alignment \(alignment) is not a power of two"
        case .zeroLength:
            return "region length is zero"
        case .addressOverflow:
            return "remote address + length exceeds 2^64"
        case .unknownReason(let code):
            return "reject reason \(code) is unknown to this build (the connection was still refused)"
        case .wrongSecretLength(let count):
            return "\(count) bytes where \(GrantSecret.byteCount) are needed"
        }
    }

    private var expectedKind: String {
        switch layout {
        case .connectRequest: return "1 (connect request)"
        case .accept: return "2 (accept)"
        case .reject: return "3 (reject)"
        case .descriptor, .descriptorText, .secret: return "none"
        }
    }
}
