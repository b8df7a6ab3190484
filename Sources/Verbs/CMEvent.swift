import CRDMA

/// One rdma_cm event, copied out of librdmacm's `rdma_cm_event` before it was acknowledged:
/// nothing in it points into memory librdmacm may free.
public struct CMEvent {
    /// What happened (`enum rdma_cm_event_type`).
    public enum Kind: Sendable, Hashable, CustomStringConvertible {
        case addressResolved, addressError, routeResolved, routeError
        case connectRequest, connectResponse, connectError, unreachable, rejected
        case established, disconnected, deviceRemoval
        case multicastJoin, multicastError, addressChange, timewaitExit
        /// A type this build does not know (a newer librdmacm).
        case other(UInt32)

        init(_ raw: rdma_cm_event_type) {
            switch raw {
            case RDMA_CM_EVENT_ADDR_RESOLVED: self = .addressResolved
            case RDMA_CM_EVENT_ADDR_ERROR: self = .addressError
            case RDMA_CM_EVENT_ROUTE_RESOLVED: self = .routeResolved
            case RDMA_CM_EVENT_ROUTE_ERROR: self = .routeError
            case RDMA_CM_EVENT_CONNECT_REQUEST: self = .connectRequest
            case RDMA_CM_EVENT_CONNECT_RESPONSE: self = .connectResponse
            case RDMA_CM_EVENT_CONNECT_ERROR: self = .connectError
            case RDMA_CM_EVENT_UNREACHABLE: self = .unreachable
            case RDMA_CM_EVENT_REJECTED: self = .rejected
            case RDMA_CM_EVENT_ESTABLISHED: self = .established
            case RDMA_CM_EVENT_DISCONNECTED: self = .disconnected
            case RDMA_CM_EVENT_DEVICE_REMOVAL: self = .deviceRemoval
            case RDMA_CM_EVENT_MULTICAST_JOIN: self = .multicastJoin
            case RDMA_CM_EVENT_MULTICAST_ERROR: self = .multicastError
            case RDMA_CM_EVENT_ADDR_CHANGE: self = .addressChange
            case RDMA_CM_EVENT_TIMEWAIT_EXIT: self = .timewaitExit
            default: self = .other(raw.rawValue)
            }
        }

        /// The events whose `param.conn` librdmacm fills (private data and conn parameters).
        /// On the others `param` is zero or belongs to UD/multicast.
        var carriesConnectionParameters: Bool {
            switch self {
            case .connectRequest, .connectResponse, .established, .rejected, .disconnected: true
            default: false
            }
        }

        /// librdmacm's own name for it (`rdma_event_str`).
        public var description: String {
            switch self {
            case .other(let raw): "RDMA_CM_EVENT_\(raw)"
            default: String(cString: rdma_event_str(rawValue))
            }
        }

        private var rawValue: rdma_cm_event_type {
            switch self {
            case .addressResolved: RDMA_CM_EVENT_ADDR_RESOLVED
            case .addressError: RDMA_CM_EVENT_ADDR_ERROR
            case .routeResolved: RDMA_CM_EVENT_ROUTE_RESOLVED
            case .routeError: RDMA_CM_EVENT_ROUTE_ERROR
            case .connectRequest: RDMA_CM_EVENT_CONNECT_REQUEST
            case .connectResponse: RDMA_CM_EVENT_CONNECT_RESPONSE
            case .connectError: RDMA_CM_EVENT_CONNECT_ERROR
            case .unreachable: RDMA_CM_EVENT_UNREACHABLE
            case .rejected: RDMA_CM_EVENT_REJECTED
            case .established: RDMA_CM_EVENT_ESTABLISHED
            case .disconnected: RDMA_CM_EVENT_DISCONNECTED
            case .deviceRemoval: RDMA_CM_EVENT_DEVICE_REMOVAL
            case .multicastJoin: RDMA_CM_EVENT_MULTICAST_JOIN
            case .multicastError: RDMA_CM_EVENT_MULTICAST_ERROR
            case .addressChange: RDMA_CM_EVENT_ADDR_CHANGE
            case .timewaitExit: RDMA_CM_EVENT_TIMEWAIT_EXIT
            case .other(let raw): rdma_cm_event_type(raw)
            }
        }
    }

    /// The connection parameters the other side proposed or granted (`struct rdma_conn_param`).
    public struct ConnectionParameters: Sendable, Hashable {
        public var responderResources: UInt8
        public var initiatorDepth: UInt8
        public var flowControl: UInt8
        public var retryCount: UInt8
        public var rnrRetryCount: UInt8
        public var sharedReceiveQueue: UInt8
        /// The other side's QP number.
        public var qpNumber: UInt32

        init(_ raw: rdma_conn_param) {
            responderResources = raw.responder_resources
            initiatorDepth = raw.initiator_depth
            flowControl = raw.flow_control
            retryCount = raw.retry_count
            rnrRetryCount = raw.rnr_retry_count
            sharedReceiveQueue = raw.srq
            qpNumber = raw.qp_num
        }
    }

    public let kind: Kind
    /// The event's status: 0, a negative errno (`-ETIMEDOUT`, `-ENODEV` …), or for `.rejected`
    /// the IB CM reject reason (28 = consumer reject, 8 = invalid service ID: nobody listens).
    public let status: Int32
    /// The id the event is for. For `.connectRequest`, the new id of the incoming connection,
    /// owned by this event until someone keeps it (accept or reject it; dropping it rejects).
    public let id: CMID
    /// For `.connectRequest`, the listening id it arrived on.
    public let listenID: CMID?
    /// The other side's private data. The transport pads it to its fixed size (IB CM: 56 bytes
    /// in a request, 196 in a reply, 148 in a reject), so it may be longer than what was sent.
    public let privateData: [UInt8]
    /// For `.connectRequest`, `.connectResponse`, `.established`, `.rejected`, `.disconnected`.
    public let connection: ConnectionParameters?

    static func copy(_ conn: rdma_conn_param) -> [UInt8] {
        guard let data = conn.private_data, conn.private_data_len > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: data, count: Int(conn.private_data_len)))
    }
}
