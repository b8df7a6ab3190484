import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage

/// One connected client: its socket, who it is (SO_PEERCRED), its regions' tags, and the
/// packets waiting for its socket to drain. Its regions live exactly as long as it does; the
/// engine owns them (and who holds what), the session only what the client named them.
final class ClientSession {
    let owner: OwnerID
    let socket: UnixSocket
    let credentials: UnixSocket.Credentials
    /// Bytes this uid may hold in regions, fixed at connect (see DaemonConfiguration).
    let byteLimit: UInt64?
    var clientName: String?
    var tags: [RegionID: String] = [:]
    var outbox: [[UInt8]] = []
    var closing = false

    init(owner: OwnerID, socket: UnixSocket, credentials: UnixSocket.Credentials, byteLimit: UInt64?) {
        self.owner = owner
        self.socket = socket
        self.credentials = credentials
        self.byteLimit = byteLimit
    }

    var descriptor: FileDescriptor { socket.descriptor }

    /// Sends what is queued, then `packet`; queues what the socket will not take now.
    /// Returns false when the peer is gone or the queue is over `limit` (a client that does
    /// not read must not make the daemon hold unbounded memory).
    func send(_ packet: [UInt8], limit: Int) -> Bool {
        outbox.append(packet)
        return flush() && outbox.count <= limit
    }

    /// Writes queued packets in order until the socket would block. False when the peer is gone.
    func flush() -> Bool {
        while let packet = outbox.first {
            do {
                try socket.send(packet)
                outbox.removeFirst()
            } catch .resourceTemporarilyUnavailable {
                return true
            } catch {
                return false
            }
        }
        return true
    }
}

/// The caller's RLIMIT_MEMLOCK soft limit, from /proc/PID/limits ("Max locked memory"); nil
/// when unlimited or unreadable.
func memlockLimit(of pid: pid_t) -> UInt64? {
    // A client gone before we read its limits is dropped at its first read; nil (no byte
    // quota of its own) until then is harmless.
    guard let text = try? readProcFile("/proc/\(pid)/limits") else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("Max locked memory") {
        let fields = line.dropFirst("Max locked memory".count).split(separator: " ")
        return fields.first.flatMap { UInt64($0) }
    }
    return nil
}
