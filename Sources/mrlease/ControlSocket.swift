import Foundation
import LinuxFile
import MRLeaseClient
import SystemPackage

/// The control path of `mrlease register`: grants belong to the daemon connection that made the
/// region (docs/protocol.md §4), so `mrlease grant` and `mrlease revoke-grant`, which run in
/// processes of their own, ask the `mrlease register` process holding the region to send the
/// request on its connection. Each register process listens on a `SOCK_SEQPACKET` socket,
/// `register-PID.sock`, in a directory only its user can enter; it answers only peers of its
/// own uid (`SO_PEERCRED`) and only about its own regions and grants.
///
/// A request is one packet: the daemon's socket path, a newline, then the wire request
/// (`grant` or `revoke-grant`, as docs/protocol.md has it). The answer is the wire reply.
enum ControlSocket {
    /// `$XDG_RUNTIME_DIR/mrlease`, else `${TMPDIR:-/tmp}/mrlease-UID`: private to the user.
    static var directory: String {
        let environment = ProcessInfo.processInfo.environment
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/mrlease" }
        let temporary = environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        return temporary + "/mrlease-\(getuid())"
    }

    /// Creates the directory 0700, or checks that the one there is a directory of this user
    /// that nobody else may enter (a name in a shared /tmp could be anyone's).
    static func privateDirectory() throws -> String {
        let path = directory
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw ControlError("mkdir \(path): \(Errno(rawValue: errno))")
        }
        var status = stat()
        guard lstat(path, &status) == 0 else { throw ControlError("lstat \(path): \(Errno(rawValue: errno))") }
        guard status.st_mode & S_IFMT == S_IFDIR, status.st_uid == getuid(), status.st_mode & 0o077 == 0 else {
            throw ControlError("\(path) is not a directory of uid \(getuid()) with mode 0700")
        }
        return path
    }

    /// The sockets of this user's running `mrlease register` processes.
    static func holders() -> [String] {
        let path = directory
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []  // none: no holder
        return names.filter { $0.hasPrefix("register-") && $0.hasSuffix(".sock") }.sorted().map { path + "/" + $0 }
    }

    /// Sends `request` for the daemon at `daemonSocket` to every holder in turn; the first
    /// answer that is not `unknown-region`/`unknown-grant` (not its region, not its grant) wins.
    /// Nil: no holder knew it.
    static func ask(_ request: Request, daemonSocket: String) -> Reply? {
        let packet = Array((daemonSocket + "\n").utf8) + Codec.encode(request, id: 1)
        for path in holders() {
            // A holder that exited without removing its socket refuses the connect: skip it.
            guard let socket = try? UnixSocket.connect(path: path) else { continue }
            defer { try? socket.close() }  // nothing was held on it
            // A holder that does not answer within 30 s, or answers nonsense, is passed over.
            guard (try? socket.send(packet)) != nil, case .message(let message)? = try? receive(socket, seconds: 30),
                  case .reply(let reply)? = try? Codec.decodeServerMessage(message.bytes) else { continue }
            if case .failure(let error) = reply.outcome, error.code == .unknownRegion || error.code == .unknownGrant { continue }
            return reply
        }
        return nil
    }

    /// One packet from `socket` within `seconds`, or nil.
    static func receive(_ socket: UnixSocket, seconds: Int32) throws(Errno) -> UnixSocket.Received? {
        var fds = [pollfd(fd: socket.descriptor.rawValue, events: Int16(POLLIN), revents: 0)]
        guard poll(&fds, 1, seconds * 1000) > 0 else { return nil }
        return try socket.receive(maxSize: Codec.maxMessageBytes + 1, maxFDs: 0)
    }
}

struct ControlError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The listening end, owned by one `mrlease register` process: the socket file goes with it.
final class ControlListener {
    let socket: UnixSocket
    let path: String

    init() throws {
        path = try ControlSocket.privateDirectory() + "/register-\(getpid()).sock"
        unlink(path)  // a previous process with this pid is gone: its name is stale
        do { socket = try UnixSocket.listen(path: path, backlog: 8, mode: 0o600) } catch {
            throw ControlError("listen \(path): \(error)")
        }
    }

    deinit {
        unlink(path)
        try? socket.close()  // exiting: nothing to do about a failed close
    }

    var descriptor: FileDescriptor { socket.descriptor }

    /// Answers one pending control request about `regions`/`grants` through `client`; returns
    /// what happened, for the holder's own output (never the descriptor: it is a credential).
    func serveOne(client: MRLeaseClient, regions: Set<UInt64>, grants: inout Set<UInt64>) -> String? {
        guard let connection = try? socket.accept() else { return nil }  // the asker gave up
        defer { try? connection.close() }  // answered or not, this connection is done
        // Another uid, or no well-formed request within 5 s: no answer (the asker moves on).
        guard let peer = try? connection.peerCredentials(), peer.uid == getuid(),
              case .message(let message)? = try? ControlSocket.receive(connection, seconds: 5),
              let newline = message.bytes.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let daemonSocket = String(decoding: message.bytes[..<newline], as: UTF8.self)
        let reply: Reply
        var line: String?
        do {
            let (id, request) = try Codec.decodeRequest(Array(message.bytes[(newline + 1)...]))
            (reply, line) = answer(request, id: id, daemonSocket: daemonSocket, client: client, regions: regions, grants: &grants)
        } catch {
            reply = Reply(id: nil, type: nil, error: error)
        }
        try? connection.send(Codec.encode(reply))  // the asker went away: nothing to tell it
        return line.map { "\($0) (asked by pid \(peer.pid))" }
    }

    func answer(_ request: Request, id: UInt64, daemonSocket: String, client: MRLeaseClient, regions: Set<UInt64>,
                grants: inout Set<UInt64>) -> (Reply, String?) {
        let type = request.type
        func refuse(_ code: ErrorCode, _ message: String) -> (Reply, String?) {
            (Reply(id: id, type: type, error: ProtocolError(code, message)), nil)
        }
        guard daemonSocket == client.socketPath else { return refuse(.unknownRegion, "this holder talks to \(client.socketPath)") }
        do {
            switch request {
            case .grant(let grant):
                guard regions.contains(grant.region) else { return refuse(.unknownRegion, "not this holder's region") }
                let made = try client.grant(region: grant.region, access: grant.access, expiresInMillis: grant.expiresInMillis,
                                            maxPeers: grant.maxPeers)
                grants.insert(made.grant)
                return (Reply(id: id, .grant(made)), "\(RegisterCommand.now()) granted \(made.grant) on region \(made.region)")
            case .revokeGrant(let grant):
                guard grants.contains(grant) else { return refuse(.unknownGrant, "not this holder's grant") }
                try client.revokeGrant(grant)
                grants.remove(grant)
                return (Reply(id: id, .revokeGrant), "\(RegisterCommand.now()) revoked grant \(grant)")
            default:
                return refuse(.badRequest, "the control path takes grant and revoke-grant")
            }
        } catch {
            let refusal = error.protocolError ?? ProtocolError(.internal, "\(error)")
            return (Reply(id: id, type: type, error: refusal), nil)
        }
    }
}
