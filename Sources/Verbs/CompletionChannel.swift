import CRDMA
import Glibc
import SystemPackage

/// A completion channel: its fd becomes readable when a CQ armed on it gets a completion,
/// so an event loop can wait for completions with epoll instead of polling.
///
/// Owns its `ibv_comp_channel` and keeps its `Context` alive. CQs on it keep it alive.
/// The fd is non-blocking (like `CMEventChannel`'s), so `takeEvents()` never waits.
public final class CompletionChannel {
    public let context: Context
    let pointer: UnsafeMutablePointer<ibv_comp_channel>

    init(context: Context, pointer: UnsafeMutablePointer<ibv_comp_channel>) {
        self.context = context
        self.pointer = pointer
    }

    deinit {
        _ = ibv_destroy_comp_channel(pointer)
    }

    /// The fd to wait on for readability.
    public var descriptor: FileDescriptor { FileDescriptor(rawValue: pointer.pointee.fd) }

    /// Takes every pending CQ event off the channel and acknowledges each at once (a CQ cannot
    /// be destroyed while its events are unacknowledged); returns how many there were. A CQ
    /// must be re-armed (`requestNotification`) for its next event.
    ///
    /// The corresponding C functions are `ibv_get_cq_event` and `ibv_ack_cq_events`.
    public func takeEvents() throws(VerbsError) -> Int {
        var count = 0
        while true {
            var cq: UnsafeMutablePointer<ibv_cq>?
            var context: UnsafeMutableRawPointer?
            guard ibv_get_cq_event(pointer, &cq, &context) == 0 else {
                let code = currentErrno()
                if code == .resourceTemporarilyUnavailable { return count }
                if code == .interrupted { continue }
                throw VerbsError(op: "ibv_get_cq_event", errno: code)
            }
            if let cq { ibv_ack_cq_events(cq, 1) }
            count += 1
        }
    }
}
