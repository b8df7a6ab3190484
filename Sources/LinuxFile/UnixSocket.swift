import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Owns one `AF_UNIX` `SOCK_SEQPACKET` socket (close-on-exec): a listener or one connection.
///
/// SEQPACKET keeps message boundaries, so one `send` is one packet and one `receive` reads
/// exactly one packet; descriptors sent with `SCM_RIGHTS` arrive with the packet they were sent
/// with. A packet longer than the receive buffer is cut, not split: the rest is discarded and
/// the kernel says so with `MSG_TRUNC`.
public final class UnixSocket {
    /// The peer process as the kernel recorded it at `connect`/`socketpair` time.
    public struct Credentials: Sendable, Equatable, Hashable {
        public var pid: pid_t
        public var uid: uid_t
        public var gid: gid_t

        public init(pid: pid_t, uid: uid_t, gid: gid_t) {
            self.pid = pid
            self.uid = uid
            self.gid = gid
        }
    }

    /// One packet as received.
    ///
    /// The descriptors in `fds` are new, close-on-exec descriptors owned by the caller, who
    /// must close them.
    public struct Message: Sendable, Equatable {
        /// The packet's bytes: at most `maxSize` of them.
        public var bytes: [UInt8]
        /// The descriptors that came with the packet (`[]` when `fdsDropped`).
        public var fds: [FileDescriptor]
        /// The packet was longer than `maxSize`; `bytes` holds its beginning, the rest is gone.
        public var truncated: Bool
        /// The packet carried more than `maxFDs` descriptors. All of them were closed (those
        /// the kernel did not install it closed itself), so none leaks, and `fds` is empty.
        public var fdsDropped: Bool
        /// The packet carried descriptors the kernel could not install in this process (out of
        /// fds: EMFILE/ENFILE, or refused by a security module): fewer than `maxFDs` arrived
        /// and `MSG_CTRUNC` was set. The ones that did arrive were closed; `fds` is empty.
        public var fdsNotReceived: Bool

        public init(bytes: [UInt8], fds: [FileDescriptor] = [], truncated: Bool = false, fdsDropped: Bool = false,
                    fdsNotReceived: Bool = false) {
            self.bytes = bytes
            self.fds = fds
            self.truncated = truncated
            self.fdsDropped = fdsDropped
            self.fdsNotReceived = fdsNotReceived
        }
    }

    /// What one `receive` found.
    public enum Received: Sendable, Equatable {
        case message(Message)
        /// The peer closed its end (or shut down writing): a 0-byte read with no descriptors.
        /// A 0-byte packet is indistinguishable from this, so the protocol never sends one.
        case endOfStream
        /// Nonblocking socket, nothing queued (`EAGAIN`).
        case wouldBlock
    }

    private var fd: FileDescriptor?

    /// The longest path a `sockaddr_un` holds, its terminating NUL excluded.
    public static let maxPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    private init(owning fd: FileDescriptor) {
        self.fd = fd
    }

    /// Takes ownership of a socket someone else opened, such as one systemd passes with socket
    /// activation (`LISTEN_FDS`: descriptors 3, 4, … in the order of the unit's `Listen*=`).
    ///
    /// Checks that `fd` is a `SOCK_SEQPACKET` socket and makes it close-on-exec (systemd passes
    /// it inheritable). When this throws, the caller still owns `fd`.
    ///
    /// The corresponding C functions are `getsockopt` (`SO_TYPE`) and `fcntl` (`F_SETFD`).
    public init(adopting fd: FileDescriptor) throws(Errno) {
        var type: CInt = 0
        var size = socklen_t(MemoryLayout<CInt>.size)
        try nothingOrErrno(retryOnInterrupt: false) {
            getsockopt(fd.rawValue, SOL_SOCKET, SO_TYPE, &type, &size)
        }.get()
        guard type == CInt(SOCK_SEQPACKET.rawValue) else { throw Errno.protocolWrongTypeForSocket }
        try nothingOrErrno(retryOnInterrupt: false) { mrl_fcntl_int(fd.rawValue, F_SETFD, FD_CLOEXEC) }.get()
        self.fd = fd
    }

    deinit {
        if let fd { _ = Glibc.close(fd.rawValue) }
    }

    /// The socket, for an event loop to poll. Precondition: not closed.
    public var descriptor: FileDescriptor {
        guard let fd else { preconditionFailure("UnixSocket used after close()") }
        return fd
    }

    // MARK: Creating

    /// A listening socket bound to `path`, with the file's permissions set to `mode` and, when
    /// given, its group to `group`.
    ///
    /// A socket file left by a previous run is removed first, but only when it is a socket and
    /// nobody accepts on it (connecting is refused); anything else at `path` makes bind fail
    /// with `EADDRINUSE`, so a live daemon is never stolen from and no other file is deleted.
    ///
    /// The corresponding C functions are `socket`, `bind`, `chown`, `chmod` and `listen`.
    public static func listen(path: String, backlog: Int32 = 128, mode: mode_t = 0o660, group: gid_t? = nil) throws(Errno) -> UnixSocket {
        var address = try Self.address(path)
        try removeStaleSocket(path)
        let socket = try open()
        try withSockaddr(&address) { pointer, size in
            nothingOrErrno(retryOnInterrupt: false) { bind(socket.descriptor.rawValue, pointer, size) }
        }.get()
        // Before listen, a connect is refused, so tightening the mode here leaves no window in
        // which a client allowed only by the umask could get in.
        if let group {
            try nothingOrErrno(retryOnInterrupt: false) { chown(path, uid_t.max, group) }.get()  // -1: owner unchanged
        }
        try nothingOrErrno(retryOnInterrupt: false) { chmod(path, mode) }.get()
        try nothingOrErrno(retryOnInterrupt: false) {
            Glibc.listen(socket.descriptor.rawValue, backlog)
        }.get()
        return socket
    }

    /// A connection to the listener at `path`.
    ///
    /// The corresponding C functions are `socket` and `connect`.
    public static func connect(path: String) throws(Errno) -> UnixSocket {
        var address = try Self.address(path)
        let socket = try open()
        // Not retried on EINTR: the connection attempt goes on, and a second connect would
        // report EALREADY or EISCONN instead of its outcome.
        try withSockaddr(&address) { pointer, size in
            nothingOrErrno(retryOnInterrupt: false) {
                Glibc.connect(socket.descriptor.rawValue, pointer, size)
            }
        }.get()
        return socket
    }

    /// Two connected sockets, as a client and the daemon's end of its connection.
    ///
    /// The corresponding C function is `socketpair`.
    public static func pair() throws(Errno) -> (UnixSocket, UnixSocket) {
        var fds: [CInt] = [-1, -1]
        try nothingOrErrno(retryOnInterrupt: false) {
            socketpair(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue | SOCK_CLOEXEC.rawValue), 0, &fds)
        }.get()
        return (UnixSocket(owning: FileDescriptor(rawValue: fds[0])),
                UnixSocket(owning: FileDescriptor(rawValue: fds[1])))
    }

    /// The next pending connection, or nil when the socket is nonblocking and none is pending.
    ///
    /// The new socket is close-on-exec and, when `nonBlocking`, nonblocking (accept does not
    /// inherit the listener's `O_NONBLOCK`). `ECONNABORTED` (the client gave up while queued)
    /// is thrown: a loop accepting until nil should treat it as "try again".
    ///
    /// The corresponding C function is `accept4`.
    public func accept(nonBlocking: Bool = false) throws(Errno) -> UnixSocket? {
        let listener = descriptor.rawValue
        switch valueOrErrno(retryOnInterrupt: true, { mrl_accept(listener, nonBlocking ? 1 : 0) }) {
        case .success(let raw): return UnixSocket(owning: FileDescriptor(rawValue: raw))
        case .failure(.wouldBlock): return nil
        case .failure(let error): throw error
        }
    }

    // MARK: Messages

    /// Sends `bytes` as one packet, with `fds` attached as `SCM_RIGHTS` in the same message.
    ///
    /// The receiver gets its own duplicates of `fds`; the caller's stay open. A closed peer is
    /// `EPIPE` (never `SIGPIPE`); a full nonblocking socket is `EAGAIN`; a packet larger than the
    /// socket's send buffer is `EMSGSIZE`.
    ///
    /// The corresponding C function is `sendmsg` (`MSG_NOSIGNAL`).
    public func send(_ bytes: [UInt8], fds: [FileDescriptor] = []) throws(Errno) {
        let socket = descriptor.rawValue
        let raw = fds.map(\.rawValue)
        // SEQPACKET sends are all or nothing: success means the whole packet is queued.
        try bytes.withUnsafeBytes { buffer in
            raw.withUnsafeBufferPointer { fdBuffer in
                nothingOrErrno(retryOnInterrupt: true) {
                    mrl_send_with_fds(socket, buffer.baseAddress, buffer.count,
                                      fdBuffer.baseAddress, CInt(fdBuffer.count))
                }
            }
        }.get()
    }

    /// Receives one packet of at most `maxSize` bytes with at most `maxFDs` descriptors.
    ///
    /// Received descriptors are close-on-exec. An oversized packet comes back `truncated`; one
    /// with too many descriptors comes back `fdsDropped`, one whose descriptors this process
    /// had no room for `fdsNotReceived`, both with all of them closed.
    ///
    /// The corresponding C function is `recvmsg` (`MSG_CMSG_CLOEXEC`).
    public func receive(maxSize: Int, maxFDs: Int = 4) throws(Errno) -> Received {
        precondition(maxSize >= 0 && maxFDs >= 0, "negative receive limits")
        let socket = descriptor.rawValue
        var raw = [CInt](repeating: -1, count: max(maxFDs, 1))
        var count: CInt = 0
        var flags: CInt = 0
        var result: Result<Int, Errno> = .success(0)
        // Uninitialized: the daemon receives into a 64 KiB buffer per packet, and zeroing it
        // first cost more than the syscall under emulation (measured by the daemon benchmark).
        var bytes = [UInt8](unsafeUninitializedCapacity: maxSize) { buffer, initialized in
            result = raw.withUnsafeMutableBufferPointer { fdBuffer in
                valueOrErrno(retryOnInterrupt: true) {
                    mrl_recv_with_fds(socket, buffer.baseAddress, buffer.count,
                                      fdBuffer.baseAddress, CInt(maxFDs), &count, &flags)
                }
            }
            initialized = (try? result.get()).map { min($0, maxSize) } ?? 0
        }
        let length: Int
        switch result {
        case .success(let value): length = value
        case .failure(.wouldBlock): return .wouldBlock
        case .failure(let error): throw error
        }
        var fds = raw.prefix(Int(count)).map { FileDescriptor(rawValue: $0) }
        // MSG_CTRUNC means one of two things. The control buffer holds at least `maxFDs`
        // descriptors, so when it was cut with fewer than that installed, space was not the
        // reason: the kernel failed to install the next one (scm_detach_fds stops at the
        // first receive_fd error, EMFILE under RLIMIT_NOFILE). With `maxFDs` of them, the
        // sender sent more than fit (or than mrl_recv_with_fds kept).
        let cut = flags & MRL_MSG_CTRUNC != 0
        let fdsNotReceived = cut && fds.count < maxFDs
        let fdsDropped = cut && !fdsNotReceived
        if cut {
            for fd in fds { _ = Glibc.close(fd.rawValue) }
            fds = []
        }
        let truncated = flags & MRL_MSG_TRUNC != 0
        if length == 0 && count == 0 && !cut && !truncated { return .endOfStream }
        bytes.removeSubrange(min(length, bytes.count)...)
        return .message(Message(bytes: bytes, fds: fds, truncated: truncated, fdsDropped: fdsDropped,
                                fdsNotReceived: fdsNotReceived))
    }

    // MARK: Properties

    /// The pid, uid and gid of the peer process.
    ///
    /// The corresponding C function is `getsockopt` (`SO_PEERCRED`).
    public func peerCredentials() throws(Errno) -> Credentials {
        var credentials = Credentials(pid: 0, uid: 0, gid: 0)
        let socket = descriptor.rawValue
        try nothingOrErrno(retryOnInterrupt: false) {
            mrl_peer_credentials(socket, &credentials.pid, &credentials.uid, &credentials.gid)
        }.get()
        return credentials
    }

    /// The bytes sent on this socket that the peer has not read yet (on a Unix socket, what
    /// its packets take in the kernel, overhead included): falls as the peer reads.
    ///
    /// The corresponding C function is `ioctl` (`SIOCOUTQ`).
    public func unreadBytes() throws(Errno) -> Int {
        var bytes: Int32 = 0
        let socket = descriptor.rawValue
        try nothingOrErrno(retryOnInterrupt: false) { mrl_ioctl_outq(socket, &bytes) }.get()
        return Int(bytes)
    }

    /// Turns `O_NONBLOCK` on or off.
    ///
    /// The corresponding C function is `fcntl` (`F_GETFL`, `F_SETFL`).
    public func setNonBlocking(_ nonBlocking: Bool) throws(Errno) {
        let socket = descriptor.rawValue
        let flags = try valueOrErrno(retryOnInterrupt: false) { mrl_fcntl_noarg(socket, F_GETFL) }.get()
        let wanted = nonBlocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        if wanted == flags { return }
        try nothingOrErrno(retryOnInterrupt: false) { mrl_fcntl_int(socket, F_SETFL, wanted) }.get()
    }

    /// Closes the socket; later calls do nothing. Closing a listener does not remove its file.
    ///
    /// The corresponding C function is `close`.
    public func close() throws(Errno) {
        guard let fd else { return }
        self.fd = nil
        // Not retried on EINTR: Linux releases the descriptor even when close reports EINTR.
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.close(fd.rawValue) }.get()
    }

    // MARK: Helpers

    private static func open() throws(Errno) -> UnixSocket {
        let raw = try valueOrErrno(retryOnInterrupt: false) {
            socket(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue | SOCK_CLOEXEC.rawValue), 0)
        }.get()
        return UnixSocket(owning: FileDescriptor(rawValue: raw))
    }

    private static func address(_ path: String) throws(Errno) -> sockaddr_un {
        let utf8 = Array(path.utf8)
        guard !utf8.isEmpty, !utf8.contains(0) else { throw Errno.invalidArgument }
        guard utf8.count <= maxPathLength else { throw Errno.fileNameTooLong }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            path.copyBytes(from: utf8)
        }
        return address
    }

    private static func withSockaddr<R>(
        _ address: inout sockaddr_un, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R
    ) -> R {
        withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    /// Unlinks `path` when it is a socket nobody listens on; leaves anything else alone.
    private static func removeStaleSocket(_ path: String) throws(Errno) {
        var info = stat()
        switch nothingOrErrno(retryOnInterrupt: false, { lstat(path, &info) }) {
        case .failure(.noSuchFileOrDirectory): return
        case .failure(let error): throw error
        case .success: break
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else { return }
        do throws(Errno) {
            let probe = try connect(path: path)
            try? probe.close()
            throw Errno.addressInUse
        } catch .connectionRefused {
            // A socket file with no listener behind it: left by a process that is gone.
            try nothingOrErrno(retryOnInterrupt: false) { unlink(path) }.get()
        }
    }
}
