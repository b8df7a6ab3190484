import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

/// The loop: turns, urgent work first, timers, and what a ready fd is handed to.
extension Daemon {
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
            if session.registration != nil {
                // Its requests wait for its registration's reply; a client that hung up meanwhile
                // is gone (its pin is abandoned when the worker hands it back).
                if !ready.events.isDisjoint(with: [.hangup, .error]) { disconnect(session, why: "hung up while its registration was pinned") }
                return
            }
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
        case .pins:
            pinsFinished()
        case .exposures:
            if let peers, let engine {
                peers.exposuresMade(engine: engine, now: currentTime())
                schedulePeerHandshake()
            }
        }
    }
}
