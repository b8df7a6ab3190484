import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Process and kernel settings that decide what the daemon can do: how much it may pin,
/// whether leases work and how long a breaker waits.
public enum SystemFacts {
    /// `CAP_IPC_LOCK` (linux/capability.h): pin beyond RLIMIT_MEMLOCK.
    public static let capIPCLock: Int32 = 14
    /// `CAP_LEASE` (linux/capability.h): take leases on files we do not own.
    public static let capLease: Int32 = 28

    /// RLIMIT_MEMLOCK in bytes, which bounds pinned MRs without CAP_IPC_LOCK; nil is
    /// RLIM_INFINITY.
    ///
    /// The corresponding C function is `getrlimit`.
    public static func memlockLimit() throws(Errno) -> (soft: UInt64?, hard: UInt64?) {
        var limit = rlimit()
        try nothingOrErrno(retryOnInterrupt: false) { mrl_getrlimit_memlock(&limit) }.get()
        return (finite(limit.rlim_cur), finite(limit.rlim_max))
    }

    /// RLIMIT_NOFILE: how many fds this process may have (soft) and may raise that to (hard);
    /// nil is RLIM_INFINITY.
    ///
    /// The corresponding C function is `getrlimit`.
    public static func openFilesLimit() throws(Errno) -> (soft: UInt64?, hard: UInt64?) {
        var limit = rlimit()
        try nothingOrErrno(retryOnInterrupt: false) { mrl_getrlimit_nofile(&limit) }.get()
        return (finite(limit.rlim_cur), finite(limit.rlim_max))
    }

    /// Raises the soft RLIMIT_NOFILE to the hard one (which needs no privilege) and returns
    /// both as they were before.
    ///
    /// The corresponding C functions are `getrlimit` and `setrlimit`.
    public static func raiseOpenFilesLimit() throws(Errno) -> (soft: UInt64?, hard: UInt64?) {
        var limit = rlimit()
        try nothingOrErrno(retryOnInterrupt: false) { mrl_getrlimit_nofile(&limit) }.get()
        let before = (finite(limit.rlim_cur), finite(limit.rlim_max))
        guard limit.rlim_cur != limit.rlim_max else { return before }
        limit.rlim_cur = limit.rlim_max
        try nothingOrErrno(retryOnInterrupt: false) { mrl_setrlimit_nofile(&limit) }.get()
        return before
    }

    private static func finite(_ value: rlim_t) -> UInt64? {
        mrl_rlim_is_infinity(value) != 0 ? nil : UInt64(value)
    }

    /// `/proc/sys/fs/lease-break-time`, in seconds: how long a breaker waits for us before
    /// the kernel breaks the lease by force (45 on our machines).
    public static func leaseBreakTime() throws -> Int {
        let text = try readProcFile("/proc/sys/fs/lease-break-time")
        guard let seconds = Int(text.trimmingWhitespace) else { throw Errno.invalidArgument }
        return seconds
    }

    /// `/proc/sys/fs/leases-enable` is non-zero. When it is 0, F_SETLEASE fails with EINVAL.
    /// An unreadable file counts as enabled (the kernel default), so the lease call itself
    /// reports the truth.
    public static func leasesEnabled() -> Bool {
        guard let text = try? readProcFile("/proc/sys/fs/leases-enable") else { return true }
        return text.trimmingWhitespace != "0"
    }

    /// Whether capability number `cap` is in this process's effective set (`CapEff` in
    /// /proc/self/status); false when it cannot be read.
    public static func hasCapability(_ cap: Int32) -> Bool {
        guard cap >= 0, cap < 64,
              let status = try? readProcFile("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let mask = UInt64(line.dropFirst("CapEff:".count).trimmingWhitespace, radix: 16)
        else { return false }
        return mask & (1 << UInt64(cap)) != 0
    }

    /// The running kernel's release, as `uname -r` prints it.
    public static var kernelRelease: String {
        var name = utsname()
        guard uname(&name) == 0 else { return "" }
        return withUnsafeBytes(of: &name.release) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}

extension StringProtocol {
    var trimmingWhitespace: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
