import CRDMA
import SystemPackage

/// A completion channel: its fd becomes readable when a CQ armed on it gets a completion,
/// so an event loop can wait for completions with epoll instead of polling.
///
/// Owns its `ibv_comp_channel` and keeps its `Context` alive. CQs on it keep it alive.
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
}
