/// CRC-32 as zlib's `crc32()` computes it (IEEE 802.3, reflected polynomial 0xEDB88320, initial
/// and final XOR 0xFFFFFFFF; check value 0xCBF43926 for "123456789"), so a C peer can check a
/// descriptor with `crc32(0, bytes, n)`. It catches copying mistakes, not forgery: the daemon
/// checks the secret, the checksum only turns a mistyped descriptor into a clear local error
/// instead of a rejected connection.
enum CRC32 {
    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return crc ^ 0xFFFF_FFFF
    }
}
