import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeaseProtocol
import SystemPackage
import Verbs

/// The service: one epoll loop owns the listener, every client, the engine's signalfd and
/// inotify fd, SIGTERM/SIGINT and the timers. Nothing else mutates state, so nothing locks.
///
/// Create and run it on one thread: the engine aims lease-break signals at the creating thread.
public final class Daemon {
    public static let version = "mrleased 0.1"

    let configuration: DaemonConfiguration
    let logger: Logger
    let notifier: SystemdNotifier
    let epoll: Epoll
    let listener: UnixSocket
    let terminate: SignalFD
    /// nil on a host without an RDMA device: every registration is then refused, saying so.
    let engine: Engine?
    let deviceName: String?
    let odp: ODPCaps
    let noDeviceReason: String?
    var sessions: [Int32: ClientSession] = [:]
    var sessionsByOwner: [OwnerID: ClientSession] = [:]
    /// Regions and bytes each uid holds over all its connections, kept as regions come and
    /// go so a `register` checks the quotas without walking every region.
    var usage: [uid_t: Usage] = [:]
    /// The daemon's time per request, by type (`stats`' `requestMicros`).
    var requestTimes: [RequestType: LatencyHistogram] = [:]
    var nextOwner: UInt64 = 1
    var stopping = false
    /// Whether we bound the socket path ourselves (and so remove it on exit).
    let ownsSocketPath: Bool
    var nextWatchdog: UInt64?

    /// Sets everything up on the calling thread: blocks SIGTERM/SIGINT (read through a
    /// signalfd), opens the device, creates the engine, and binds or adopts the listener.
    public init(configuration: DaemonConfiguration, environment: [String: String], logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        notifier = SystemdNotifier(environment: environment)
        terminate = try SignalFD(signals: [SIGTERM, SIGINT])
        // A client that vanishes mid-send must not kill us: sends use MSG_NOSIGNAL, and this
        // covers anything that does not.
        signal(SIGPIPE, SIG_IGN)
        epoll = try Epoll()

        var registrar: VerbsRegistrar?
        var reason: String?
        do {
            registrar = try VerbsRegistrar(deviceNamed: configuration.device)
        } catch {
            reason = "no RDMA device: \(error). Registrations are refused until mrleased is restarted on a host with one"
        }
        noDeviceReason = reason
        deviceName = registrar?.deviceName
        odp = registrar?.odp ?? .none
        let timing = FileLifecycle.Timing(quiesce: configuration.quiesceMillis * 1_000_000,
                                          initialBackoff: configuration.restoreBackoffMillis * 1_000_000)
        var route: ((OwnerID, EngineEvent) -> Void)?
        engine = try registrar.map { registrar in
            try Engine(registrar: registrar, configuration: .init(timing: timing), logger: logger) { owner, event in
                route?(owner, event)
            }
        }

        if let activated = SocketActivation.listenDescriptors(environment: environment).first {
            listener = try UnixSocket(adopting: activated)
            ownsSocketPath = false
            logger.info("socket activation", metadata: ["fd": "\(activated.rawValue)"])
        } else {
            listener = try UnixSocket.listen(path: configuration.socketPath, mode: mode_t(configuration.socketMode))
            ownsSocketPath = true
        }
        try listener.setNonBlocking(true)
        route = { [unowned self] owner, event in self.deliver(event, to: owner) }

        try epoll.watch(listener.descriptor, for: .readable)
        try epoll.watch(terminate.descriptor, for: .readable)
        for fd in engine?.descriptors ?? [] { try epoll.watch(fd, for: .readable) }
        if let reason { logger.warning("\(reason)") }
    }

    /// Serves until SIGTERM/SIGINT (or `stop()`), then shuts down cleanly.
    public func run() throws {
        notifier.ready(status: statusLine())
        // An adopted listener's path is systemd's (the unit's ListenSequentialPacket=), not ours.
        let socket = ownsSocketPath ? configuration.socketPath : "fd \(listener.descriptor.rawValue) (socket activation)"
        logger.info("listening", metadata: ["socket": "\(socket)", "device": "\(deviceName ?? "none")"])
        nextWatchdog = notifier.watchdogInterval.map { Engine.now() + $0 }
        while !stopping {
            for ready in try epoll.wait(timeoutMilliseconds: waitMillis()) {
                handle(ready)
                if stopping { break }
            }
            if let due = engine?.nextDeadline, due <= Engine.now() { engine?.processTimers(now: Engine.now()) }
            if let due = nextWatchdog, Engine.now() >= due, let interval = notifier.watchdogInterval {
                notifier.watchdog()
                nextWatchdog = Engine.now() + interval
            }
        }
        shutDown()
    }

    /// Asks the loop to stop after the current event.
    public func stop() { stopping = true }

    func waitMillis() -> Int32 {
        let now = Engine.now()
        let deadlines = [engine?.nextDeadline, nextWatchdog].compactMap { $0 }
        guard let next = deadlines.min() else { return 1000 }
        return next <= now ? 0 : Int32(min((next - now + 999_999) / 1_000_000, 1000))
    }

    func handle(_ ready: Epoll.Ready) {
        if ready.fd == listener.descriptor.rawValue {
            acceptClients()
        } else if ready.fd == terminate.descriptor.rawValue {
            let signals = (try? terminate.read()) ?? []
            logger.info("stopping", metadata: ["signal": "\(signals.first?.signal ?? 0)"])
            stopping = true
        } else if let session = sessions[ready.fd] {
            if ready.events.contains(.writable), !session.flush() { return disconnect(session, why: "send failed") }
            // Back to readable-only once a write-blocked client has drained (and only then:
            // each epoll_ctl is a syscall on every request's path).
            if ready.events.contains(.writable), session.outbox.isEmpty { try? epoll.watch(session.descriptor, for: .readable) }
            if ready.events.contains(.readable) || ready.events.contains(.hangup) || ready.events.contains(.error) {
                readRequests(from: session)
            }
        } else {
            engine?.process(now: Engine.now())
        }
    }

    func acceptClients() {
        while let socket = try? listener.accept(nonBlocking: true) {
            guard let credentials = try? socket.peerCredentials() else {
                try? socket.close()
                continue
            }
            guard sessions.count < configuration.maxConnections else {
                let error = ProtocolError(.tooManyRequests, "mrleased serves at most \(configuration.maxConnections) connections; close one and retry")
                try? socket.send(Codec.encode(Reply(id: nil, type: nil, error: error)))
                try? socket.close()
                logger.warning("connection refused: limit", metadata: ["pid": "\(credentials.pid)", "uid": "\(credentials.uid)"])
                continue
            }
            let owner = OwnerID(nextOwner)
            nextOwner += 1
            let limit = configuration.maxBytesPerUID ?? memlockLimit(of: credentials.pid)
            let session = ClientSession(owner: owner, socket: socket, credentials: credentials, byteLimit: limit)
            do {
                try epoll.watch(socket.descriptor, for: .readable)
            } catch {
                try? socket.close()
                continue
            }
            sessions[socket.descriptor.rawValue] = session
            sessionsByOwner[owner] = session
            logger.debug("client connected", metadata: ["client": "\(owner)", "pid": "\(credentials.pid)", "uid": "\(credentials.uid)"])
        }
    }

    func readRequests(from session: ClientSession) {
        // A bounded batch per wakeup, so one busy client cannot starve the others.
        for _ in 0..<32 {
            let received: UnixSocket.Received
            do {
                received = try session.socket.receive(maxSize: Codec.maxMessageBytes + 1, maxFDs: 4)
            } catch {
                return disconnect(session, why: "receive failed: \(error.symbolicName)")
            }
            switch received {
            case .wouldBlock:
                return
            case .endOfStream:
                return disconnect(session, why: "closed")
            case .message(let message):
                let start = Engine.now()
                let reply = answer(message, from: session)
                for fd in message.fds { try? fd.close() }
                // A long list goes in pages that each fit one message (the client asks for the rest).
                let packet = if case .success(.list(let page)) = reply.outcome, let id = reply.id {
                    Codec.encodeList(id: id, regions: page.regions)
                } else {
                    Codec.encode(reply)
                }
                guard session.send(packet, limit: configuration.maxQueuedMessages) else {
                    return disconnect(session, why: "not reading its replies")
                }
                if let type = reply.type { requestTimes[type, default: LatencyHistogram()].record(nanoseconds: Engine.now() - start) }
                if !session.outbox.isEmpty { try? epoll.watch(session.descriptor, for: [.readable, .writable]) }
            }
        }
    }

    /// Sends an engine event to the region's owner.
    func deliver(_ event: EngineEvent, to owner: OwnerID) {
        guard let session = sessionsByOwner[owner], !session.closing else { return }
        let wire: Event
        switch event {
        case .revoking(let id, _, let deadline):
            let now = Engine.now()
            wire = .revoking(.init(region: id.rawValue, reason: .leaseBreak, deadlineMillis: deadline > now ? (deadline - now) / 1_000_000 : 0))
        case .revoked(let id):
            wire = .revoked(region: id.rawValue)
        case .restored(let id, let keys, let changed):
            wire = .restored(.init(region: id.rawValue, lkey: keys.lkey, rkey: keys.rkey, address: keys.address, layoutChanged: changed))
        case .lost(let id, let reason):
            drop(id, of: session)
            wire = .lost(.init(region: id.rawValue, reason: LossReason(rawValue: reason) ?? .restoreFailed, message: reason))
        }
        if !session.send(Codec.encode(wire), limit: configuration.maxQueuedMessages) {
            disconnect(session, why: "not reading its events")
        } else if !session.outbox.isEmpty {
            try? epoll.watch(session.descriptor, for: [.readable, .writable])
        }
    }

    /// Drops a client: every region it owned is deregistered, leases go with their last region.
    func disconnect(_ session: ClientSession, why: String) {
        guard !session.closing else { return }
        session.closing = true
        let regions = session.tags.count
        for id in Array(session.lengths.keys) { drop(id, of: session) }
        engine?.release(owner: session.owner)
        epoll.unwatch(session.descriptor)
        sessions[session.descriptor.rawValue] = nil
        sessionsByOwner[session.owner] = nil
        try? session.socket.close()
        logger.debug("client gone", metadata: ["client": "\(session.owner)", "why": "\(why)", "regions": "\(regions)"])
    }

    func shutDown() {
        notifier.stopping(status: "stopping: releasing \(engine?.statistics().regions ?? 0) regions")
        epoll.unwatch(listener.descriptor)
        try? listener.close()
        for session in Array(sessions.values) {
            // Tell each owner its regions go now: a shutdown does not wait for acks.
            for region in engine?.list(owner: session.owner) ?? [] {
                _ = session.send(Codec.encode(.revoking(.init(region: region.id.rawValue, reason: .shutdown, deadlineMillis: 0))), limit: .max)
                _ = session.send(Codec.encode(.revoked(region: region.id.rawValue)), limit: .max)
            }
            disconnect(session, why: "shutdown")
        }
        if ownsSocketPath { unlink(configuration.socketPath) }
        logger.info("stopped")
    }

    func statusLine() -> String {
        let stats = engine?.statistics()
        return "\(sessions.count) clients, \(stats?.regions ?? 0) regions, \(stats?.leasesHeld ?? 0) leases, device \(deviceName ?? "none")"
    }
}
