/// base64url without padding (RFC 4648 §5): the descriptor's text form.
///
/// Chosen over hex because it is a third shorter (52 characters for an IPv4 descriptor, 78 in
/// hex) and is still safe everywhere a descriptor travels: in JSON without escapes, on a shell
/// command line without quotes, in a URL or a file name. Decoding is strict: one text per byte
/// string (no padding, no whitespace inside, unused bits zero), so descriptors compare as text.
enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (value, character) in alphabet.enumerated() { table[Int(character)] = UInt8(value) }
        return table
    }()

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let count = min(3, bytes.count - index)
            var group: UInt32 = 0
            for offset in 0..<3 {
                group = group << 8 | (offset < count ? UInt32(bytes[index + offset]) : 0)
            }
            for sextet in 0...count {
                out.append(alphabet[Int(group >> (18 - 6 * UInt32(sextet)) & 0x3F)])
            }
            index += count
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: Substring.UTF8View, layout: GrantFormatError.Layout) throws(GrantFormatError) -> [UInt8] {
        let characters = Array(text)
        if characters.count % 4 == 1 { throw GrantFormatError(layout, .invalidTextLength(characters.count)) }
        var out: [UInt8] = []
        out.reserveCapacity(characters.count * 3 / 4)
        var index = 0
        while index < characters.count {
            let count = min(4, characters.count - index)
            var group: UInt32 = 0
            for offset in 0..<4 {
                var value: UInt8 = 0
                if offset < count {
                    value = values[Int(characters[index + offset])]
                    if value == 0xFF { throw GrantFormatError(layout, .invalidCharacter(offset: index + offset)) }
                }
                group = group << 6 | UInt32(value)
            }
            let byteCount = count - 1  // 4 characters → 3 bytes, 3 → 2, 2 → 1
            // The bits of a short group's last character that no byte uses must be zero.
            let unusedBits = UInt32(24 - 8 * byteCount)
            if count < 4 && group & ((1 << unusedBits) - 1) != 0 { throw GrantFormatError(layout, .nonCanonicalText) }
            for byte in 0..<byteCount { out.append(UInt8(truncatingIfNeeded: group >> (16 - 8 * UInt32(byte)))) }
            index += count
        }
        return out
    }
}
