import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Whether a process is still running, as `/proc/<pid>/stat` tells it. A process killed by
/// SIGKILL closes its fds (so its sockets' peers see end of stream) *before* it becomes a
/// zombie, and stays a zombie until its parent reaps it: neither "its socket closed" nor
/// `kill(pid, 0)` says it is gone. Its task flags do: `PF_EXITING` is set when it starts to
/// exit, before its fds close.
public enum ProcessState: Sendable, Equatable {
    /// Running (or sleeping, stopped): not exiting.
    case alive
    /// Exiting, a zombie, or no such process.
    case exited

    /// `PF_EXITING` (include/linux/sched.h).
    static let exitingFlag: UInt64 = 0x4

    /// The state of `pid` in this pid namespace.
    ///
    /// The corresponding C functions are `read` of `/proc/<pid>/stat` and, when that is
    /// missing, `kill(pid, 0)`.
    public static func of(pid: pid_t) throws(Errno) -> ProcessState {
        let text: String
        do throws(Errno) { text = try readProcFile("/proc/\(pid)/stat") } catch let failure {
            // ESRCH: it went while we read.
            if failure == .noSuchProcess { return .exited }
            guard failure == .noSuchFileOrDirectory else { throw failure }
            // No /proc entry: gone, or hidden from us (/proc mounted hidepid=2 hides other
            // users' processes). kill(pid, 0) tells them apart: ESRCH only when none exists;
            // a hidden one (EPERM, or 0) counts as alive, its state unknown.
            if kill(pid, 0) != 0 && Errno(rawValue: errno) == .noSuchProcess { return .exited }
            return .alive
        }
        guard let parsed = ProcessState(stat: text) else { throw .ioError }
        return parsed
    }

    /// Parses `pid (comm) state ppid pgrp session tty tpgid flags …`; `comm` may hold spaces
    /// and parentheses, so fields are counted after the last `)`.
    init?(stat: String) {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 6, let state = fields[0].first, let flags = UInt64(fields[6]) else { return nil }
        // Z: zombie, X: dead.
        self = state == "Z" || state == "X" || flags & Self.exitingFlag != 0 ? .exited : .alive
    }
}
