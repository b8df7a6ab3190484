import CRDMA

/// What the other side of an RC connection needs to know to connect to a queue pair.
public struct QueuePairEndpoint: Sendable, Hashable {
    public var qpNumber: UInt32
    public var lid: UInt16
    public var gid: GID
    public var packetSequence: UInt32

    public init(qpNumber: UInt32, lid: UInt16, gid: GID, packetSequence: UInt32 = 0) {
        self.qpNumber = qpNumber
        self.lid = lid
        self.gid = gid
        self.packetSequence = packetSequence
    }
}

/// The path MTU of a connection: RDMA messages longer than this travel as several packets.
public enum PathMTU: Int, Sendable {
    case bytes256 = 256, bytes512 = 512, bytes1024 = 1024, bytes2048 = 2048, bytes4096 = 4096

    var raw: ibv_mtu {
        switch self {
        case .bytes256: IBV_MTU_256
        case .bytes512: IBV_MTU_512
        case .bytes1024: IBV_MTU_1024
        case .bytes2048: IBV_MTU_2048
        case .bytes4096: IBV_MTU_4096
        }
    }
}

/// A reliable-connected queue pair. Owns its `ibv_qp`; keeps its PD and CQs alive.
///
/// `destroy()` releases it deterministically (its PD's `close()` does, before the PD goes);
/// `deinit` releases it if nobody did.
///
/// A QP made by `rdma_create_qp` (`CMID.createQueuePair`) is owned the same way, by this type,
/// and keeps its `CMID` alive (QP before id). It is destroyed with `ibv_destroy_qp`, whose
/// errno we see (`rdma_destroy_qp` returns void and forgets the QP even when the destroy
/// failed), followed by what `rdma_destroy_qp` adds: clearing `id->qp`, so librdmacm never
/// moves a destroyed QP on a later event. (It also frees CQs librdmacm made itself; ours are
/// always passed in.) Being a `QueuePair` in its PD's children, it goes in the PD's ordered
/// close like any other.
public final class QueuePair {
    public let protectionDomain: ProtectionDomain
    public let sendQueue: CompletionQueue
    public let receiveQueue: CompletionQueue
    /// The rdma_cm id the QP was made on, if any.
    public let connection: CMID?
    /// The QP number, kept after the QP is destroyed so logs can still name it.
    public let number: UInt32
    private var pointer: UnsafeMutablePointer<ibv_qp>?

    init(protectionDomain: ProtectionDomain, sendQueue: CompletionQueue, receiveQueue: CompletionQueue,
         pointer: UnsafeMutablePointer<ibv_qp>, connection: CMID? = nil) {
        self.protectionDomain = protectionDomain
        self.sendQueue = sendQueue
        self.receiveQueue = receiveQueue
        self.connection = connection
        self.pointer = pointer
        number = pointer.pointee.qp_num
    }

    deinit {
        if let pointer, ibv_destroy_qp(pointer) == 0 { connection?.queuePairDestroyed() }
    }

    /// The creation attributes of every RC QP we make, with `ibv_create_qp` or `rdma_create_qp`.
    static func reliableConnectedAttributes(
        sendQueue: CompletionQueue, receiveQueue: CompletionQueue, maxSend: UInt32, maxReceive: UInt32, maxInlineData: UInt32
    ) -> ibv_qp_init_attr {
        var attributes = ibv_qp_init_attr()
        attributes.send_cq = sendQueue.pointer
        attributes.recv_cq = receiveQueue.pointer
        attributes.qp_type = IBV_QPT_RC
        attributes.cap.max_send_wr = maxSend
        attributes.cap.max_recv_wr = maxReceive
        attributes.cap.max_send_sge = 1
        attributes.cap.max_recv_sge = 1
        attributes.cap.max_inline_data = maxInlineData
        attributes.sq_sig_all = 1
        return attributes
    }

    public var isDestroyed: Bool { pointer == nil }

    /// The QP, or the error `op` reports on a destroyed one.
    private func live(for op: String) throws(VerbsError) -> UnsafeMutablePointer<ibv_qp> {
        guard let pointer else { throw VerbsError(op: op, errno: .badFileDescriptor, detail: "QP \(number) was destroyed") }
        return pointer
    }

    /// Destroys the QP: its number is dead to peers from here on. Calling it again does nothing.
    ///
    /// The corresponding C function is `ibv_destroy_qp`.
    public func destroy() throws(VerbsError) {
        guard let pointer else { return }
        try check("ibv_destroy_qp", ibv_destroy_qp(pointer), detail: "QP \(number)")
        self.pointer = nil
        connection?.queuePairDestroyed()
    }

    /// Applies the fields of `attributes` named in `mask`: a state transition with what it
    /// needs, or a change of attributes in place. The kernel checks the transition and the
    /// mask together (`ib_modify_qp_is_ok`) and answers EINVAL for a wrong pair.
    ///
    /// The corresponding C function is `ibv_modify_qp`.
    public func modify(attributes: Attributes, mask: AttributeMask) throws(VerbsError) {
        var attr = attributes.raw
        try check("ibv_modify_qp", ibv_modify_qp(try live(for: "ibv_modify_qp"), &attr, Int32(bitPattern: mask.rawValue)),
                  detail: "QP \(number) to \(attributes.state), mask \(mask)")
    }

    /// The QP's current state, as the device reports it.
    ///
    /// The corresponding C function is `ibv_query_qp`.
    public func queryState() throws(VerbsError) -> State {
        var attr = ibv_qp_attr()
        var initAttr = ibv_qp_init_attr()
        try check("ibv_query_qp", ibv_query_qp(try live(for: "ibv_query_qp"), &attr, Int32(IBV_QP_STATE.rawValue), &initAttr),
                  detail: "QP \(number)")
        return State(attr.qp_state)
    }

    /// Moves the QP through INIT → RTR → RTS towards `remote`, the rc_pingpong way.
    /// `access` is what remote peers may do through this QP (REMOTE_WRITE/READ/ATOMIC).
    ///
    /// The corresponding C function is `ibv_modify_qp`, once per transition.
    public func connect(port: UInt8, local: GID, to remote: QueuePairEndpoint,
                        access: AccessFlags, mtu: PathMTU = .bytes1024) throws(VerbsError) {
        var initialized = Attributes(state: .initialized)
        initialized.pkeyIndex = 0
        initialized.port = port
        initialized.accessFlags = access
        try modify(attributes: initialized, mask: [.state, .pkeyIndex, .port, .accessFlags])

        var readyToReceive = Attributes(state: .readyToReceive)
        readyToReceive.pathMTU = mtu
        readyToReceive.destQPN = remote.qpNumber
        readyToReceive.rqPSN = remote.packetSequence
        readyToReceive.maxDestReadAtomic = 1
        readyToReceive.minRNRTimer = 12
        readyToReceive.addressVector = AddressVector(
            destinationLID: remote.lid, port: port,
            global: GlobalRoute(destinationGID: remote.gid, sourceGIDIndex: UInt8(local.index), hopLimit: 1))
        try modify(attributes: readyToReceive,
                   mask: [.state, .addressVector, .pathMTU, .destQPN, .rqPSN, .maxDestReadAtomic, .minRNRTimer])

        var readyToSend = Attributes(state: .readyToSend)
        readyToSend.timeout = 14
        readyToSend.retryCount = 7
        readyToSend.rnrRetry = 7
        readyToSend.sqPSN = 0
        readyToSend.maxReadAtomic = 1
        try modify(attributes: readyToSend, mask: [.state, .timeout, .retryCount, .rnrRetry, .sqPSN, .maxReadAtomic])
    }

    /// One-sided operations a QP can post against a remote MR.
    ///
    /// The atomics work on 8 bytes at an 8-byte-aligned remote address (IB spec, o9-21; the
    /// responder NAKs a misaligned one with an invalid request); the 8 bytes the remote word
    /// held before the operation land at the local address, in the responder's byte order
    /// (little-endian on every host mrleased runs on), and the QP's connection needs read/atomic
    /// resources (`initiatorDepth`/`responderResources` > 0) on both sides.
    public enum RemoteOperation: Sendable, Hashable, CustomStringConvertible {
        case write, read
        /// If the remote word equals `expected`, store `desired` (`IBV_WR_ATOMIC_CMP_AND_SWP`).
        case compareAndSwap(expected: UInt64, desired: UInt64)
        /// Add `add` to the remote word (`IBV_WR_ATOMIC_FETCH_AND_ADD`).
        case fetchAdd(UInt64)

        var opcode: ibv_wr_opcode {
            switch self {
            case .write: IBV_WR_RDMA_WRITE
            case .read: IBV_WR_RDMA_READ
            case .compareAndSwap: IBV_WR_ATOMIC_CMP_AND_SWP
            case .fetchAdd: IBV_WR_ATOMIC_FETCH_AND_ADD
            }
        }

        public var isAtomic: Bool {
            switch self {
            case .write, .read: false
            case .compareAndSwap, .fetchAdd: true
            }
        }

        /// The opcode's name in verbs' vocabulary.
        public var description: String {
            switch self {
            case .write: "RDMA_WRITE"
            case .read: "RDMA_READ"
            case .compareAndSwap: "ATOMIC_CMP_AND_SWP"
            case .fetchAdd: "ATOMIC_FETCH_AND_ADD"
            }
        }
    }

    /// Posts a one-sided operation of `length` bytes between the local MR (at `localAddress`)
    /// and the remote `(remoteAddress, rkey)`: an RDMA WRITE or READ, or an atomic (`length`
    /// must then be 8; the remote word's previous value lands at `localAddress`). Signaled: each
    /// posted request yields one completion with `wrID`.
    ///
    /// The corresponding C function is `ibv_post_send`.
    public func post(_ operation: RemoteOperation, local: MemoryRegion, localAddress: UInt64, length: UInt32,
                     remoteAddress: UInt64, rkey: UInt32, wrID: UInt64 = 0) throws(VerbsError) {
        let qp = try live(for: "ibv_post_send")
        if operation.isAtomic, length != 8 || remoteAddress % 8 != 0 {
            throw VerbsError(op: "ibv_post_send", errno: .invalidArgument,
                             detail: "\(operation) works on 8 bytes at an 8-byte-aligned address, not \(length) at 0x\(String(remoteAddress, radix: 16))")
        }
        var sge = ibv_sge(addr: localAddress, length: length, lkey: local.lkey)
        var wr = ibv_send_wr()
        wr.wr_id = wrID
        wr.num_sge = 1
        wr.opcode = operation.opcode
        wr.send_flags = IBV_SEND_SIGNALED.rawValue
        switch operation {
        case .write, .read:
            wr.wr.rdma.remote_addr = remoteAddress
            wr.wr.rdma.rkey = rkey
        case .compareAndSwap(let expected, let desired):
            wr.wr.atomic.remote_addr = remoteAddress
            wr.wr.atomic.compare_add = expected
            wr.wr.atomic.swap = desired
            wr.wr.atomic.rkey = rkey
        case .fetchAdd(let add):
            wr.wr.atomic.remote_addr = remoteAddress
            wr.wr.atomic.compare_add = add
            wr.wr.atomic.rkey = rkey
        }
        var bad: UnsafeMutablePointer<ibv_send_wr>?
        let rc = withUnsafeMutablePointer(to: &sge) { sgePointer in
            wr.sg_list = sgePointer
            return ibv_post_send(qp, &wr, &bad)
        }
        try check("ibv_post_send", rc, detail: "\(operation)")
    }
}
