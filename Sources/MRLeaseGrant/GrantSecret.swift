/// The 128-bit secret that, with a grant id, lets a peer connect to a grant.
///
/// - Made only by the kernel's CSPRNG (`random()`), or read from a descriptor or connect request.
/// - Compared in constant time (see `==`).
/// - Never printed: `description`, `debugDescription` and `dump` show that a secret is there, not
///   its bytes, so interpolating a secret (or a descriptor holding one) into a log line is safe.
/// - Not Hashable on purpose: look grants up by id, then compare the secret.
///
/// Swift cannot promise to wipe a value's old copies from memory; the secret lives as long as
/// the grant (in the daemon) or the descriptor (in a peer) anyway.
public struct GrantSecret: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public static let byteCount = 16

    /// The 16 bytes, in order, as two big-endian words.
    let high: UInt64
    let low: UInt64

    init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// A secret from its 16 bytes (known-answer tests, and the decoders here).
    public init(bytes: some Collection<UInt8>) throws(GrantFormatError) {
        guard bytes.count == Self.byteCount else {
            throw GrantFormatError(.secret, .wrongSecretLength(bytes.count))
        }
        var words: (high: UInt64, low: UInt64) = (0, 0)
        for (index, byte) in bytes.enumerated() {
            if index < 8 { words.high = words.high << 8 | UInt64(byte) } else { words.low = words.low << 8 | UInt64(byte) }
        }
        (high, low) = words
    }

    /// A fresh secret from getrandom(2).
    public static func random() throws(KernelRandomError) -> GrantSecret {
        var words: (UInt64, UInt64) = (0, 0)
        try withUnsafeMutableBytes(of: &words) { KernelRandom.fill($0) }.get()
        // The byte order of random words does not matter.
        return GrantSecret(high: words.0, low: words.1)
    }

    /// The bytes, for the encoders in this module only.
    var bytes: [UInt8] {
        var writer = ByteWriter(capacity: Self.byteCount)
        writer.append(bigEndian: high)
        writer.append(bigEndian: low)
        return writer.bytes
    }

    /// Constant-time equality: XOR both words, OR the differences, test once. An early-exit
    /// comparison (memcmp, `==` on arrays) returns sooner the earlier the first differing byte
    /// is, so a peer timing its rejected connect requests could learn the secret byte by byte;
    /// here the work is the same whichever bytes differ.
    public static func == (lhs: GrantSecret, rhs: GrantSecret) -> Bool {
        ((lhs.high ^ rhs.high) | (lhs.low ^ rhs.low)) == 0
    }

    public static func != (lhs: GrantSecret, rhs: GrantSecret) -> Bool { !(lhs == rhs) }

    public var description: String { "GrantSecret(hidden)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

extension GrantSecret: Equatable {}
