import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

/// The service: one epoll loop owns the listener, every client, the engine's signalfd and
/// inotify fd, SIGTERM/SIGINT and the timers. Nothing else mutates state, so nothing locks.
///
/// Who calls whom: the loop asks `sources` what a ready fd is and calls its handler; a handler
/// calls the engine, which returns the events it produced; the loop `route`s them to sessions
/// after the engine call has returned (a session that cannot take them is disconnected, which
/// releases its regions: another engine call, never a nested one).
///
/// Create and run it on one thread: the engine aims lease-break signals at the creating thread.
public final class Daemon {
    public static let version = "mrleased 0.1"

    /// What a watched fd is: each one the loop waits on has exactly one.
    enum Source {
        case listener
        case terminate
        case session(ClientSession)
        /// The engine's signalfd (lease breaks).
        case leaseSignals
        /// The engine's inotify fd (closes of released files).
        case fileCloses
    }

    /// The daemon's own timers; the engine keeps its files' timers itself (`nextDeadline`).
    enum Timer: Hashable, Sendable {
        case watchdog
        /// Accepting was paused after EMFILE/ENFILE (see `acceptClients`).
        case acceptResume
    }

    /// How long accepting pauses when the process or system is out of fds (swift-nio's
    /// AcceptBackoffHandler waits one second too): long enough not to spin, short enough that a
    /// freed fd is used soon.
    static let acceptBackoffNanos: UInt64 = 1_000_000_000

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
    /// What each watched fd is; a session's socket maps to its session.
    var sources: [Int32: Source] = [:]
    /// The connected clients, by the owner id their regions carry in the engine.
    var sessions: [OwnerID: ClientSession] = [:]
    /// The daemon's time per request, by type (`stats`' `requestMicros`).
    var requestTimes: [RequestType: LatencyHistogram] = [:]
    var nextOwner: UInt64 = 1
    var stopping = false
    /// Whether we bound the socket path ourselves (and so remove it on exit).
    let ownsSocketPath: Bool
    var timers = DeadlineHeap<Timer>()
    var nextWatchdog: UInt64?
    /// Set while accepting is paused: when it resumes.
    var acceptResumesAt: UInt64?
    /// Engine events waiting to be delivered, and whether a `route` is delivering them.
    var pendingNotices: [EngineNotice] = []
    var routing = false

    /// Sets everything up on the calling thread: blocks SIGTERM/SIGINT (read through a
    /// signalfd), opens the device, creates the engine, and binds or adopts the listener.
    /// `registrar`: the verbs side to use instead of opening the configured device (tests drive
    /// the daemon in-process with a stand-in, which checks ordering, never that RDMA works);
    /// `extentReader`: how the engine reads extents (tests make it fail).
    public init(configuration: DaemonConfiguration, environment: [String: String], logger: Logger,
                registrar injected: (any Registrar)? = nil, extentReader: ExtentReader = .fiemap) throws {
        self.configuration = configuration
        self.logger = logger
        notifier = SystemdNotifier(environment: environment)
        terminate = try SignalFD(signals: [SIGTERM, SIGINT])
        // A client that vanishes mid-send must not kill us: sends use MSG_NOSIGNAL, and this
        // covers anything that does not.
        signal(SIGPIPE, SIG_IGN)
        epoll = try Epoll()

        var registrar: (any Registrar)? = injected
        var reason: String?
        if registrar == nil {
            do {
                registrar = try VerbsRegistrar(deviceNamed: configuration.device, logger: logger)
            } catch {
                reason = "no RDMA device: \(error). Registrations are refused until mrleased is restarted on a host with one"
            }
        }
        noDeviceReason = reason
        deviceName = registrar?.deviceName
        odp = registrar?.odp ?? .none
        let timing = FileLifecycle.Timing(quiesce: configuration.quiesceMillis * 1_000_000,
                                          initialBackoff: configuration.restoreBackoffMillis * 1_000_000)
        engine = try registrar.map { registrar in
            try Engine(registrar: registrar, configuration: .init(timing: timing, extentReader: extentReader), logger: logger)
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

        try watch(listener.descriptor, as: .listener)
        try watch(terminate.descriptor, as: .terminate)
        if let engine {
            try watch(engine.descriptors[0], as: .leaseSignals)
            try watch(engine.descriptors[1], as: .fileCloses)
        }
        if let reason { logger.warning("\(reason)") }
    }

    func watch(_ fd: FileDescriptor, as source: Source) throws(Errno) {
        try epoll.watch(fd, for: .readable)
        sources[fd.rawValue] = source
    }

    func unwatch(_ fd: FileDescriptor) {
        epoll.unwatch(fd)
        sources[fd.rawValue] = nil
    }

    /// Serves until SIGTERM/SIGINT (or `stop()`), then shuts down cleanly.
    public func run() throws {
        notifier.ready(status: statusLine())
        // An adopted listener's path is systemd's (the unit's ListenSequentialPacket=), not ours.
        let socket = ownsSocketPath ? configuration.socketPath : "fd \(listener.descriptor.rawValue) (socket activation)"
        logger.info("listening", metadata: ["socket": "\(socket)", "device": "\(deviceName ?? "none")"])
        if let interval = notifier.watchdogInterval { scheduleWatchdog(Engine.now() + interval) }
        while !stopping { try turn() }
        shutDown()
    }

    /// One turn of the loop: waits for a ready fd or the next timer (at most `maxWaitMillis`),
    /// then handles both. `run` turns it until stopped; in-process tests turn it themselves.
    func turn(maxWaitMillis: Int32 = 1000) throws {
        for ready in try epoll.wait(timeoutMilliseconds: waitMillis(cap: maxWaitMillis)) {
            handle(ready)
            if stopping { return }
        }
        fireTimers(now: Engine.now())
    }

    /// Asks the loop to stop after the current event.
    public func stop() { stopping = true }

    func waitMillis(cap: Int32) -> Int32 {
        let now = Engine.now()
        guard let next = [engine?.nextDeadline, timers.earliest].compactMap({ $0 }).min() else { return cap }
        return next <= now ? 0 : Int32(min((next - now + 999_999) / 1_000_000, UInt64(cap)))
    }

    func fireTimers(now: UInt64) {
        if let engine, let due = engine.nextDeadline, due <= now { route(engine.processTimers(now: now)) }
        for (deadline, timer) in timers.popDue(now: now) {
            switch timer {
            case .watchdog where deadline == nextWatchdog:
                notifier.watchdog()
                if let interval = notifier.watchdogInterval { scheduleWatchdog(now + interval) }
            case .acceptResume where deadline == acceptResumesAt:
                acceptResumesAt = nil
                do {
                    try watch(listener.descriptor, as: .listener)
                    logger.info("accepting again")
                    acceptClients()
                } catch {
                    logger.error("epoll_ctl on the listener failed: accepting stays paused", metadata: ["errno": "\(error.symbolicName)"])
                    pauseAccepting(now: now)
                }
            default:
                break  // a timer that was replaced
            }
        }
    }

    func scheduleWatchdog(_ at: UInt64) {
        nextWatchdog = at
        timers.schedule(.watchdog, at: at)
    }

    func handle(_ ready: Epoll.Ready) {
        guard let source = sources[ready.fd] else {
            // epoll reports only fds we watch; one without a source was unwatched by an earlier
            // handler of this same batch (a session disconnected meanwhile).
            return
        }
        switch source {
        case .listener:
            acceptClients()
        case .terminate:
            let signals: [SignalInfo]
            do { signals = try terminate.read() } catch {
                logger.error("signalfd read failed; stopping anyway", metadata: ["errno": "\(error.symbolicName)"])
                signals = []
            }
            logger.info("stopping", metadata: ["signal": "\(signals.first?.signal ?? 0)"])
            stopping = true
        case .session(let session):
            if ready.events.contains(.writable) {
                guard session.flush() else { return disconnect(session, why: "send failed") }
                // Back to readable-only once a write-blocked client has drained (and only then:
                // each epoll_ctl is a syscall on every request's path).
                if session.outbox.isEmpty { setInterest(of: session, writable: false) }
            }
            if !session.closing, !ready.events.isDisjoint(with: [.readable, .hangup, .error]) {
                readRequests(from: session)
            }
        case .leaseSignals:
            if let engine { route(engine.processSignals()) }
        case .fileCloses:
            if let engine { route(engine.processCloses()) }
        }
    }

    /// Accepts until the backlog is empty. Out of fds (EMFILE/ENFILE) or kernel memory, it
    /// stops watching the listener for `acceptBackoffNanos`: the listener is level-triggered,
    /// so going on would spin a CPU while the condition lasts.
    func acceptClients() {
        while true {
            let accepted: UnixSocket?
            do {
                accepted = try listener.accept(nonBlocking: true)
            } catch {
                switch error {
                case .connectionAbort:
                    continue  // the client gave up while queued
                case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
                    logger.warning("accept failed: out of resources; pausing accepts for 1 s",
                                   metadata: ["op": "accept4", "errno": "\(error.symbolicName)"])
                    return pauseAccepting(now: Engine.now())
                default:
                    logger.error("accept failed", metadata: ["op": "accept4", "errno": "\(error.symbolicName)"])
                    return
                }
            }
            guard let socket = accepted else { return }
            admit(socket)
        }
    }

    func pauseAccepting(now: UInt64) {
        unwatch(listener.descriptor)
        let resume = now + Self.acceptBackoffNanos
        acceptResumesAt = resume
        timers.schedule(.acceptResume, at: resume)
    }

    func admit(_ socket: UnixSocket) {
        let credentials: UnixSocket.Credentials
        do { credentials = try socket.peerCredentials() } catch {
            logger.warning("connection dropped: SO_PEERCRED failed", metadata: ["errno": "\(error.symbolicName)"])
            return close(socket)
        }
        guard sessions.count < configuration.maxConnections else {
            let error = ProtocolError(.tooManyRequests, "mrleased serves at most \(configuration.maxConnections) connections; close one and retry")
            do { try socket.send(Codec.encode(Reply(id: nil, type: nil, error: error))) } catch {
                logger.debug("refusal not sent", metadata: ["errno": "\(error.symbolicName)"])
            }
            close(socket)
            logger.warning("connection refused: limit", metadata: ["pid": "\(credentials.pid)", "uid": "\(credentials.uid)"])
            return
        }
        let owner = OwnerID(nextOwner)
        nextOwner += 1
        let limit = configuration.maxBytesPerUID ?? memlockLimit(of: credentials.pid)
        let session = ClientSession(owner: owner, socket: socket, credentials: credentials, byteLimit: limit)
        do {
            try watch(socket.descriptor, as: .session(session))
        } catch {
            logger.error("connection dropped: epoll_ctl failed", metadata: ["errno": "\(error.symbolicName)"])
            return close(socket)
        }
        sessions[owner] = session
        logger.debug("client connected", metadata: ["client": "\(owner)", "pid": "\(credentials.pid)", "uid": "\(credentials.uid)"])
    }

    /// Closes a client socket; close(2) fails only with EBADF (a bug) or EINTR, and Linux
    /// releases the fd either way.
    func close(_ socket: UnixSocket) {
        do { try socket.close() } catch {
            logger.debug("close failed", metadata: ["errno": "\(error.symbolicName)"])
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
                // The engine keeps its own duplicate of a registered fd: the received ones are
                // ours to close, and close(2) releases them whatever it reports.
                for fd in message.fds { _ = try? fd.close() }
                // A long list goes in pages that each fit one message (the client asks for the rest).
                let packet = if case .success(.list(let page)) = reply.outcome, let id = reply.id {
                    Codec.encodeList(id: id, regions: page.regions)
                } else {
                    Codec.encode(reply)
                }
                guard send(packet, to: session, what: "replies") else { return }
                if let type = reply.type { requestTimes[type, default: LatencyHistogram()].record(nanoseconds: Engine.now() - start) }
            }
        }
    }

    /// Queues `packet` for `session`; false (and the session disconnected) when it is gone or
    /// not reading its `what`.
    func send(_ packet: [UInt8], to session: ClientSession, what: String) -> Bool {
        guard session.send(packet, limit: configuration.maxQueuedMessages) else {
            disconnect(session, why: "not reading its \(what)")
            return false
        }
        if !session.outbox.isEmpty { setInterest(of: session, writable: true) }
        return true
    }

    func setInterest(of session: ClientSession, writable: Bool) {
        do {
            try epoll.watch(session.descriptor, for: writable ? [.readable, .writable] : .readable)
        } catch {
            disconnect(session, why: "epoll_ctl failed: \(error.symbolicName)")
        }
    }

    /// Delivers engine events to their owners, in order. Events that delivering causes (a
    /// session disconnected for not reading releases its regions) join the queue behind them.
    func route(_ notices: [EngineNotice]) {
        pendingNotices += notices
        guard !routing else { return }
        routing = true
        defer { routing = false }
        var next = 0
        while next < pendingNotices.count {
            deliver(pendingNotices[next])
            next += 1
        }
        pendingNotices.removeAll(keepingCapacity: true)
    }

    /// Sends one engine event to the region's owner, if it is still connected.
    func deliver(_ notice: EngineNotice) {
        guard let session = sessions[notice.owner], !session.closing else { return }
        if case .lost(let id, _, _) = notice.event { session.tags[id] = nil }
        _ = send(Codec.encode(Event(notice.event, now: Engine.now())), to: session, what: "events")
    }

    /// Drops a client: every region it owned is deregistered, leases go with their last region.
    func disconnect(_ session: ClientSession, why: String) {
        guard !session.closing else { return }
        session.closing = true
        let regions = session.tags.count
        unwatch(session.descriptor)
        sessions[session.owner] = nil
        close(session.socket)
        if let engine { route(engine.release(owner: session.owner)) }
        logger.debug("client gone", metadata: ["client": "\(session.owner)", "why": "\(why)", "regions": "\(regions)"])
    }

    func shutDown() {
        notifier.stopping(status: "stopping: releasing \(engine?.statistics().regions ?? 0) regions")
        unwatch(listener.descriptor)
        close(listener)
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
