import Glibc
import SystemPackage

/// The sd_notify protocol, implemented against its documentation (no libsystemd): one datagram
/// of `KEY=VALUE` lines to the AF_UNIX socket named by `$NOTIFY_SOCKET` ("@" = abstract name).
/// Without `$NOTIFY_SOCKET` (not started by systemd) every call does nothing.
public struct SystemdNotifier: Sendable {
    public let socketPath: String?
    /// `$WATCHDOG_USEC` when it applies to this process (`$WATCHDOG_PID` unset or ours).
    public let watchdogMicros: UInt64?

    public init(environment: [String: String]) {
        let path = environment["NOTIFY_SOCKET"]
        socketPath = (path?.isEmpty ?? true) ? nil : path
        let pidMatches = environment["WATCHDOG_PID"].map { Int32($0) == getpid() } ?? true
        watchdogMicros = pidMatches ? environment["WATCHDOG_USEC"].flatMap(UInt64.init).flatMap { $0 > 0 ? $0 : nil } : nil
    }

    /// Half the watchdog timeout, as sd_watchdog_enabled(3) advises, or nil without a watchdog.
    public var watchdogInterval: UInt64? { watchdogMicros.map { $0 * 1000 / 2 } }

    public func ready(status: String) { send("READY=1\nSTATUS=\(status)\nMAINPID=\(getpid())") }
    public func status(_ text: String) { send("STATUS=\(text)") }
    public func stopping(status: String) { send("STOPPING=1\nSTATUS=\(status)") }
    public func watchdog() { send("WATCHDOG=1") }

    /// Sends one notification datagram. Failures are ignored, as sd_notify's callers do: the
    /// service must not die because its supervisor is not listening.
    ///
    /// The corresponding C function is `sendto`.
    @discardableResult
    public func send(_ message: String) -> Bool {
        guard let socketPath else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketPath.utf8)
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in pathBytes.enumerated() { raw[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + (pathBytes.first == 0 ? 0 : 1))
        let bytes = Array(message.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL), sockaddrPointer, length)
            }
        }
        return sent == bytes.count
    }
}

/// systemd socket activation (sd_listen_fds(3)): the fds passed from 3 on, when `$LISTEN_PID`
/// names this process.
public enum SocketActivation {
    public static let firstDescriptor: Int32 = 3

    public static func listenDescriptors(environment: [String: String]) -> [FileDescriptor] {
        guard let pid = environment["LISTEN_PID"].flatMap(Int32.init), pid == getpid(),
              let count = environment["LISTEN_FDS"].flatMap(Int32.init), count > 0 else { return [] }
        return (0..<count).map { index in
            let fd = firstDescriptor + index
            // Inherited fds must not leak into anything we might exec.
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            return FileDescriptor(rawValue: fd)
        }
    }
}
