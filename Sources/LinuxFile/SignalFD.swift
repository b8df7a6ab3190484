import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One signal as signalfd reports it (the fields of `struct signalfd_siginfo` we use).
public struct SignalInfo: Sendable, Equatable {
    public var signal: Int32
    /// `ssi_fd`: the descriptor a lease break or SIGIO is about (0 for other signals).
    public var fd: Int32
    /// `ssi_pid`: the sender, for signals sent with kill/tgkill/sigqueue.
    public var pid: pid_t
    /// `ssi_code`: `SI_TKILL`, `SI_USER`, `POLL_*` for SIGIO-style signals, …
    public var code: Int32
    /// `ssi_band`: the poll event set for SIGIO-style signals.
    public var band: Int64

    public init(signal: Int32, fd: Int32, pid: pid_t, code: Int32, band: Int64) {
        self.signal = signal
        self.fd = fd
        self.pid = pid
        self.code = code
        self.band = band
    }
}

/// Owns a signalfd: signals become readable records on a descriptor an event loop can poll.
///
/// signalfd only sees a signal that is blocked in the thread that would receive it, so `init`
/// blocks them in the *calling* thread, and that thread must be the one signals are aimed at
/// (for leases: `FileLease.acquire(ownerThread:)`, which defaults to the calling thread).
///
/// `close()` leaves the signals blocked on purpose: unblocking could deliver a still-pending
/// real-time lease-break signal, whose default action terminates the process.
public final class SignalFD {
    private var fd: FileDescriptor?
    /// The signals this descriptor reports.
    public let signals: [Int32]

    /// Blocks `signals` in the calling thread and opens a nonblocking, close-on-exec signalfd
    /// for them.
    ///
    /// The corresponding C functions are `pthread_sigmask` and `signalfd`.
    public init(signals: [Int32]) throws(Errno) {
        self.signals = signals
        var mask = sigset_t()
        let count = CInt(signals.count)
        try nothingOrErrno(retryOnInterrupt: false) {
            signals.withUnsafeBufferPointer { mrl_block_signals($0.baseAddress, count, &mask) }
        }.get()
        let raw = try valueOrErrno(retryOnInterrupt: false) {
            signalfd(-1, &mask, CInt(SFD_NONBLOCK | SFD_CLOEXEC))
        }.get()
        fd = FileDescriptor(rawValue: raw)
    }

    deinit {
        if let fd { _ = Glibc.close(fd.rawValue) }
    }

    /// The signalfd, for an event loop to poll. Precondition: not closed.
    public var descriptor: FileDescriptor {
        guard let fd else { preconditionFailure("SignalFD used after close()") }
        return fd
    }

    /// All pending signals, oldest first; `[]` when none is pending.
    ///
    /// The corresponding C function is `read`.
    public func read() throws(Errno) -> [SignalInfo] {
        try _read().get()
    }

    /// Waits up to `timeout` for a signal, then reads all pending ones; `[]` on timeout.
    ///
    /// The corresponding C functions are `poll` and `read`.
    public func wait(timeout: Duration) throws(Errno) -> [SignalInfo] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let pending = try _read().get()
            if !pending.isEmpty { return pending }
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero { return [] }
            var pfd = pollfd(fd: descriptor.rawValue, events: Int16(POLLIN), revents: 0)
            let ms = CInt(clamping: Self.milliseconds(rounding: left))
            // EINTR just loops: the deadline, not the poll call, bounds the wait.
            switch valueOrErrno(retryOnInterrupt: false, { poll(&pfd, 1, ms) }) {
            case .success, .failure(.interrupted): continue
            case .failure(let error): throw error
            }
        }
    }

    /// Closes the descriptor; later calls do nothing. The signals stay blocked (see the type).
    ///
    /// The corresponding C function is `close`.
    public func close() throws(Errno) {
        guard let fd else { return }
        self.fd = nil
        // Not retried on EINTR: Linux releases the descriptor even when close reports EINTR.
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.close(fd.rawValue) }.get()
    }

    private func _read() -> Result<[SignalInfo], Errno> {
        let size = MemoryLayout<signalfd_siginfo>.stride
        var records = [signalfd_siginfo](repeating: signalfd_siginfo(), count: 16)
        var result: [SignalInfo] = []
        while true {
            let fd = descriptor.rawValue
            let read = records.withUnsafeMutableBytes { buffer in
                valueOrErrno(retryOnInterrupt: true) {
                    Glibc.read(fd, buffer.baseAddress, buffer.count)
                }
            }
            switch read {
            case .failure(.wouldBlock):
                return .success(result)
            case .failure(let error):
                return .failure(error)
            case .success(let bytes):
                for info in records.prefix(bytes / size) {
                    result.append(SignalInfo(
                        signal: Int32(info.ssi_signo), fd: info.ssi_fd, pid: pid_t(info.ssi_pid),
                        code: info.ssi_code, band: Int64(info.ssi_band)))
                }
                if bytes < records.count * size { return .success(result) }
            }
        }
    }

    private static func milliseconds(rounding duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let ms = seconds.multipliedReportingOverflow(by: 1000)
        if ms.overflow { return .max }
        // Round up so a sub-millisecond remainder still waits instead of spinning.
        return ms.partialValue + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    }
}
