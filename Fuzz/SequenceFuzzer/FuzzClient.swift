import FuzzSupport
import LinuxFile
import MRLeaseProtocol
import SystemPackage

@testable import MRLeaseDaemon

/// One client of the in-process daemon: our end of a socketpair the daemon admitted, and what
/// the client heard (the regions it was told are `revoking`, to ack).
final class FuzzClient {
    let session: ClientSession
    let socket: UnixSocket
    var nextID: UInt64 = 1
    var revoking: Set<UInt64> = []
    /// The files `revoking-file` events named, to ack by file.
    var revokingFiles: Set<String> = []

    init(session: ClientSession, socket: UnixSocket) {
        self.session = session
        self.socket = socket
    }

    /// A new client: the daemon's end admitted as a session, the other end ours; nil when the
    /// daemon refused it (its refusal is read and checked).
    static func connect(to daemon: Daemon) -> FuzzClient? {
        let known = Set(daemon.sessions.keys)
        let ours: UnixSocket, theirs: UnixSocket
        do {
            (ours, theirs) = try UnixSocket.pair()
            try theirs.setNonBlocking(true)
            try ours.setNonBlocking(true)
        } catch {
            fatalError("socketpair: \(error)")
        }
        _ = daemon.admit(theirs)
        guard let owner = Set(daemon.sessions.keys).subtracting(known).first, let session = daemon.sessions[owner] else {
            if case .message(let refusal)? = try? ours.receive(maxSize: Codec.maxMessageBytes + 1) {
                checkServerPacket(refusal.bytes, "refusal")
            }
            _ = try? ours.close()  // ours alone; nothing depends on it
            return nil
        }
        return FuzzClient(session: session, socket: ours)
    }

    /// Sends a request; false when the daemon's end is gone.
    func send(_ packet: [UInt8], fds: [FileDescriptor] = []) -> Bool {
        if tracing { trace("  -> client \(session.owner) (\(fds.count) fds): \(String(decoding: packet, as: UTF8.self))") }
        do { try socket.send(packet, fds: fds) } catch { return false }
        return true
    }

    /// Every packet the daemon has sent, each checked to fit and decode; nil once the daemon
    /// closed the connection.
    func receiveAll() -> [ServerMessage]? {
        var messages: [ServerMessage] = []
        while true {
            switch try? socket.receive(maxSize: Codec.maxMessageBytes + 1) {
            case .message(let message)?:
                precondition(!message.truncated, "a packet longer than maxMessageBytes")
                let decoded = checkedServerMessage(message.bytes, "packet")
                if tracing { trace("  <- client \(session.owner): \(String(decoding: message.bytes.prefix(300), as: UTF8.self))") }
                if case .event(let event) = decoded { note(event) }
                messages.append(decoded)
            case .endOfStream?: return nil
            default: return messages
            }
        }
    }

    private func note(_ event: Event) {
        switch event {
        case .revoking(let revoking): self.revoking.insert(revoking.region)
        case .revokingFile(let revoking):
            self.revoking.formUnion(revoking.regions)
            revokingFiles.insert(revoking.file)
        case .revoked, .restored, .lost: if let region = event.region { self.revoking.remove(region) }
        case .unlinked, .peerConnected, .peerDisconnected, .layout: break
        }
    }

    func close() { _ = try? socket.close() }  // ours; the daemon sees the end of stream
}
