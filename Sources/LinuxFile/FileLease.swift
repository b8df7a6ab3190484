import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The kind of lease: a read lease (`F_RDLCK`) is broken by an open for write or a truncate; a
/// write lease (`F_WRLCK`) by any other open and by truncate.
public enum LeaseType: Sendable, Equatable {
    case read
    case write

    var rawValue: CInt { self == .read ? MRL_F_RDLCK : MRL_F_WRLCK }
}

/// A lease on one open file descriptor. It does not own the descriptor: closing the fd drops
/// the lease, and the caller owns the fd.
///
/// When another process opens or truncates the file, the kernel starts a *lease break*: it
/// sends `FileLease.breakSignal` to the owner thread and blocks the breaker until we release
/// (or downgrade), or until `/proc/sys/fs/lease-break-time` (45 s here) runs out and it breaks
/// the lease by force.
///
/// Signal delivery, and why it is set up this way:
/// - The signal is a real-time one (`F_SETSIG`), so it is queued per break rather than merged,
///   and its siginfo names the leased descriptor in `si_fd`.
/// - It is aimed at one thread (`F_SETOWN_EX` with `F_OWNER_TID`): the thread that has the
///   signal blocked and reads it from a `SignalFD`. signalfd only receives a signal that is
///   blocked in the receiving thread; a real-time signal delivered to another thread that does
///   not block it takes its default action, which terminates the process.
/// - If the kernel cannot queue the real-time signal (the owner is at `RLIMIT_SIGPENDING`),
///   it sends plain `SIGIO` instead, without `si_fd`. A `SignalFD` for leases should therefore
///   include `SIGIO` and treat it as "re-check every lease with `current()`".
public struct FileLease {
    public let fd: FileDescriptor

    public init(fd: FileDescriptor) {
        self.fd = fd
    }

    /// `SIGRTMIN + 1`. Real-time because real-time signals are queued (one per break, none
    /// lost to merging) and carry `si_fd`; `SIGRTMIN` itself is left to libraries that claim it.
    public static var breakSignal: Int32 { mrl_sigrtmin() + 1 }

    /// Takes a lease of `type`, with its break signal directed at `ownerThread`.
    ///
    /// Fails with `EAGAIN` when the file is open elsewhere in a conflicting way: for a write
    /// lease, any other open of the file; for a read lease, any writable open, our own
    /// included (KERNEL-FACTS). Callers report that as "file busy".
    ///
    /// `ownerThread` must block `signal` (and `SIGIO`) — see the type's documentation.
    ///
    /// The corresponding C function is `fcntl` (`F_SETSIG`, `F_SETOWN_EX`, `F_SETLEASE`).
    public func acquire(
        _ type: LeaseType,
        signal: Int32 = FileLease.breakSignal,
        ownerThread: pid_t = mrl_gettid()
    ) throws(Errno) {
        try _acquire(type, signal: signal, ownerThread: ownerThread).get()
    }

    /// Releases the lease, which lets a blocked breaker proceed at once.
    ///
    /// The corresponding C function is `fcntl` (`F_SETLEASE`, `F_UNLCK`).
    public func release() throws(Errno) {
        try _setLease(MRL_F_UNLCK).get()
    }

    /// The lease held on `fd`, or nil when none. While a break is in progress the kernel
    /// reports the *target* type: `.read` when a reader asked us to downgrade, nil when the
    /// breaker needs the lease gone.
    ///
    /// The corresponding C function is `fcntl` (`F_GETLEASE`).
    public func current() throws(Errno) -> LeaseType? {
        let raw = try valueOrErrno(retryOnInterrupt: true) {
            mrl_fcntl_noarg(fd.rawValue, MRL_F_GETLEASE)
        }.get()
        switch raw {
        case MRL_F_RDLCK: return .read
        case MRL_F_WRLCK: return .write
        default: return nil
        }
    }

    /// Who holds the lease on this fd's open file description, as `/proc/self/fdinfo/<fd>`
    /// lists it, or nil when it has none. A lease belongs to the open file description, not to
    /// a process: it outlives the process that took it (`holder.pid`) as long as any process
    /// still holds the description, and any fd of it can release it (`release()`).
    ///
    /// The corresponding C function is `read` of `/proc/self/fdinfo/<fd>`.
    public func holder() throws(Errno) -> LeaseHolder? {
        LeaseHolder(fdinfo: try readProcFile("/proc/self/fdinfo/\(fd.rawValue)"))
    }

    func _acquire(_ type: LeaseType, signal: Int32, ownerThread: pid_t) -> Result<Void, Errno> {
        // Signal and owner first: a break can start the moment the lease exists.
        nothingOrErrno(retryOnInterrupt: true) {
            mrl_fcntl_int(fd.rawValue, MRL_F_SETSIG, signal)
        }.flatMap {
            nothingOrErrno(retryOnInterrupt: true) { mrl_set_owner_tid(fd.rawValue, ownerThread) }
        }.flatMap {
            _setLease(type.rawValue)
        }
    }

    func _setLease(_ raw: CInt) -> Result<Void, Errno> {
        nothingOrErrno(retryOnInterrupt: true) {
            mrl_fcntl_int(fd.rawValue, MRL_F_SETLEASE, raw)
        }
    }
}

/// The lease on an open file description as the kernel lists it in fdinfo (and `/proc/locks`):
/// `lock:\t1: LEASE  ACTIVE    WRITE 3033 fe:00:16278385 0 EOF`.
public struct LeaseHolder: Sendable, Equatable {
    /// The process that took the lease, as this pid namespace sees it: 0 when the kernel cannot
    /// name it here (it lives in another pid namespace, or — seen from a child namespace — has
    /// exited). Seen from the initial namespace the number stays after the process exits.
    public var pid: pid_t
    /// `ACTIVE`, or `BREAKING` while a break is in progress.
    public var state: String

    public init(pid: pid_t, state: String) {
        self.pid = pid
        self.state = state
    }

    /// The first `LEASE` line of an fdinfo text, or nil when there is none.
    public init?(fdinfo: String) {
        for line in fdinfo.split(separator: "\n") where line.hasPrefix("lock:") {
            // "lock:", "1:", "LEASE", state, type, pid, dev:ino, start, end
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 6, fields[2] == "LEASE", let pid = pid_t(fields[5]) else { continue }
            self.init(pid: pid, state: String(fields[3]))
            return
        }
        return nil
    }
}
