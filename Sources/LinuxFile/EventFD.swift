import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Owns a nonblocking eventfd: a counter another thread adds to, and an event loop polls
/// (readable while it is not zero). The daemon's worker threads tell the loop "something is
/// done" with it; what is done travels beside it, under the worker's own lock.
public final class EventFD: @unchecked Sendable {
    // `fd` is set in init and cleared only by close(), which the owner calls after every
    // thread that signals has stopped: signal() and take() from any thread before that.
    private var fd: FileDescriptor?

    /// The corresponding C function is `eventfd` (`EFD_NONBLOCK | EFD_CLOEXEC`, counter mode).
    public init() throws(Errno) {
        let raw = try valueOrErrno(retryOnInterrupt: false) { eventfd(0, CInt(EFD_NONBLOCK | EFD_CLOEXEC)) }.get()
        fd = FileDescriptor(rawValue: raw)
    }

    deinit {
        if let fd { _ = Glibc.close(fd.rawValue) }
    }

    /// The descriptor, for an event loop to poll. Precondition: not closed.
    public var descriptor: FileDescriptor {
        guard let fd else { preconditionFailure("EventFD used after close()") }
        return fd
    }

    /// Adds one to the counter (the descriptor becomes readable). Fails only with EAGAIN
    /// when the counter is at its maximum (2^64 - 2), which a reader taking it never lets
    /// happen.
    ///
    /// The corresponding C function is `write`.
    public func signal() throws(Errno) {
        var one: UInt64 = 1
        let fd = descriptor.rawValue
        try valueOrErrno(retryOnInterrupt: true) { Glibc.write(fd, &one, 8) }.map { _ in () }.get()
    }

    /// Reads and clears the counter: how many signals came since the last take; 0 when none.
    ///
    /// The corresponding C function is `read`.
    public func take() throws(Errno) -> UInt64 {
        var count: UInt64 = 0
        let fd = descriptor.rawValue
        switch valueOrErrno(retryOnInterrupt: true, { Glibc.read(fd, &count, 8) }) {
        case .success: return count
        case .failure(.wouldBlock): return 0
        case .failure(let error): throw error
        }
    }

    /// Closes the descriptor; later calls do nothing.
    ///
    /// The corresponding C function is `close`.
    public func close() throws(Errno) {
        guard let fd else { return }
        self.fd = nil
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.close(fd.rawValue) }.get()
    }
}
