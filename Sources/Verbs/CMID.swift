import CRDMA
import Glibc

/// An rdma_cm id (`rdma_cm_id`, RC): one end of a connection, or a listener. Its events arrive
/// on its `CMEventChannel`.
///
/// Owns its id and keeps its channel alive (ids before channel). A QP made on it with
/// `createQueuePair` is a `QueuePair` that keeps this id alive, so the QP always goes first;
/// `destroy()` destroys a QP still on the id before the id itself.
public final class CMID {
    /// Private-data limits of IB CM (and so RoCE/rxe) for RC, after rdma_cm's own header:
    /// a REQ carries 92 bytes of which rdma_cm takes 36 (`IB_CM_REQ_PRIVATE_DATA_SIZE -
    /// sizeof(struct cma_hdr)`), a REP 196, a REJ 148 (rdma_connect(3), rdma_accept(3),
    /// rdma_reject(3)). Larger is refused before any call is made.
    public static let maxConnectPrivateData = 56
    public static let maxAcceptPrivateData = 196
    public static let maxRejectPrivateData = 148

    public let channel: CMEventChannel
    private(set) var pointer: UnsafeMutablePointer<rdma_cm_id>?
    /// The QP made on this id, held weakly: it holds us, not we it.
    private weak var madeQueuePair: QueuePair?
    private var borrowedContext: Context?

    init(channel: CMEventChannel, pointer: UnsafeMutablePointer<rdma_cm_id>) {
        self.channel = channel
        self.pointer = pointer
    }

    deinit {
        // A QP on the id holds it, so none is left; nothing can be reported from here.
        if let pointer {
            channel.forget(pointer)
            _ = rdma_destroy_id(pointer)
        }
    }

    public var isDestroyed: Bool { pointer == nil }

    /// The QP made on this id, unless it was destroyed.
    public var queuePair: QueuePair? {
        guard let madeQueuePair, !madeQueuePair.isDestroyed else { return nil }
        return madeQueuePair
    }

    private func live(for op: String) throws(VerbsError) -> UnsafeMutablePointer<rdma_cm_id> {
        guard let pointer else { throw VerbsError(op: op, errno: .badFileDescriptor, detail: "the rdma_cm id was destroyed") }
        return pointer
    }

    /// Destroys the id's QP, if any, then the id: the other side sees a disconnect or nothing
    /// at all. Calling it again does nothing.
    ///
    /// The corresponding C functions are `ibv_destroy_qp` and `rdma_destroy_id`.
    public func destroy() throws(VerbsError) {
        guard let pointer else { return }
        try queuePair?.destroy()
        try check("rdma_destroy_id", rdma_destroy_id(pointer))
        channel.forget(pointer)
        self.pointer = nil
    }

    /// librdmacm's context for the device the id is bound to (nil before a bind or address
    /// resolution gave it one). Not owned: librdmacm keeps its contexts open while it is loaded.
    /// PDs for `createQueuePair` must be allocated on it (or on another `Context.librdmacm`
    /// of the same device: it is the same `ibv_context`).
    ///
    /// The corresponding C function is `rdma_get_devices`.
    public func context() throws(VerbsError) -> Context? {
        guard let verbs = try live(for: "rdma_get_devices").pointee.verbs else { return nil }
        if let borrowedContext, borrowedContext.pointer == verbs { return borrowedContext }
        let name = String(cString: ibv_get_device_name(verbs.pointee.device))
        guard let context = try Context.librdmacm(deviceNamed: name), context.pointer == verbs else {
            throw VerbsError(op: "rdma_get_devices", errno: .operationNotSupportedByDevice, detail: "the id's device \(name) is not one of librdmacm's contexts")
        }
        borrowedContext = context
        return context
    }

    /// Binds the id to a local address (IPv4 or IPv6 literal) and port; port 0 picks one.
    ///
    /// The corresponding C function is `rdma_bind_addr`.
    public func bind(address: String, port: UInt16) throws(VerbsError) {
        let id = try live(for: "rdma_bind_addr")
        var storage = try Self.socketAddress(address, port: port, for: "rdma_bind_addr")
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { rdma_bind_addr(id, $0) }
        }
        try check("rdma_bind_addr", rc, detail: "\(address) port \(port)")
    }

    /// The local port the id is bound to (the one the kernel picked for port 0).
    ///
    /// The corresponding C function is `rdma_get_src_port`.
    public func localPort() throws(VerbsError) -> UInt16 {
        UInt16(bigEndian: rdma_get_src_port(try live(for: "rdma_get_src_port")))
    }

    /// The other side's address and port as "192.0.2.1:40000" or "[fd00::1]:40000" (for logs
    /// and owners' events); "?" when the id has none (not connected).
    ///
    /// The corresponding C functions are `rdma_get_peer_addr` and `rdma_get_dst_port`.
    public func peerAddress() -> String {
        guard let id = pointer, let address = rdma_get_peer_addr(id) else { return "?" }
        let port = UInt16(bigEndian: rdma_get_dst_port(id))
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            var v4 = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            guard inet_ntop(AF_INET, &v4, &text, socklen_t(text.count)) != nil else { return "?" }
            return "\(String(cString: text)):\(port)"
        case AF_INET6:
            var v6 = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
            guard inet_ntop(AF_INET6, &v6, &text, socklen_t(text.count)) != nil else { return "?" }
            return "[\(String(cString: text))]:\(port)"
        default:
            return "?"
        }
    }

    /// Listens for connect requests on the bound address; they arrive as `.connectRequest`.
    ///
    /// The corresponding C function is `rdma_listen`.
    public func listen(backlog: Int32 = 16) throws(VerbsError) {
        try check("rdma_listen", rdma_listen(try live(for: "rdma_listen"), backlog))
    }

    /// Starts resolving `address:port` to a device and GID; ends with `.addressResolved` or
    /// `.addressError` on the channel.
    ///
    /// The corresponding C function is `rdma_resolve_addr`.
    public func resolveAddress(_ address: String, port: UInt16, timeoutMillis: Int32 = 2000) throws(VerbsError) {
        let id = try live(for: "rdma_resolve_addr")
        var storage = try Self.socketAddress(address, port: port, for: "rdma_resolve_addr")
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { rdma_resolve_addr(id, nil, $0, timeoutMillis) }
        }
        try check("rdma_resolve_addr", rc, detail: "\(address) port \(port)")
    }

    /// Starts resolving the route to the resolved address; ends with `.routeResolved` or
    /// `.routeError`.
    ///
    /// The corresponding C function is `rdma_resolve_route`.
    public func resolveRoute(timeoutMillis: Int32 = 2000) throws(VerbsError) {
        try check("rdma_resolve_route", rdma_resolve_route(try live(for: "rdma_resolve_route"), timeoutMillis))
    }

    /// Creates the id's RC QP in `protectionDomain`, which must live on the id's own context
    /// (`context()`): librdmacm refuses any other with EINVAL, and so does this, before the call,
    /// saying so. librdmacm moves the QP through its states as the connection is made.
    ///
    /// The corresponding C function is `rdma_create_qp`.
    public func createQueuePair(
        in protectionDomain: ProtectionDomain, sendQueue: CompletionQueue, receiveQueue: CompletionQueue,
        maxSend: UInt32 = 64, maxReceive: UInt32 = 64, maxInlineData: UInt32 = 0
    ) throws(VerbsError) -> QueuePair {
        let id = try live(for: "rdma_create_qp")
        let pd = try protectionDomain.open(for: "rdma_create_qp")
        guard let verbs = id.pointee.verbs else {
            throw VerbsError(op: "rdma_create_qp", errno: .invalidArgument, detail: "the id has no device yet: bind it or resolve an address first")
        }
        guard pd.pointee.context == verbs, sendQueue.context.pointer == verbs, receiveQueue.context.pointer == verbs else {
            throw VerbsError(op: "rdma_create_qp", errno: .invalidArgument,
                             detail: "the PD and CQs must be on the id's librdmacm context (Context.librdmacm(deviceNamed:)), not one opened with ibv_open_device")
        }
        guard queuePair == nil else {
            throw VerbsError(op: "rdma_create_qp", errno: .fileExists, detail: "the id already has QP \(queuePair?.number ?? 0)")
        }
        var attributes = QueuePair.reliableConnectedAttributes(
            sendQueue: sendQueue, receiveQueue: receiveQueue, maxSend: maxSend, maxReceive: maxReceive, maxInlineData: maxInlineData)
        try check("rdma_create_qp", rdma_create_qp(id, pd, &attributes), detail: "RC")
        guard let qp = id.pointee.qp else { throw VerbsError(op: "rdma_create_qp", errno: .ioError, detail: "no QP on the id") }
        let owner = QueuePair(protectionDomain: protectionDomain, sendQueue: sendQueue, receiveQueue: receiveQueue,
                              pointer: qp, connection: self)
        protectionDomain.track(owner)
        madeQueuePair = owner
        return owner
    }

    /// Called by the id's QP once it destroyed its `ibv_qp`, the second half of
    /// `rdma_destroy_qp`: librdmacm must not move a destroyed QP on later events.
    func queuePairDestroyed() {
        pointer?.pointee.qp = nil
    }

    /// Sends a connect request to the resolved route, carrying `privateData` (at most
    /// `maxConnectPrivateData` bytes). Ends with `.established`, `.rejected`, `.unreachable`
    /// or `.connectError` on the channel.
    ///
    /// The corresponding C function is `rdma_connect`.
    public func connect(privateData: [UInt8] = [], responderResources: UInt8 = 1, initiatorDepth: UInt8 = 1,
                        retryCount: UInt8 = 7, rnrRetry: UInt8 = 7) throws(VerbsError) {
        let id = try live(for: "rdma_connect")
        try Self.checkPrivateData(privateData, limit: Self.maxConnectPrivateData, op: "rdma_connect", message: "a connect request")
        let rc = Self.withParameters(privateData, responderResources: responderResources, initiatorDepth: initiatorDepth,
                                     retryCount: retryCount, rnrRetry: rnrRetry) { rdma_connect(id, $0) }
        try check("rdma_connect", rc)
    }

    /// Accepts a connect request (on the request's id), replying with `privateData` (at most
    /// `maxAcceptPrivateData` bytes). Ends with `.established` on this side.
    ///
    /// The corresponding C function is `rdma_accept`.
    public func accept(privateData: [UInt8] = [], responderResources: UInt8 = 1, initiatorDepth: UInt8 = 1) throws(VerbsError) {
        let id = try live(for: "rdma_accept")
        try Self.checkPrivateData(privateData, limit: Self.maxAcceptPrivateData, op: "rdma_accept", message: "an accept")
        // retry_count is ignored when accepting; rnr_retry_count is this side's RNR retry.
        let rc = Self.withParameters(privateData, responderResources: responderResources, initiatorDepth: initiatorDepth,
                                     retryCount: 0, rnrRetry: 7) { rdma_accept(id, $0) }
        try check("rdma_accept", rc)
    }

    /// Rejects a connect request, carrying `privateData` (at most `maxRejectPrivateData`
    /// bytes); the other side sees `.rejected` with status 28 (IB CM consumer reject).
    ///
    /// The corresponding C function is `rdma_reject`.
    public func reject(privateData: [UInt8] = []) throws(VerbsError) {
        let id = try live(for: "rdma_reject")
        try Self.checkPrivateData(privateData, limit: Self.maxRejectPrivateData, op: "rdma_reject", message: "a reject")
        let rc = privateData.withUnsafeBytes { bytes in
            rdma_reject(id, bytes.baseAddress, UInt8(bytes.count))
        }
        try check("rdma_reject", rc)
    }

    /// Disconnects: librdmacm moves the QP to the error state (posted work completes with
    /// flush errors) and sends a DREQ; the other side sees `.disconnected` and must answer with
    /// its own `disconnect()` (the DREP), which gives this side its `.disconnected` — without
    /// it, this side's event waits for the DREQ to time out.
    ///
    /// The corresponding C function is `rdma_disconnect`.
    public func disconnect() throws(VerbsError) {
        try check("rdma_disconnect", rdma_disconnect(try live(for: "rdma_disconnect")))
    }

    /// `body` with a `struct rdma_conn_param` pointing at `privateData` for the call's duration.
    private static func withParameters(
        _ privateData: [UInt8], responderResources: UInt8, initiatorDepth: UInt8, retryCount: UInt8, rnrRetry: UInt8,
        _ body: (UnsafeMutablePointer<rdma_conn_param>) -> Int32
    ) -> Int32 {
        privateData.withUnsafeBytes { bytes in
            var parameters = rdma_conn_param()
            parameters.private_data = bytes.baseAddress
            parameters.private_data_len = UInt8(bytes.count)
            parameters.responder_resources = responderResources
            parameters.initiator_depth = initiatorDepth
            parameters.retry_count = retryCount
            parameters.rnr_retry_count = rnrRetry
            return body(&parameters)
        }
    }

    private static func checkPrivateData(_ data: [UInt8], limit: Int, op: String, message: String) throws(VerbsError) {
        guard data.count <= limit else {
            throw VerbsError(op: op, errno: .invalidArgument,
                             detail: "\(data.count) bytes of private data; \(message) carries at most \(limit) on RC over IB/RoCE")
        }
    }

    /// An IPv4 or IPv6 literal and a port as a `sockaddr_storage`.
    static func socketAddress(_ address: String, port: UInt16, for op: String) throws(VerbsError) -> sockaddr_storage {
        var storage = sockaddr_storage()
        let parsed = withUnsafeMutablePointer(to: &storage) { raw -> Bool in
            if address.contains(":") {
                return raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                    sin6.pointee.sin6_port = port.bigEndian
                    return inet_pton(AF_INET6, address, &sin6.pointee.sin6_addr) == 1
                }
            }
            return raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = port.bigEndian
                return inet_pton(AF_INET, address, &sin.pointee.sin_addr) == 1
            }
        }
        guard parsed else { throw VerbsError(op: op, errno: .invalidArgument, detail: "\(address) is not an IPv4 or IPv6 address") }
        return storage
    }
}
