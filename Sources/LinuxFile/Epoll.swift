import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An epoll instance: the daemon's one selector. Owns the epoll fd; the watched fds stay their
/// owners'. Level-triggered, so a handler that reads only part of what is ready is called again.
public final class Epoll {
    public struct Events: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: UInt32(EPOLLIN.rawValue))
        public static let writable = Events(rawValue: UInt32(EPOLLOUT.rawValue))
        public static let error = Events(rawValue: UInt32(EPOLLERR.rawValue))
        public static let hangup = Events(rawValue: UInt32(EPOLLHUP.rawValue))
        public static let peerClosed = Events(rawValue: UInt32(EPOLLRDHUP.rawValue))
    }

    public struct Ready: Sendable, Equatable {
        public var fd: Int32
        public var events: Events
    }

    private var descriptor: FileDescriptor?

    /// The corresponding C function is `epoll_create1`.
    public init() throws(Errno) {
        descriptor = FileDescriptor(rawValue: try valueOrErrno(retryOnInterrupt: false) {
            epoll_create1(Int32(EPOLL_CLOEXEC))
        }.get())
    }

    deinit { try? close() }

    /// Watches `fd` for `events`, or changes what it is watched for.
    ///
    /// The corresponding C function is `epoll_ctl` (`EPOLL_CTL_ADD`, `EPOLL_CTL_MOD`).
    public func watch(_ fd: FileDescriptor, for events: Events) throws(Errno) {
        var event = epoll_event(events: events.rawValue, data: epoll_data_t(fd: fd.rawValue))
        let epfd = try open()
        let added = nothingOrErrno(retryOnInterrupt: false) { epoll_ctl(epfd, EPOLL_CTL_ADD, fd.rawValue, &event) }
        if case .failure(.fileExists) = added {
            try nothingOrErrno(retryOnInterrupt: false) { epoll_ctl(epfd, EPOLL_CTL_MOD, fd.rawValue, &event) }.get()
        } else {
            try added.get()
        }
    }

    /// Stops watching `fd`. Watching ends by itself when the fd's last copy closes.
    ///
    /// The corresponding C function is `epoll_ctl` (`EPOLL_CTL_DEL`).
    public func unwatch(_ fd: FileDescriptor) {
        guard let epfd = try? open() else { return }
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd.rawValue, nil)
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) for ready fds; [] on timeout or EINTR.
    ///
    /// The corresponding C function is `epoll_wait`.
    public func wait(timeoutMilliseconds: Int32, maxEvents: Int = 64) throws(Errno) -> [Ready] {
        let epfd = try open()
        var result: Result<Int32, Errno> = .success(0)
        // Uninitialized: the kernel fills what it reports, and zeroing 256 events per wait
        // was 3 000 instructions of every request's loop turn (callgrind).
        let events = [epoll_event](unsafeUninitializedCapacity: max(maxEvents, 1)) { buffer, initialized in
            result = valueOrErrno(retryOnInterrupt: false) {
                epoll_wait(epfd, buffer.baseAddress, Int32(maxEvents), timeoutMilliseconds)
            }
            initialized = (try? result.get()).map { min(Int($0), maxEvents) } ?? 0
        }
        if case .failure(.interrupted) = result { return [] }
        _ = try result.get()
        return events.map { Ready(fd: $0.data.fd, events: Events(rawValue: $0.events)) }
    }

    /// The epoll fd itself, to watch this set from another epoll set (readable when any fd
    /// here is ready); nil once closed.
    public var readiness: FileDescriptor? { descriptor }

    /// Closes the epoll fd; calling it again does nothing.
    ///
    /// The corresponding C function is `close`.
    public func close() throws(Errno) {
        guard let descriptor else { return }
        self.descriptor = nil
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.close(descriptor.rawValue) }.get()
    }

    private func open() throws(Errno) -> Int32 {
        guard let descriptor else { throw .badFileDescriptor }
        return descriptor.rawValue
    }
}
