import Foundation
import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

@testable import MRLeaseDaemon

/// `Daemon` driven in the test's own thread with a recording registrar: its request logic,
/// routing and disconnects, turned one loop turn at a time, with its state open to the test.
/// It checks ordering and bookkeeping; it never stands for RDMA working (the VM tests do).
final class InProcessDaemon {
    let scratch: ScratchDirectory
    let registrar = RecordingRegistrar()
    let daemon: Daemon
    var engine: Engine { daemon.engine! }

    /// `peerVerbs`: the peer service on a recording rdma_cm (set `listen` in `configure`).
    init(extentReader: ExtentReader = .fiemap, peerVerbs: RecordingPeerVerbs? = nil,
         configure: (inout DaemonConfiguration) -> Void = { _ in }) throws {
        scratch = try ScratchDirectory(name: "mrleased-inprocess")
        var configuration = DaemonConfiguration()
        configuration.socketPath = scratch.path + "/s.sock"
        // The recording registrar offers ODP, and most of these tests are about revocation:
        // they get the lease protocol for every region; a test of `follow` asks for it.
        configuration.layoutPolicy = .revoke
        configure(&configuration)
        var logger = Logger(label: "mrleased.test")
        logger.logLevel = .warning
        daemon = try Daemon(configuration: configuration, environment: [:], logger: logger, registrar: registrar,
                            peerVerbs: peerVerbs, extentReader: extentReader)
    }

    /// The clients connected so far; each turn reads what arrived for those that read.
    var clients: [InProcessClient] = []

    deinit { daemon.shutDown() }

    /// Turns the loop (and lets reading clients collect their events) until `done` or
    /// `seconds` pass; false on timeout.
    @discardableResult
    func drive(seconds: Double = 10, until done: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try done() { return true }
            try? daemon.turn(maxWaitMillis: 5)
            for client in clients where client.reading { client.collect() }
        }
        return try done()
    }

    func connect() throws -> InProcessClient {
        let known = Set(daemon.sessions.keys)
        let socket = try UnixSocket.connect(path: daemon.configuration.socketPath)
        try socket.setNonBlocking(true)
        // The daemon accepts on its next turn: the new owner is this client's.
        drive(seconds: 5) { daemon.sessions.count > known.count }
        guard let owner = Set(daemon.sessions.keys).subtracting(known).first else {
            throw TestFailure("the daemon did not accept the connection")
        }
        let client = InProcessClient(socket: socket, owner: owner, daemon: self)
        clients.append(client)
        return client
    }
}

/// A client socket whose requests are answered by turning the in-process daemon.
final class InProcessClient {
    let socket: UnixSocket
    let owner: OwnerID
    unowned let daemon: InProcessDaemon
    var nextID: UInt64 = 1
    /// Events received so far, in order (replies are returned by `request`).
    var events: [Event] = []
    /// Replies read while collecting events, for `request` to find.
    var replies: [Reply] = []
    var closedByDaemon = false
    /// Why reading failed, if it did (the connection then counts as closed).
    var readFailure: Error?
    /// A client that stops reading leaves its packets in the socket.
    var reading = true

    init(socket: UnixSocket, owner: OwnerID, daemon: InProcessDaemon) {
        self.socket = socket
        self.owner = owner
        self.daemon = daemon
    }

    /// Reads what has arrived (events and replies are kept).
    func collect() {
        do { try pump() } catch {
            closedByDaemon = true
            readFailure = error
        }
    }

    /// Reads what has arrived: events go to `events`, replies to `replies`.
    func pump() throws {
        while !closedByDaemon {
            switch try socket.receive(maxSize: Codec.maxMessageBytes + 1) {
            case .wouldBlock: return
            case .endOfStream: closedByDaemon = true
            case .message(let message):
                switch try Codec.decodeServerMessage(message.bytes) {
                case .reply(let reply): replies.append(reply)
                case .event(let event): events.append(event)
                }
            }
        }
    }

    func request(_ request: Request, fd: FileDescriptor? = nil) throws -> ReplyResult {
        let id = nextID
        nextID += 1
        try socket.send(Codec.encode(request, id: id), fds: fd.map { [$0] } ?? [])
        var reply: Reply?
        try daemon.drive { () throws -> Bool in
            try pump()
            reply = replies.first { $0.id == id }
            return reply != nil || closedByDaemon
        }
        replies.removeAll { $0.id == id }
        guard let reply else {
            throw TestFailure("no reply to \(request.type) (closed: \(closedByDaemon), \(readFailure.map { "\($0)" } ?? "no read error"))")
        }
        return try reply.outcome.get()
    }

    func register(_ fd: FileDescriptor, offset: UInt64, length: UInt64 = 4096) throws -> Registration {
        guard case .register(let registration) = try request(.register(.init(offset: offset, length: length, access: [.read, .write])), fd: fd) else {
            throw TestFailure("register answered with another type")
        }
        return registration
    }

    /// The daemon's session for this client, while connected.
    var session: ClientSession? { daemon.daemon.sessions[owner] }
}
