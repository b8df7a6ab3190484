import CRDMA

/// One work completion, as `ibv_poll_cq` returns it.
public struct WorkCompletion: Sendable, Hashable {
    public var wrID: UInt64
    /// `IBV_WC_SUCCESS` is 0; anything else names why the work request failed.
    public var status: UInt32
    public var opcode: UInt32
    public var byteCount: UInt32
    public var isSuccess: Bool { status == IBV_WC_SUCCESS.rawValue }
    /// rdma-core's name for `status` ("success", "remote access error"); made when asked, not
    /// on every poll.
    public var statusText: String { String(cString: ibv_wc_status_str(ibv_wc_status(status))) }

    public init(wrID: UInt64, status: UInt32, opcode: UInt32, byteCount: UInt32) {
        self.wrID = wrID
        self.status = status
        self.opcode = opcode
        self.byteCount = byteCount
    }
}

/// A completion queue. Owns its `ibv_cq` and keeps its `Context` (and channel) alive.
public final class CompletionQueue {
    public let context: Context
    public let channel: CompletionChannel?
    let pointer: UnsafeMutablePointer<ibv_cq>
    /// `ibv_poll_cq`'s output, allocated once: a peer polls in a tight loop, and an allocation
    /// per empty poll showed in its latency.
    private let entries: UnsafeMutablePointer<ibv_wc>
    private static let batch = 16

    init(context: Context, channel: CompletionChannel?, pointer: UnsafeMutablePointer<ibv_cq>) {
        self.context = context
        self.channel = channel
        self.pointer = pointer
        entries = .allocate(capacity: Self.batch)
        entries.initialize(repeating: ibv_wc(), count: Self.batch)
    }

    deinit {
        _ = ibv_destroy_cq(pointer)
        entries.deallocate()
    }

    /// Takes up to `max` (at most 16) completions off the queue; [] when none are ready. One
    /// thread at a time, as for the CQ itself.
    ///
    /// The corresponding C function is `ibv_poll_cq`.
    public func poll(max: Int = 16) throws(VerbsError) -> [WorkCompletion] {
        let count = ibv_poll_cq(pointer, Int32(Swift.min(Swift.max(max, 1), Self.batch)), entries)
        guard count >= 0 else { throw VerbsError(op: "ibv_poll_cq", errno: currentErrno()) }
        guard count > 0 else { return [] }
        return (0..<Int(count)).map { index in
            let wc = entries[index]
            return WorkCompletion(wrID: wc.wr_id, status: wc.status.rawValue, opcode: wc.opcode.rawValue, byteCount: wc.byte_len)
        }
    }

    /// Asks for an event on the channel at the next completion.
    ///
    /// The corresponding C function is `ibv_req_notify_cq`.
    public func requestNotification(solicitedOnly: Bool = false) throws(VerbsError) {
        try check("ibv_req_notify_cq", ibv_req_notify_cq(pointer, solicitedOnly ? 1 : 0))
    }
}
