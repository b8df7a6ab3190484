import CRDMA

/// One work completion, as `ibv_poll_cq` returns it.
public struct WorkCompletion: Sendable, Hashable {
    public var wrID: UInt64
    /// `IBV_WC_SUCCESS` is 0; anything else names why the work request failed.
    public var status: UInt32
    public var statusText: String
    public var opcode: UInt32
    public var byteCount: UInt32
    public var isSuccess: Bool { status == IBV_WC_SUCCESS.rawValue }
}

/// A completion queue. Owns its `ibv_cq` and keeps its `Context` (and channel) alive.
public final class CompletionQueue {
    public let context: Context
    public let channel: CompletionChannel?
    let pointer: UnsafeMutablePointer<ibv_cq>

    init(context: Context, channel: CompletionChannel?, pointer: UnsafeMutablePointer<ibv_cq>) {
        self.context = context
        self.channel = channel
        self.pointer = pointer
    }

    deinit {
        _ = ibv_destroy_cq(pointer)
    }

    /// Takes up to `max` completions off the queue; [] when none are ready.
    ///
    /// The corresponding C function is `ibv_poll_cq`.
    public func poll(max: Int = 16) throws(VerbsError) -> [WorkCompletion] {
        var entries = [ibv_wc](repeating: ibv_wc(), count: max)
        let count = ibv_poll_cq(pointer, Int32(max), &entries)
        guard count >= 0 else { throw VerbsError(op: "ibv_poll_cq", errno: currentErrno()) }
        return entries.prefix(Int(count)).map { wc in
            WorkCompletion(
                wrID: wc.wr_id, status: wc.status.rawValue,
                statusText: String(cString: ibv_wc_status_str(wc.status)),
                opcode: wc.opcode.rawValue, byteCount: wc.byte_len)
        }
    }

    /// Asks for an event on the channel at the next completion.
    ///
    /// The corresponding C function is `ibv_req_notify_cq`.
    public func requestNotification(solicitedOnly: Bool = false) throws(VerbsError) {
        try check("ibv_req_notify_cq", ibv_req_notify_cq(pointer, solicitedOnly ? 1 : 0))
    }
}
