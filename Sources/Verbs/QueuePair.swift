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
public final class QueuePair {
    public let protectionDomain: ProtectionDomain
    public let sendQueue: CompletionQueue
    public let receiveQueue: CompletionQueue
    let pointer: UnsafeMutablePointer<ibv_qp>

    init(protectionDomain: ProtectionDomain, sendQueue: CompletionQueue, receiveQueue: CompletionQueue,
         pointer: UnsafeMutablePointer<ibv_qp>) {
        self.protectionDomain = protectionDomain
        self.sendQueue = sendQueue
        self.receiveQueue = receiveQueue
        self.pointer = pointer
    }

    deinit {
        _ = ibv_destroy_qp(pointer)
    }

    public var number: UInt32 { pointer.pointee.qp_num }

    /// Moves the QP through INIT → RTR → RTS towards `remote`, the rc_pingpong way.
    /// `access` is what remote peers may do through this QP (REMOTE_WRITE/READ/ATOMIC).
    ///
    /// The corresponding C function is `ibv_modify_qp`.
    public func connect(port: UInt8, local: GID, to remote: QueuePairEndpoint,
                        access: AccessFlags, mtu: PathMTU = .bytes1024) throws(VerbsError) {
        var attr = ibv_qp_attr()
        attr.qp_state = IBV_QPS_INIT
        attr.pkey_index = 0
        attr.port_num = port
        attr.qp_access_flags = access.rawValue
        try check("ibv_modify_qp",
                  ibv_modify_qp(pointer, &attr, Int32(IBV_QP_STATE.rawValue | IBV_QP_PKEY_INDEX.rawValue
                                                      | IBV_QP_PORT.rawValue | IBV_QP_ACCESS_FLAGS.rawValue)),
                  detail: "RESET→INIT")

        attr = ibv_qp_attr()
        attr.qp_state = IBV_QPS_RTR
        attr.path_mtu = mtu.raw
        attr.dest_qp_num = remote.qpNumber
        attr.rq_psn = remote.packetSequence
        attr.max_dest_rd_atomic = 1
        attr.min_rnr_timer = 12
        attr.ah_attr.is_global = 1
        attr.ah_attr.dlid = remote.lid
        attr.ah_attr.port_num = port
        attr.ah_attr.grh.dgid = remote.gid.raw
        attr.ah_attr.grh.sgid_index = UInt8(local.index)
        attr.ah_attr.grh.hop_limit = 1
        try check("ibv_modify_qp",
                  ibv_modify_qp(pointer, &attr, Int32(IBV_QP_STATE.rawValue | IBV_QP_AV.rawValue
                                                      | IBV_QP_PATH_MTU.rawValue | IBV_QP_DEST_QPN.rawValue
                                                      | IBV_QP_RQ_PSN.rawValue | IBV_QP_MAX_DEST_RD_ATOMIC.rawValue
                                                      | IBV_QP_MIN_RNR_TIMER.rawValue)),
                  detail: "INIT→RTR")

        attr = ibv_qp_attr()
        attr.qp_state = IBV_QPS_RTS
        attr.timeout = 14
        attr.retry_cnt = 7
        attr.rnr_retry = 7
        attr.sq_psn = 0
        attr.max_rd_atomic = 1
        try check("ibv_modify_qp",
                  ibv_modify_qp(pointer, &attr, Int32(IBV_QP_STATE.rawValue | IBV_QP_TIMEOUT.rawValue
                                                      | IBV_QP_RETRY_CNT.rawValue | IBV_QP_RNR_RETRY.rawValue
                                                      | IBV_QP_SQ_PSN.rawValue | IBV_QP_MAX_QP_RD_ATOMIC.rawValue)),
                  detail: "RTR→RTS")
    }

    /// One-sided operations a QP can post against a remote MR.
    public enum RemoteOperation: Sendable {
        case write, read
    }

    /// Posts a one-sided RDMA WRITE or READ of `length` bytes between the local MR (at
    /// `localAddress`) and the remote `(remoteAddress, rkey)`.
    ///
    /// The corresponding C function is `ibv_post_send`.
    public func post(_ operation: RemoteOperation, local: MemoryRegion, localAddress: UInt64, length: UInt32,
                     remoteAddress: UInt64, rkey: UInt32, wrID: UInt64 = 0) throws(VerbsError) {
        var sge = ibv_sge(addr: localAddress, length: length, lkey: local.lkey)
        var wr = ibv_send_wr()
        wr.wr_id = wrID
        wr.num_sge = 1
        wr.opcode = operation == .write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ
        wr.send_flags = IBV_SEND_SIGNALED.rawValue
        wr.wr.rdma.remote_addr = remoteAddress
        wr.wr.rdma.rkey = rkey
        var bad: UnsafeMutablePointer<ibv_send_wr>?
        let rc = withUnsafeMutablePointer(to: &sge) { sgePointer in
            wr.sg_list = sgePointer
            return ibv_post_send(pointer, &wr, &bad)
        }
        try check("ibv_post_send", rc, detail: operation == .write ? "RDMA_WRITE" : "RDMA_READ")
    }
}
