/// The bytes the CLI and tests write and check: one fixed byte, or a sequence determined by a
/// seed and each byte's offset in the region (so any sub-range can be checked on its own, by
/// a peer or by a reader of the file).
public enum PeerPattern: Sendable, Hashable, CustomStringConvertible {
    case byte(UInt8)
    case seeded(UInt64)

    /// "0xAB" / "171" (a byte) or "seed:N" / "seed:0x1F".
    public init?(_ text: String) {
        if text.hasPrefix("seed:") {
            guard let seed = Self.number(text.dropFirst(5)) else { return nil }
            self = .seeded(seed)
        } else {
            guard let value = Self.number(Substring(text)), value <= 0xFF else { return nil }
            self = .byte(UInt8(value))
        }
    }

    private static func number(_ text: Substring) -> UInt64? {
        text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
    }

    /// The byte at `offset` of the region.
    public func byte(at offset: UInt64) -> UInt8 {
        switch self {
        case .byte(let value): return value
        case .seeded(let seed):
            // splitmix64's finaliser over (seed, offset / 8), one byte of the word per offset.
            var z = seed &+ (offset / 8) &* 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return UInt8(truncatingIfNeeded: z >> (8 * (offset % 8)))
        }
    }

    /// `count` bytes for the region's range starting at `offset`.
    public func bytes(at offset: UInt64, count: Int) -> [UInt8] {
        (0..<count).map { byte(at: offset + UInt64($0)) }
    }

    public var description: String {
        switch self {
        case .byte(let value): "0x" + String(value, radix: 16)
        case .seeded(let seed): "seed:\(seed)"
        }
    }
}
