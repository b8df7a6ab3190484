import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

/// Reading requests in, and what goes out: engine events routed to their owners (and to the
/// peer service), disconnects, shutdown.
extension Daemon {
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
            let reply = answer(message, from: session, received: start)
            // The engine keeps its own duplicate of a registered fd (and a registration waiting
            // for its pin, one of its own): the received ones are ours to close, and close(2)
            // releases them whatever it reports.
            for fd in message.fds { _ = try? fd.close() }
            if let reply { sendReply(reply, to: session, started: start) }
        }
    }

    /// Sends one reply and counts its time since the request was read (`started`).
    func sendReply(_ reply: Reply, to session: ClientSession, started: UInt64) {
        // A long list goes in pages that each fit one message (the client asks for the rest).
        let packet = if case .success(.list(let page)) = reply.outcome, let id = reply.id {
            Codec.encodeList(id: id, regions: page.regions, more: page.next != nil)
        } else {
            Codec.encode(reply)
        }
        guard send(packet, to: session, what: "replies") else { return }
        if let type = reply.type { requestTimes[type, default: LatencyHistogram()].record(nanoseconds: Engine.now() - started) }
        if packet.count >= Self.largeReplyBytes { holdIfBehind(session) }
    }

    /// Delivers engine events to their owners, in order. Events that delivering causes (a
    /// session disconnected for not reading releases its regions) join the queue behind them.
    func route(_ notices: [EngineNotice]) {
        pendingNotices += notices
        guard !routing else { return }
        routing = true
        defer { routing = false }
        repeat {
            var next = 0
            while next < pendingNotices.count {
                deliver(pendingNotices[next])
                next += 1
            }
            pendingNotices.removeAll(keepingCapacity: true)
            // The call that produced these may have started restorations' pins; an inline
            // runner finishes them here, and their notices go round again.
            submitStartedPins()
        } while !pendingNotices.isEmpty
    }

    /// Hands the pins the engine's restorations started to the worker.
    func submitStartedPins() {
        guard let engine, let pins else { return }
        let started = engine.takeStartedPins()
        guard !started.isEmpty else { return }
        logger.debug("restoration pins to the worker", metadata: ["pins": "\(started.count)", "bytes": "\(started.reduce(0) { $0 + $1.length })"])
        for job in started { pins.submit(job) }
        if pins.descriptor == nil { pinsFinished() }
    }

    /// The one fan-out point of the engine's notices: each goes to every subscriber in order,
    /// the owner's session first (if still connected), then the peer service, whose own
    /// notices for owners are delivered in turn. The engine has already done what must come
    /// before anyone hears (a revocation's exposures withdrawn, its peers stopped).
    func deliver(_ notice: EngineNotice) {
        if let session = sessions[notice.owner], !session.closing {
            if case .lost(let id, _, _) = notice.event { session.tags[id] = nil }
            for event in Event.wire(notice.event, now: Engine.now(), perFile: session.revokingPerFile) {
                guard send(Codec.encode(event), to: session, what: "events") else { break }
            }
        }
        if let peers, let engine { deliver(peers.receive(notice.event, engine: engine, now: currentTime())) }
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
        // A pin under way for it is abandoned when the worker hands it back.
        session.registration?.closeFD()
        session.registration = nil
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
            if let made = peers.maker.descriptor { unwatch(made) }
            deliver(peers.shutDown())
        }
        if let pins {
            if let done = pins.descriptor { unwatch(done) }
            // Waits for a pin under way: its MR is deregistered before the engine goes.
            pins.shutDown()
            for job in pins.finished() { engine?.abandon(job) }
        }
        for socket in awaitingAdmission { close(socket) }
        awaitingAdmission = []
        for session in Array(sessions.values) {
            // Tell each owner its regions go now: a shutdown does not wait for acks. Best
            // effort, unbounded: the session is dropped right after.
            let regions = engine?.list(owner: session.owner) ?? []
            if session.revokingPerFile {
                var byFile: [FileKey: [UInt64]] = [:]
                for region in regions { byFile[region.file, default: []].append(region.id.rawValue) }
                for (file, ids) in byFile.sorted(by: { $0.key < $1.key }) {
                    for event in RevokingFile.events(file: file.wire, regions: ids, reason: .shutdown, deadlineMillis: 0) {
                        _ = session.send(Codec.encode(.revokingFile(event)))
                    }
                }
            } else {
                for region in regions { _ = session.send(Codec.encode(.revoking(.init(region: region.id.rawValue, reason: .shutdown, deadlineMillis: 0)))) }
            }
            for region in regions { _ = session.send(Codec.encode(.revoked(region: region.id.rawValue))) }
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
