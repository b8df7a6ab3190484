import CRDMA

extension QueuePair {
    /// `enum ibv_qp_state`: where a QP is in its life. An RC QP is connected by moving it
    /// RESET → INIT → RTR → RTS; any state may go to ERR, and ERR or any state to RESET.
    public enum State: Sendable, Hashable, CustomStringConvertible {
        case reset, initialized, readyToReceive, readyToSend, sendQueueDrained, sendQueueError, error
        /// A state this type does not name (a newer kernel or provider).
        case other(UInt32)

        init(_ raw: ibv_qp_state) {
            switch raw {
            case IBV_QPS_RESET: self = .reset
            case IBV_QPS_INIT: self = .initialized
            case IBV_QPS_RTR: self = .readyToReceive
            case IBV_QPS_RTS: self = .readyToSend
            case IBV_QPS_SQD: self = .sendQueueDrained
            case IBV_QPS_SQE: self = .sendQueueError
            case IBV_QPS_ERR: self = .error
            default: self = .other(raw.rawValue)
            }
        }

        var raw: ibv_qp_state {
            switch self {
            case .reset: IBV_QPS_RESET
            case .initialized: IBV_QPS_INIT
            case .readyToReceive: IBV_QPS_RTR
            case .readyToSend: IBV_QPS_RTS
            case .sendQueueDrained: IBV_QPS_SQD
            case .sendQueueError: IBV_QPS_SQE
            case .error: IBV_QPS_ERR
            case .other(let value): ibv_qp_state(rawValue: value)
            }
        }

        /// The verbs name: RESET, INIT, RTR, RTS, SQD, SQE, ERR.
        public var description: String {
            switch self {
            case .reset: "RESET"
            case .initialized: "INIT"
            case .readyToReceive: "RTR"
            case .readyToSend: "RTS"
            case .sendQueueDrained: "SQD"
            case .sendQueueError: "SQE"
            case .error: "ERR"
            case .other(let value): "state \(value)"
            }
        }
    }

    /// `enum ibv_qp_attr_mask`: which fields of `Attributes` a `modify` applies.
    public struct AttributeMask: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let state = AttributeMask(rawValue: IBV_QP_STATE.rawValue)
        public static let accessFlags = AttributeMask(rawValue: IBV_QP_ACCESS_FLAGS.rawValue)
        public static let pkeyIndex = AttributeMask(rawValue: IBV_QP_PKEY_INDEX.rawValue)
        public static let port = AttributeMask(rawValue: IBV_QP_PORT.rawValue)
        public static let addressVector = AttributeMask(rawValue: IBV_QP_AV.rawValue)
        public static let pathMTU = AttributeMask(rawValue: IBV_QP_PATH_MTU.rawValue)
        public static let timeout = AttributeMask(rawValue: IBV_QP_TIMEOUT.rawValue)
        public static let retryCount = AttributeMask(rawValue: IBV_QP_RETRY_CNT.rawValue)
        public static let rnrRetry = AttributeMask(rawValue: IBV_QP_RNR_RETRY.rawValue)
        public static let rqPSN = AttributeMask(rawValue: IBV_QP_RQ_PSN.rawValue)
        public static let maxReadAtomic = AttributeMask(rawValue: IBV_QP_MAX_QP_RD_ATOMIC.rawValue)
        public static let minRNRTimer = AttributeMask(rawValue: IBV_QP_MIN_RNR_TIMER.rawValue)
        public static let sqPSN = AttributeMask(rawValue: IBV_QP_SQ_PSN.rawValue)
        public static let maxDestReadAtomic = AttributeMask(rawValue: IBV_QP_MAX_DEST_RD_ATOMIC.rawValue)
        public static let destQPN = AttributeMask(rawValue: IBV_QP_DEST_QPN.rawValue)

        static let named: [(AttributeMask, String)] = [
            (.state, "STATE"), (.accessFlags, "ACCESS_FLAGS"), (.pkeyIndex, "PKEY_INDEX"), (.port, "PORT"),
            (.addressVector, "AV"), (.pathMTU, "PATH_MTU"), (.timeout, "TIMEOUT"), (.retryCount, "RETRY_CNT"),
            (.rnrRetry, "RNR_RETRY"), (.rqPSN, "RQ_PSN"), (.maxReadAtomic, "MAX_QP_RD_ATOMIC"),
            (.minRNRTimer, "MIN_RNR_TIMER"), (.sqPSN, "SQ_PSN"), (.maxDestReadAtomic, "MAX_DEST_RD_ATOMIC"),
            (.destQPN, "DEST_QPN"),
        ]

        public var description: String {
            let names = Self.named.filter { contains($0.0) }.map(\.1)
            return names.isEmpty ? "none" : names.joined(separator: "|")
        }
    }

    /// `struct ibv_global_route`: the GRH fields, needed on RoCE.
    public struct GlobalRoute: Sendable, Hashable {
        public var destinationGID: GID
        /// Our GID's index in the port's table (`sgid_index`).
        public var sourceGIDIndex: UInt8
        public var hopLimit: UInt8

        public init(destinationGID: GID, sourceGIDIndex: UInt8, hopLimit: UInt8 = 1) {
            self.destinationGID = destinationGID
            self.sourceGIDIndex = sourceGIDIndex
            self.hopLimit = hopLimit
        }
    }

    /// `struct ibv_ah_attr`: where the remote port is.
    public struct AddressVector: Sendable, Hashable {
        public var destinationLID: UInt16
        public var port: UInt8
        public var global: GlobalRoute?

        public init(destinationLID: UInt16 = 0, port: UInt8, global: GlobalRoute? = nil) {
            self.destinationLID = destinationLID
            self.port = port
            self.global = global
        }

        var raw: ibv_ah_attr {
            var ah = ibv_ah_attr()
            ah.dlid = destinationLID
            ah.port_num = port
            if let global {
                ah.is_global = 1
                ah.grh.dgid = global.destinationGID.raw
                ah.grh.sgid_index = global.sourceGIDIndex
                ah.grh.hop_limit = global.hopLimit
            }
            return ah
        }
    }

    /// `struct ibv_qp_attr`, the fields mrleased sets. Only those named in the mask of a
    /// `modify` reach the device; the rest keep these defaults and are ignored.
    public struct Attributes: Sendable, Hashable {
        public var state: State
        public var accessFlags: AccessFlags = []
        public var pkeyIndex: UInt16 = 0
        public var port: UInt8 = 1
        public var addressVector: AddressVector?
        public var pathMTU: PathMTU = .bytes1024
        /// Local ACK timeout: 4.096 µs × 2^timeout.
        public var timeout: UInt8 = 0
        public var retryCount: UInt8 = 0
        public var rnrRetry: UInt8 = 0
        public var rqPSN: UInt32 = 0
        public var sqPSN: UInt32 = 0
        public var maxReadAtomic: UInt8 = 0
        public var maxDestReadAtomic: UInt8 = 0
        public var minRNRTimer: UInt8 = 0
        public var destQPN: UInt32 = 0

        public init(state: State) { self.state = state }

        var raw: ibv_qp_attr {
            var attr = ibv_qp_attr()
            attr.qp_state = state.raw
            attr.qp_access_flags = accessFlags.rawValue
            attr.pkey_index = pkeyIndex
            attr.port_num = port
            if let addressVector { attr.ah_attr = addressVector.raw }
            attr.path_mtu = pathMTU.raw
            attr.timeout = timeout
            attr.retry_cnt = retryCount
            attr.rnr_retry = rnrRetry
            attr.rq_psn = rqPSN
            attr.sq_psn = sqPSN
            attr.max_rd_atomic = maxReadAtomic
            attr.max_dest_rd_atomic = maxDestReadAtomic
            attr.min_rnr_timer = minRNRTimer
            attr.dest_qp_num = destQPN
            return attr
        }
    }
}
