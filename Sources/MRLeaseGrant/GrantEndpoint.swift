import Glibc

/// Where a peer connects: the address and port mrleased's rdma_cm listener is bound to.
///
/// Link-local IPv6 addresses are not useful here: their scope id names an interface on the
/// connecting host, which the daemon cannot know; listen on a global or ULA address instead.
public struct GrantEndpoint: Hashable, Sendable, CustomStringConvertible {
    public enum Address: Hashable, Sendable {
        /// The 4 bytes in network order as one integer: 192.0.2.1 is 0xC000_0201.
        case ipv4(UInt32)
        /// The 16 bytes in network order as two integers (bytes 0–7, bytes 8–15).
        case ipv6(high: UInt64, low: UInt64)
    }

    public var address: Address
    public var port: UInt16

    public init(address: Address, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// The address family byte of the descriptor: 4 or 6, not the host's AF_INET/AF_INET6
    /// values (which differ between operating systems).
    var familyByte: UInt8 {
        switch address {
        case .ipv4: return 4
        case .ipv6: return 6
        }
    }

    /// The address bytes in network order (4 or 16 of them).
    var addressBytes: [UInt8] {
        var writer = ByteWriter(capacity: 16)
        switch address {
        case .ipv4(let value): writer.append(bigEndian: value)
        case .ipv6(let high, let low):
            writer.append(bigEndian: high)
            writer.append(bigEndian: low)
        }
        return writer.bytes
    }

    /// The address as inet_ntop writes it: "192.0.2.1", "fd00:77::1".
    public var host: String {
        var bytes = addressBytes
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let printed = inet_ntop(family, &bytes, &text, socklen_t(text.count)) != nil
        // inet_ntop fails only for an unknown family or a short buffer, neither possible here.
        return printed ? String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }

    /// "192.0.2.1:7471", "[fd00:77::1]:7471" (inet_ntop's canonical text).
    public var description: String {
        addressBytes.count == 4 ? "\(host):\(port)" : "[\(host)]:\(port)"
    }

    /// An IPv4 or IPv6 literal (inet_pton), no names: nil for anything else.
    public init?(host: String, port: UInt16) {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            self.init(address: .ipv4(UInt32(bigEndian: v4.s_addr)), port: port)
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for byte in bytes[0..<8] { high = high << 8 | UInt64(byte) }
        for byte in bytes[8..<16] { low = low << 8 | UInt64(byte) }
        self.init(address: .ipv6(high: high, low: low), port: port)
    }

    /// "ADDR:PORT" or "[IPV6]:PORT", as `description` writes it; nil for anything else.
    public init?(parsing text: String) {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        guard let port = UInt16(portPart) else { return nil }
        self.init(host: String(hostPart), port: port)
    }
}
