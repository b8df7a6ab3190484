import CRDMA

/// On-Demand Paging capabilities for one transport (RC, UC, UD): which operations may touch
/// ODP memory without the pages being pinned first.
public struct ODPTransportCaps: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let send = ODPTransportCaps(rawValue: IBV_ODP_SUPPORT_SEND.rawValue)
    public static let recv = ODPTransportCaps(rawValue: IBV_ODP_SUPPORT_RECV.rawValue)
    public static let write = ODPTransportCaps(rawValue: IBV_ODP_SUPPORT_WRITE.rawValue)
    public static let read = ODPTransportCaps(rawValue: IBV_ODP_SUPPORT_READ.rawValue)
    public static let atomic = ODPTransportCaps(rawValue: IBV_ODP_SUPPORT_ATOMIC.rawValue)
    public static let srqRecv = ODPTransportCaps(rawValue: IBV_ODP_SUPPORT_SRQ_RECV.rawValue)

    static let named: [(ODPTransportCaps, String)] = [
        (.send, "SEND"), (.recv, "RECV"), (.write, "WRITE"), (.read, "READ"),
        (.atomic, "ATOMIC"), (.srqRecv, "SRQ_RECV"),
    ]

    /// Capability names, with unnamed bits as hex (rxe on 7.x reports bits 0xC0 beyond these).
    public var names: [String] {
        var names = Self.named.filter { contains($0.0) }.map(\.1)
        let known = Self.named.reduce(UInt32(0)) { $0 | $1.0.rawValue }
        if rawValue & ~known != 0 { names.append("0x" + String(rawValue & ~known, radix: 16, uppercase: true)) }
        return names
    }

    public var description: String { names.isEmpty ? "none" : names.joined(separator: ",") }
}

/// The ODP part of `ibv_device_attr_ex`.
public struct ODPCaps: Sendable, Hashable {
    /// `IBV_ODP_SUPPORT`: the device can register ODP memory at all.
    public var supported: Bool
    /// `IBV_ODP_SUPPORT_IMPLICIT`: whole-address-space ODP MRs.
    public var implicit: Bool
    public var rc: ODPTransportCaps
    public var uc: ODPTransportCaps
    public var ud: ODPTransportCaps

    public init(supported: Bool, implicit: Bool, rc: ODPTransportCaps, uc: ODPTransportCaps = [], ud: ODPTransportCaps = []) {
        self.supported = supported
        self.implicit = implicit
        self.rc = rc
        self.uc = uc
        self.ud = ud
    }

    public static let none = ODPCaps(supported: false, implicit: false, rc: [])
}

/// What `ibv_query_device_ex` tells mrleased about a device.
public struct DeviceAttributes: Sendable, Hashable {
    public var firmwareVersion: String
    public var physicalPortCount: UInt8
    public var maxMR: Int32
    public var maxMRSize: UInt64
    public var maxPD: Int32
    public var maxQP: Int32
    public var maxCQE: Int32
    public var maxMW: Int32
    public var odp: ODPCaps

    init(_ raw: ibv_device_attr_ex) {
        let orig = raw.orig_attr
        firmwareVersion = withUnsafeBytes(of: orig.fw_ver) { bytes in
            String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        physicalPortCount = orig.phys_port_cnt
        maxMR = orig.max_mr
        maxMRSize = orig.max_mr_size
        maxPD = orig.max_pd
        maxQP = orig.max_qp
        maxCQE = orig.max_cqe
        maxMW = orig.max_mw
        let general = raw.odp_caps.general_caps
        odp = ODPCaps(
            supported: general & UInt64(IBV_ODP_SUPPORT.rawValue) != 0,
            implicit: general & UInt64(IBV_ODP_SUPPORT_IMPLICIT.rawValue) != 0,
            rc: ODPTransportCaps(rawValue: raw.odp_caps.per_transport_caps.rc_odp_caps),
            uc: ODPTransportCaps(rawValue: raw.odp_caps.per_transport_caps.uc_odp_caps),
            ud: ODPTransportCaps(rawValue: raw.odp_caps.per_transport_caps.ud_odp_caps))
    }
}
