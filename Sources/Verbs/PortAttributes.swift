import CRDMA

/// A 128-bit global identifier, as held in a port's GID table.
public struct GID: Sendable, Hashable, CustomStringConvertible {
    public var bytes: [UInt8]
    /// Its index in the port's GID table (what `ibv_ah_attr.grh.sgid_index` takes).
    public var index: Int

    init(_ raw: ibv_gid, index: Int = 0) {
        bytes = withUnsafeBytes(of: raw.raw) { Array($0) }
        self.index = index
    }

    func withIndex(_ index: Int) -> GID {
        var copy = self
        copy.index = index
        return copy
    }

    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    var raw: ibv_gid {
        var gid = ibv_gid()
        withUnsafeMutableBytes(of: &gid.raw) { target in
            for (offset, byte) in bytes.prefix(16).enumerated() { target[offset] = byte }
        }
        return gid
    }

    /// IPv6 notation, or dotted IPv4 for the IPv4-mapped GIDs RoCE v2 uses (`::ffff:127.0.0.1`).
    public var description: String {
        if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            return "::ffff:" + bytes[12...].map(String.init).joined(separator: ".")
        }
        return stride(from: 0, to: bytes.count, by: 2).map { offset in
            String(UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]), radix: 16)
        }.joined(separator: ":")
    }
}

/// The state of one port, as `ibv_query_port` reports it, with its non-zero GIDs.
public struct PortAttributes: Sendable, Hashable {
    public enum State: String, Sendable {
        case nop = "NOP", down = "DOWN", initializing = "INIT", armed = "ARMED", active = "ACTIVE"
        case activeDefer = "ACTIVE_DEFER", unknown = "UNKNOWN"
    }

    public var port: UInt8
    public var state: State
    /// The active MTU in bytes.
    public var activeMTU: Int
    public var lid: UInt16
    /// "InfiniBand" or "Ethernet" (RoCE, including soft-RoCE).
    public var linkLayer: String
    public var gids: [GID]

    init(port: UInt8, _ raw: ibv_port_attr, gids: [GID]) {
        self.port = port
        switch raw.state {
        case IBV_PORT_NOP: state = .nop
        case IBV_PORT_DOWN: state = .down
        case IBV_PORT_INIT: state = .initializing
        case IBV_PORT_ARMED: state = .armed
        case IBV_PORT_ACTIVE: state = .active
        case IBV_PORT_ACTIVE_DEFER: state = .activeDefer
        default: state = .unknown
        }
        activeMTU = 128 << Int(raw.active_mtu.rawValue)
        lid = raw.lid
        linkLayer = raw.link_layer == UInt8(IBV_LINK_LAYER_ETHERNET) ? "Ethernet" : "InfiniBand"
        self.gids = gids
    }
}
