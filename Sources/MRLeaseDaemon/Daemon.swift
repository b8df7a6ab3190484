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
    /// The release: what `mrleased --version` prints and Scripts/package versions the .deb by.
    public static let release = Release.version
    public static let version = "mrleased \(release)"

    /// What a watched fd is: each one the loop waits on has exactly one.
    enum Source {
        case listener
        case terminate
        case session(ClientSession)
        /// The engine's signalfd (lease breaks).
        case leaseSignals
        /// The engine's inotify fd (closes of released files).
        case fileCloses
        /// The rdma_cm event channel of the peer listener (connect requests, disconnects).
        case peers

        /// Served before any client request, in every turn and between clients' requests:
        /// a lease break waits for no client (docs/reliability.md, "Breaks first").
        var isUrgent: Bool {
            switch self {
            case .terminate, .leaseSignals, .fileCloses, .peers: true
            case .listener, .session: false
            }
        }
    }

    /// The daemon's own timers; the engine keeps its files' timers itself (`nextDeadline`).
    enum Timer: Hashable, Sendable {
        case watchdog
        /// Accepting was paused after EMFILE/ENFILE (see `acceptClients`).
        case acceptResume
        /// A grant's expiry: the ones due then end (a grant revoked before finds nothing).
        case grantExpiry
        /// A peer's handshake runs out of time (`peer-handshake-ms`).
        case peerHandshake
        /// A client's socket may have stayed full for `client-stall-ms`.
        case clientStall
        /// The next write of the metrics file (`metrics-file`).
        case metricsFile
    }

    /// How long accepting pauses when the process or system is out of fds (swift-nio's
    /// AcceptBackoffHandler waits one second too): long enough not to spin, short enough that a
    /// freed fd is used soon.
    static let acceptBackoffNanos: UInt64 = 1_000_000_000

    let configuration: DaemonConfiguration
    let logger: Logger
    let notifier: SystemdNotifier
    /// Clients and the listener, plus `urgent`'s own fd (readable when an urgent fd is).
    let epoll: Epoll
    /// The urgent sources (`Source.isUrgent`): polled at the start of every turn and, while
    /// clients are being served, again every `urgentPollNanos`.
    let urgent: Epoll
    let listener: UnixSocket
    let terminate: SignalFD
    /// nil on a host without an RDMA device: every registration is then refused, saying so.
    let engine: Engine?
    let deviceName: String?
    let odp: ODPCaps
    let noDeviceReason: String?
    /// What the start-up ODP integrity self-test found on the device; nil when the daemon did
    /// not open the device itself (an injected registrar) or has none.
    let odpIntegrity: ODPIntegrity?
    /// Remote access: the rdma_cm listener, grants and peers; nil unless `listen` is set and
    /// the device is open.
    let peers: PeerService?
    /// Why there is no listener although `listen` is set (no device, say).
    let noPeersReason: String?
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
    /// When the stall clocks are next looked at (one timer entry for all of them).
    var nextStallCheck: UInt64?
    /// The latest time timers were fired for (see `currentTime`).
    var latestTimerPass: UInt64 = 0
    /// Set while accepting is paused: when it resumes.
    var acceptResumesAt: UInt64?
    /// Connections accepted when no fd was left to set them up with (their /proc files):
    /// admitted first when accepting resumes, before the backlog.
    var awaitingAdmission: [UnixSocket] = []
    /// Engine events waiting to be delivered, and whether a `route` is delivering them.
    var pendingNotices: [EngineNotice] = []
    var routing = false
    /// Where the metrics are written for node_exporter (nil: `metrics-file` unset), and the
    /// last write's failure, logged once until it changes or clears.
    let metricsFile: MetricsFile?
    var metricsFailure: MetricsFile.Failure?

    /// Sets everything up on the calling thread: blocks SIGTERM/SIGINT (read through a
    /// signalfd), opens the device, creates the engine, and binds or adopts the listener.
    /// `registrar`: the verbs side to use instead of opening the configured device (tests drive
    /// the daemon in-process with a stand-in, which checks ordering, never that RDMA works);
    /// `peerVerbs`: rdma_cm and verbs for the peer service (with `listen` set) instead of the
    /// device's (fuzzers and tests play peers through a recording stand-in);
    /// `extentReader`: how the engine reads extents (tests make it fail).
    public init(configuration: DaemonConfiguration, environment: [String: String], logger: Logger,
                registrar injected: (any Registrar)? = nil, peerVerbs injectedPeerVerbs: (any PeerVerbs)? = nil,
                extentReader: ExtentReader = .fiemap) throws {
        self.configuration = configuration
        self.logger = logger
        notifier = SystemdNotifier(environment: environment)
        terminate = try SignalFD(signals: [SIGTERM, SIGINT])
        // A client that vanishes mid-send must not kill us: sends use MSG_NOSIGNAL, and this
        // covers anything that does not.
        signal(SIGPIPE, SIG_IGN)
        epoll = try Epoll()
        urgent = try Epoll()
        if let fd = urgent.readiness { try epoll.watch(fd, for: .readable) }

        var registrar: (any Registrar)? = injected
        var reason: String?
        var integrity: ODPIntegrity?
        var verbsContext: Context?
        if registrar == nil {
            do {
                // Told to listen but not which device: the listener's device (its PDs must be
                // the ones peers' QPs are made in).
                let device = try configuration.device ?? configuration.listen.first.map(PeerService.device(of:))
                let verbs = try VerbsRegistrar(deviceNamed: device, logger: logger)
                registrar = verbs
                verbsContext = verbs.context
                integrity = Self.checkODPIntegrity(on: verbs.context, logger: logger)
            } catch {
                reason = "no RDMA device: \(error). Registrations are refused until mrleased is restarted on a host with one"
            }
        }
        if configuration.listen.isEmpty {
            peers = nil
            noPeersReason = nil
        } else if let peerVerbs = try injectedPeerVerbs ?? verbsContext.map(DevicePeerVerbs.init(context:)) {
            // A listener that cannot be set up as configured stops the daemon: peers would
            // otherwise be told of endpoints nobody serves.
            peers = try PeerService(verbs: peerVerbs, endpoints: configuration.listen,
                                    odpAlignment: UInt32(integrity?.transferAlignment ?? 1),
                                    revokingRetryMillis: UInt32(min(configuration.quiesceMillis + configuration.restoreBackoffMillis / 10, 10_000)),
                                    limits: PeerLimits(grantsPerRegion: configuration.maxGrantsPerRegion,
                                                       grantsPerUID: configuration.maxGrantsPerUID,
                                                       handshakeNanos: configuration.peerHandshakeMillis * 1_000_000),
                                    logger: logger)
            noPeersReason = nil
        } else {
            peers = nil
            noPeersReason = injected == nil ? "no RDMA device to listen on" : "the daemon runs with an injected registrar (no verbs context)"
            logger.warning("listen is set but remote access is off: \(noPeersReason!)")
        }
        noDeviceReason = reason
        odpIntegrity = integrity
        metricsFile = configuration.metricsFile.map(MetricsFile.init(path:))
        deviceName = registrar?.deviceName
        odp = registrar?.odp ?? .none
        let timing = FileLifecycle.Timing(quiesce: configuration.quiesceMillis * 1_000_000,
                                          initialBackoff: configuration.restoreBackoffMillis * 1_000_000)
        engine = try registrar.map { registrar in
            try Engine(registrar: registrar, configuration: .init(timing: timing, extentReader: extentReader,
                                                                           odpPrefetch: configuration.odpPrefetch), logger: logger)
        }

        if let activated = SocketActivation.listenDescriptors(environment: environment).first {
            listener = try UnixSocket(adopting: activated)
            ownsSocketPath = false
            logger.info("socket activation", metadata: ["fd": "\(activated.rawValue)"])
        } else {
            listener = try UnixSocket.listen(path: configuration.socketPath, mode: mode_t(configuration.socketMode),
                                             group: try Self.groupID(configuration.socketGroup))
            ownsSocketPath = true
        }
        raiseOpenFilesLimit()
        try listener.setNonBlocking(true)

        try watch(listener.descriptor, as: .listener)
        try watch(terminate.descriptor, as: .terminate)
        if let engine {
            try watch(engine.descriptors[0], as: .leaseSignals)
            try watch(engine.descriptors[1], as: .fileCloses)
        }
        if let peers { try watch(peers.verbs.descriptor, as: .peers) }
        if let reason { logger.warning("\(reason)") }
        // The first write at once, so the file exists as soon as the daemon serves.
        if metricsFile != nil { timers.schedule(.metricsFile, at: Engine.now()) }
    }

    /// Runs the ODP integrity self-test once (a loopback WRITE and READ on an ODP MR at an
    /// unaligned offset; it cleans up every verbs object) and logs what it found: rxe's ODP
    /// corrupts unaligned transfers while reporting success (docs/kernel-matrix.md), so peers
    /// must be told the alignment that lands intact.
    static func checkODPIntegrity(on context: Context, logger: Logger) -> ODPIntegrity {
        let result = ODPIntegrityCheck().run(on: context)
        let metadata: Logger.Metadata = ["device": "\(context.device.name)", "odpIntegrity": "\(result.code)",
                                         "transferAlignment": "\(result.transferAlignment)"]
        switch result {
        case .intact, .notApplicable:
            logger.info("ODP integrity self-test: \(result)", metadata: metadata)
        case .corrupts, .failed:
            logger.warning("ODP integrity self-test: \(result)", metadata: metadata)
        }
        return result
    }

    /// The gid of `socket-group` (a name or a number); nil when unset. An unknown group stops
    /// the daemon, as it stops systemd's socket unit: a socket nobody may reach is no default.
    static func groupID(_ group: String?) throws -> gid_t? {
        guard let group else { return nil }
        if let number = gid_t(group) { return number }
        guard let entry = getgrnam(group) else {
            throw DaemonConfiguration.Problem(description: "socket-group: no group named '\(group)' (create it, or set socket-group to one that exists)")
        }
        return entry.pointee.gr_gid
    }

    /// Raises the soft RLIMIT_NOFILE to the hard limit: the soft default (often 1024) is short
    /// of max-connections plus one fd per leased file, and out of fds the daemon can neither
    /// accept nor receive a client's fd. Logs both limits.
    func raiseOpenFilesLimit() {
        func text(_ value: UInt64?) -> String { value.map(String.init) ?? "unlimited" }
        do {
            let before = try SystemFacts.raiseOpenFilesLimit()
            let what = before.soft == before.hard ? "RLIMIT_NOFILE: soft limit already at the hard limit" : "RLIMIT_NOFILE: soft limit raised to the hard limit"
            logger.info("\(what)", metadata: ["op": "setrlimit", "soft": "\(text(before.soft))", "hard": "\(text(before.hard))"])
        } catch {
            logger.warning("RLIMIT_NOFILE not raised: the soft limit stays", metadata: ["op": "setrlimit", "errno": "\(error.symbolicName)"])
        }
    }

    func watch(_ fd: FileDescriptor, as source: Source) throws(Errno) {
        try (source.isUrgent ? urgent : epoll).watch(fd, for: .readable)
        sources[fd.rawValue] = source
    }

    func unwatch(_ fd: FileDescriptor) {
        if sources[fd.rawValue]?.isUrgent == true { urgent.unwatch(fd) } else { epoll.unwatch(fd) }
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
    ///
    /// Breaks first, always: lease breaks, closes, peers' rdma_cm events, SIGTERM and due
    /// timers (a quiesce deadline) are served before any client request, and again between
    /// clients' requests once `urgentPollNanos` have passed. A client gets at most one request
    /// (one message, at most `Codec.maxMessageBytes`) per turn, and no request is unbounded
    /// (`list` pages), so a break waits at most for one request in progress.
    func turn(maxWaitMillis: Int32 = 1000) throws {
        let ready = try epoll.wait(timeoutMilliseconds: waitMillis(cap: maxWaitMillis), maxEvents: 256)
        // The urgent set's own fd is readable in the loop's set when one of its fds is ready:
        // only then does this turn cost the extra epoll_wait.
        var lastUrgent: UInt64
        if ready.contains(where: { $0.fd == urgent.readiness?.rawValue }) {
            lastUrgent = serveUrgent()
        } else {
            lastUrgent = Engine.now()
            fireTimers(now: lastUrgent)
        }
        for event in ready where sources[event.fd].map({ !$0.isUrgent }) ?? false {
            if stopping { return }
            handle(event)
            if Engine.now() &- lastUrgent >= Self.urgentPollNanos { lastUrgent = serveUrgent() }
        }
    }

    /// How often, while serving clients, the loop looks again for urgent work: 1 ms keeps a
    /// break's wait within one request and costs one epoll_wait per millisecond of client work.
    static let urgentPollNanos: UInt64 = 1_000_000

    /// Serves every ready urgent source, then due timers; returns when it looked.
    @discardableResult
    func serveUrgent() -> UInt64 {
        let ready: [Epoll.Ready]
        do { ready = try urgent.wait(timeoutMilliseconds: 0) } catch {
            logger.error("epoll_wait on the urgent set failed", metadata: ["op": "epoll_wait", "errno": "\(error.symbolicName)"])
            ready = []
        }
        for event in ready {
            handle(event)
            if stopping { break }
        }
        let now = Engine.now()
        fireTimers(now: now)
        return now
    }

    /// Asks the loop to stop after the current event.
    public func stop() { stopping = true }

    func waitMillis(cap: Int32) -> Int32 {
        let now = Engine.now()
        guard let next = [engine?.nextDeadline, timers.earliest].compactMap({ $0 }).min() else { return cap }
        return next <= now ? 0 : Int32(min((next - now + 999_999) / 1_000_000, UInt64(cap)))
    }

    /// The daemon's time for what it starts and stamps (stall clocks, grant expiries, accept
    /// pauses): the monotonic clock, never behind the latest timer pass. The loop fires timers
    /// at the clock's own reading; a test's `fireTimers(now:)` may run ahead of it, and a clock
    /// started during (or after) such a pass is then measured on the pass's time, not expired
    /// by it before its client could read.
    func currentTime() -> UInt64 { max(Engine.now(), latestTimerPass) }

    func fireTimers(now: UInt64) {
        latestTimerPass = max(latestTimerPass, now)
        if let engine, let due = engine.nextDeadline, due <= now { route(engine.processTimers(now: now)) }
        for (deadline, timer) in timers.popDue(now: now) {
            switch timer {
            case .watchdog where deadline == nextWatchdog:
                notifier.watchdog()
                if let interval = notifier.watchdogInterval { scheduleWatchdog(now + interval) }
            case .grantExpiry:
                if let peers { deliver(peers.expire(now: now)) }
                scheduleGrantExpiry()
            case .peerHandshake:
                peers?.expireHandshakes(now: now)
                schedulePeerHandshake()
            case .clientStall where deadline == nextStallCheck:
                nextStallCheck = nil
                disconnectStalledClients(now: now)
            case .metricsFile:
                writeMetricsFile(now: now)
            case .acceptResume where deadline == acceptResumesAt:
                acceptResumesAt = nil
                let waiting = awaitingAdmission
                awaitingAdmission = []
                var failure: Errno?
                for socket in waiting {
                    guard let error = admit(socket) else { continue }
                    awaitingAdmission.append(socket)
                    failure = error
                }
                if let failure {
                    logger.warning("connection still waits: out of fds; pausing accepts for 1 s",
                                   metadata: ["op": "open", "errno": "\(failure.symbolicName)"])
                    pauseAccepting(now: now)
                    continue
                }
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

    /// Wakes the loop at the earliest live grant's expiry: the heap holds one entry for it,
    /// replaced at each change (the grant scan is once per grant made or expiry, not per turn).
    /// An entry per grant stayed until its expiry even when the grant was revoked at once: a
    /// client making and revoking ten-year grants grew the heap without bound.
    func scheduleGrantExpiry() {
        timers.cancel(.grantExpiry)
        if let next = peers?.nextExpiry { timers.schedule(.grantExpiry, at: next) }
    }

    /// Wakes the loop when the earliest handshake under way runs out of time. The heap cancels
    /// lazily: a wake-up for a handshake that completed meanwhile finds nothing to do.
    func schedulePeerHandshake() {
        if let deadline = peers?.nextHandshakeDeadline { timers.schedule(.peerHandshake, at: deadline) }
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
            if ready.events.contains(.writable) || session.isHeld {
                guard flush(session) else { return }
            }
            // A held client gets no more replies: its requests wait in its socket until it
            // reads (backpressure, Daemon+FlowControl).
            guard !session.closing, !session.isHeld else { return }
            if !ready.events.isDisjoint(with: [.readable, .hangup, .error]) {
                readRequests(from: session)
            }
        case .leaseSignals:
            if let engine { route(engine.processSignals()) }
        case .fileCloses:
            if let engine { route(engine.processCloses()) }
        case .peers:
            if let peers, let engine {
                deliver(peers.handleEvents(engine: engine, now: currentTime()))
                schedulePeerHandshake()
            }
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
                    return pauseAccepting(now: currentTime())
                default:
                    logger.error("accept failed", metadata: ["op": "accept4", "errno": "\(error.symbolicName)"])
                    return
                }
            }
            guard let socket = accepted else { return }
            if let error = admit(socket) {
                // Accepted, but out of fds to read /proc/PID with: the connection waits, like
                // the ones still in the backlog, and is admitted first when accepting resumes.
                awaitingAdmission.append(socket)
                logger.warning("connection waits: out of fds to read its /proc files; pausing accepts for 1 s",
                               metadata: ["op": "open", "errno": "\(error.symbolicName)"])
                return pauseAccepting(now: currentTime())
            }
        }
    }

    func pauseAccepting(now: UInt64) {
        unwatch(listener.descriptor)
        let resume = now + Self.acceptBackoffNanos
        acceptResumesAt = resume
        timers.schedule(.acceptResume, at: resume)
    }

    /// Serves a new connection, or refuses it with a reply that says why. Returns the errno
    /// (EMFILE, ENFILE) when the daemon is out of fds to set it up with: the caller keeps it
    /// waiting (neither served nor closed).
    func admit(_ socket: UnixSocket) -> Errno? {
        let credentials: UnixSocket.Credentials
        do { credentials = try socket.peerCredentials() } catch {
            logger.warning("connection dropped: SO_PEERCRED failed", metadata: ["errno": "\(error.symbolicName)"])
            close(socket)
            return nil
        }
        guard sessions.count < configuration.maxConnections else {
            refuse(socket, credentials, ProtocolError(.tooManyRequests, "mrleased serves at most \(configuration.maxConnections) connections (max-connections); close one and retry"), why: "limit")
            return nil
        }
        let ofUID = sessions.values.count { $0.credentials.uid == credentials.uid }
        guard ofUID < configuration.maxConnectionsPerUID else {
            refuse(socket, credentials, ProtocolError(.tooManyRequests, "uid \(credentials.uid) has \(ofUID) connections, the most one uid may hold (max-connections-per-uid \(configuration.maxConnectionsPerUID)); close one and retry"), why: "per-uid limit")
            return nil
        }
        // What the client may do is fixed now, from /proc/PID. A file that cannot be read (out
        // of fds, or the process already gone) refuses the connection: going on would serve
        // the client without its byte quota.
        let limit: UInt64?
        let mayLeaseOthers: Bool
        do {
            limit = try configuration.maxBytesPerUID ?? ProcessFacts.memlockLimit(of: credentials.pid)
            let rule = configuration.leaseOthers
            // Supplementary groups are read only when a group could make the difference.
            let groups: Set<UInt32> = rule.groups.isEmpty ? [credentials.gid] : try ProcessFacts.groups(of: credentials.pid).union([credentials.gid])
            mayLeaseOthers = rule.allows(uid: credentials.uid, groups: groups)
        } catch {
            let errno = error as? Errno
            if let errno, errno == .tooManyOpenFiles || errno == .tooManyOpenFilesInSystem { return errno }
            // Otherwise the process is gone (ENOENT, ESRCH) or /proc is not ours to read.
            let name = errno?.symbolicName ?? "\(error)"
            refuse(socket, credentials, ProtocolError(.internal, "mrleased could not read /proc/\(credentials.pid) to set up this connection (\(name))", errnoName: errno?.symbolicName, errnoValue: errno?.rawValue), why: "/proc/\(credentials.pid) unreadable: \(name)")
            return nil
        }
        let owner = OwnerID(nextOwner)
        nextOwner += 1
        let session = ClientSession(owner: owner, socket: socket, credentials: credentials, byteLimit: limit, mayLeaseOthers: mayLeaseOthers)
        do {
            try watch(socket.descriptor, as: .session(session))
        } catch {
            refuse(socket, credentials, ProtocolError(.internal, "mrleased could not watch this connection (epoll_ctl: \(error.symbolicName)); retry later", errnoName: error.symbolicName, errnoValue: error.rawValue), why: "epoll_ctl failed: \(error.symbolicName)")
            return nil
        }
        sessions[owner] = session
        logger.debug("client connected", metadata: ["client": "\(owner)", "pid": "\(credentials.pid)", "uid": "\(credentials.uid)"])
        return nil
    }

    /// Tells a connection it will not be served, and why (a reply without an id), then closes
    /// it: a client past a limit hears a refusal, never silence.
    func refuse(_ socket: UnixSocket, _ credentials: UnixSocket.Credentials, _ error: ProtocolError, why: String) {
        do { try socket.send(Codec.encode(Reply(id: nil, type: nil, error: error))) } catch {
            logger.debug("refusal not sent", metadata: ["errno": "\(error.symbolicName)"])
        }
        close(socket)
        logger.warning("connection refused: \(why)", metadata: ["pid": "\(credentials.pid)", "uid": "\(credentials.uid)"])
    }

    /// Closes a client socket; close(2) fails only with EBADF (a bug) or EINTR, and Linux
    /// releases the fd either way.
    func close(_ socket: UnixSocket) {
        do { try socket.close() } catch {
            logger.debug("close failed", metadata: ["errno": "\(error.symbolicName)"])
        }
    }

    /// Reads and answers one request. One per wake-up: the socket is level-triggered, so a
    /// client with more queued is ready again at once, and the clients take turns; and the
    /// usual client, one request in flight, costs no second recvmsg that would only say EAGAIN
    /// (a syscall on every request's path: docs/benchmarks.md, issue 11).
    func readRequests(from session: ClientSession) {
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
                Codec.encodeList(id: id, regions: page.regions, more: page.next != nil)
            } else {
                Codec.encode(reply)
            }
            guard send(packet, to: session, what: "replies") else { return }
            if let type = reply.type { requestTimes[type, default: LatencyHistogram()].record(nanoseconds: Engine.now() - start) }
            if packet.count >= Self.largeReplyBytes { holdIfBehind(session) }
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
        // Peers first: a revocation stops the region's peers at once (their QPs and the grant's
        // MR go before the owner even hears of it); a lost region ends its grants.
        var peerNotices: [PeerNotice] = []
        if let peers {
            switch notice.event {
            case .revoking(let id, _, _): peerNotices = peers.regionRevoking(id)
            case .lost(let id, _, _): peerNotices = peers.regionGone(id)
            // A following region's layout change is the owner's news only: its peers keep
            // their connections and keys, and reach the file's current pages.
            case .revoked, .restored, .unlinked, .layout: break
            }
        }
        if let session = sessions[notice.owner], !session.closing {
            if case .lost(let id, _, _) = notice.event { session.tags[id] = nil }
            _ = send(Codec.encode(Event(notice.event, now: Engine.now())), to: session, what: "events")
        }
        deliver(peerNotices)
    }

    /// Sends remote-access events to their owners, if still connected.
    func deliver(_ notices: [PeerNotice]) {
        for notice in notices {
            guard let session = sessions[notice.owner], !session.closing else { continue }
            _ = send(Codec.encode(notice.event), to: session, what: "events")
        }
    }

    /// Drops a client: every region it owned is deregistered, leases go with their last region.
    func disconnect(_ session: ClientSession, why: String) {
        guard !session.closing else { return }
        session.closing = true
        let regions = engine?.regionCount(owner: session.owner) ?? 0
        unwatch(session.descriptor)
        sessions[session.owner] = nil
        close(session.socket)
        peers?.ownerGone(session.owner)
        if let engine { route(engine.release(owner: session.owner)) }
        // Thousands of regions freed at once leave their bookkeeping's memory on malloc's free
        // lists, still counted in the daemon's RSS; give it back to the kernel (glibc madvises
        // the free pages of every arena). About a millisecond per 10 MB of heap, so only after
        // a large release, and when the last client has gone (frees after a trim can write to
        // free chunks all over the heap as malloc merges them, and so count them again).
        if regions >= Self.trimAfterRegions || sessions.isEmpty { Heap.trim() }
        logger.debug("client gone", metadata: ["client": "\(session.owner)", "why": "\(why)", "regions": "\(regions)"])
    }

    /// Releasing at least this many regions at once returns the freed heap to the kernel.
    static let trimAfterRegions = 1024

    func shutDown() {
        notifier.stopping(status: "stopping: releasing \(engine?.statistics().regions ?? 0) regions")
        unwatch(listener.descriptor)
        close(listener)
        if let peers {
            unwatch(peers.verbs.descriptor)
            deliver(peers.shutDown())
        }
        for socket in awaitingAdmission { close(socket) }
        awaitingAdmission = []
        for session in Array(sessions.values) {
            // Tell each owner its regions go now: a shutdown does not wait for acks.
            for region in engine?.list(owner: session.owner) ?? [] {
                // Best effort, unbounded: the session is dropped right after.
                _ = session.send(Codec.encode(.revoking(.init(region: region.id.rawValue, reason: .shutdown, deadlineMillis: 0))))
                _ = session.send(Codec.encode(.revoked(region: region.id.rawValue)))
            }
            disconnect(session, why: "shutdown")
        }
        if ownsSocketPath { unlink(configuration.socketPath) }
        removeMetricsFile()
        logger.info("stopped")
    }

    func statusLine() -> String {
        let stats = engine?.statistics()
        return "\(sessions.count) clients, \(stats?.regions ?? 0) regions, \(stats?.leasesHeld ?? 0) leases, device \(deviceName ?? "none")"
    }
}
