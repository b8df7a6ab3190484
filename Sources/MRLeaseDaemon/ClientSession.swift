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
    /// Whether the daemon may lease files this client does not own for it (root, or the
    /// operator's lease-others lists), decided at connect from its credentials.
    let mayLeaseOthers: Bool
    var clientName: String?
    /// Whether its revocations come as one `revoking-file` per file (`hello`'s `revokingPerFile`).
    var revokingPerFile = false
    var tags: [RegionID: String] = [:]
    private(set) var outbox: [[UInt8]] = []
    /// The bytes in `outbox`: the daemon bounds them per client and in total.
    private(set) var outboxBytes: UInt64 = 0
    /// Since when the client has been behind without reading (monotonic ns; nil: not behind),
    /// and its socket's unread bytes at the last sample (Daemon+FlowControl). Its reads show
    /// only there: the socket turns writable again once most of it is read, so a sent packet
    /// is no measure of a client that reads slowly.
    var stalledSince: UInt64?
    var lastUnread = 0
    /// Whether the daemon has stopped reading this client's requests until it drains
    /// (Daemon+FlowControl); watched for writability meanwhile.
    var isHeld = false
    /// Its `register`/`register-batch` waiting for a pin on the worker: its requests are not
    /// read until the reply is out.
    var registration: RegistrationInProgress?
    /// A quarter of the socket's send buffer: above this much unread, the kernel does not
    /// report the socket writable, and the daemon holds the client after a large reply.
    let writableMark: Int
    var closing = false

    init(owner: OwnerID, socket: UnixSocket, credentials: UnixSocket.Credentials, byteLimit: UInt64?, mayLeaseOthers: Bool) {
        self.owner = owner
        self.socket = socket
        self.credentials = credentials
        self.byteLimit = byteLimit
        self.mayLeaseOthers = mayLeaseOthers
        // The kernel's default (net.core.wmem_default, 212 992) when the size cannot be read.
        writableMark = ((try? socket.sendBufferBytes()) ?? 212_992) / 4
    }

    var descriptor: FileDescriptor { socket.descriptor }

    /// Who this client is to the registration plan's lease rule.
    var lessee: Lessee { Lessee(uid: credentials.uid, mayLeaseOthers: mayLeaseOthers) }

    /// Sends what is queued, then `packet`; queues what the socket will not take now.
    /// Returns false when the peer is gone. The caller bounds the queue (`outbox`,
    /// `outboxBytes`): a client that does not read must not make the daemon hold unbounded memory.
    func send(_ packet: [UInt8]) -> Bool {
        outbox.append(packet)
        outboxBytes += UInt64(packet.count)
        return flush()
    }

    /// Writes queued packets in order until the socket would block. False when the peer is gone.
    func flush() -> Bool {
        while let packet = outbox.first {
            do {
                try socket.send(packet)
                outbox.removeFirst()
                outboxBytes -= UInt64(packet.count)
            } catch .resourceTemporarilyUnavailable {
                return true
            } catch {
                return false
            }
        }
        return true
    }
}

/// What the daemon reads about a connecting process from /proc/PID at connect.
enum ProcessFacts {
    /// The process's RLIMIT_MEMLOCK soft limit, from /proc/PID/limits ("Max locked memory");
    /// nil when unlimited. Throws when the file cannot be read: the caller refuses the
    /// connection rather than let the client go without a byte quota.
    static func memlockLimit(of pid: pid_t) throws -> UInt64? {
        let text = try readProcFile("/proc/\(pid)/limits")
        for line in text.split(separator: "\n") where line.hasPrefix("Max locked memory") {
            let fields = line.dropFirst("Max locked memory".count).split(separator: " ")
            return fields.first.flatMap { UInt64($0) }
        }
        return nil
    }

    /// The process's supplementary groups (`Groups:` of /proc/PID/status). SO_PEERCRED gives
    /// only the primary gid; the kernel checks group membership against both.
    static func groups(of pid: pid_t) throws -> Set<UInt32> {
        let text = try readProcFile("/proc/\(pid)/status")
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Groups:") }) else { return [] }
        return Set(line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) })
    }
}
