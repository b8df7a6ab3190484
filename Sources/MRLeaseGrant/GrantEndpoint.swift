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

    /// "192.0.2.1:7471", "[fd00:77::1]:7471" (inet_ntop's canonical text).
    public var description: String {
        var bytes = addressBytes
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let printed = inet_ntop(family, &bytes, &text, socklen_t(text.count)) != nil
        // inet_ntop fails only for an unknown family or a short buffer, neither possible here.
        let host = printed ? String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        return bytes.count == 4 ? "\(host):\(port)" : "[\(host)]:\(port)"
    }
}
