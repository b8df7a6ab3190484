import LinuxFile
import MRLeaseEngine
import MRLeaseProtocol

/// Flow control: what a client that does not read its replies and events costs the daemon.
///
/// A client is *held* while its packets wait in the daemon (the socket would not take them) or
/// while what it has not read passes its socket's writable mark after a large reply: the daemon
/// then reads none of its requests, which wait in its socket (backpressure), so sending
/// requests without reading the replies costs the daemon at most a socket's worth of answers.
///
/// A client's *stall clock* runs while it is behind and not reading: its socket full, or large
/// replies unread with more requests waiting (the mark of a client that sends without
/// reading). Whether it read is seen in its socket's unread bytes (SIOCOUTQ), sampled around
/// every packet sent to it while the clock runs: with nothing read, only the daemon's own
/// sends change them. A client that reads restarts the clock; one that does not for
/// `client-stall-ms` is disconnected. Packets queued for clients are bounded in count and
/// bytes too, per client and in total.
extension Daemon {
    /// Queues `packet` for `session`; false (and the session disconnected) when it is gone or
    /// not reading its `what` (its queue past a bound).
    func send(_ packet: [UInt8], to session: ClientSession, what: String) -> Bool {
        let timed = session.stalledSince != nil
        if timed { noteReads(of: session, now: currentTime()) }
        guard session.send(packet) else {
            disconnect(session, why: "send failed")
            return false
        }
        if timed { session.lastUnread = unreadBytes(of: session) }
        guard !session.outbox.isEmpty else { return true }
        if let bound = boundPassed(by: session) {
            logger.warning("client disconnected: not reading its \(what)", metadata: ["client": "\(session.owner)", "pid": "\(session.credentials.pid)",
                                                                                 "uid": "\(session.credentials.uid)", "bound": "\(bound)"])
            disconnect(session, why: "not reading its \(what): \(bound)")
            return false
        }
        startStallClock(session)
        hold(session)
        return true
    }

    /// Replies at least this large (a `list` page) are followed by a look at what the client
    /// has not read: cheap answers fill a socket slowly, large ones fast.
    static let largeReplyBytes = 4096
    /// Unread bytes past which a client with requests waiting counts as sending without
    /// reading: one large reply not yet read. A client that reads it restarts the clock at
    /// the next look, and one with nothing left to ask stops it.
    static let stallStartBytes = largeReplyBytes

    /// After a large reply: starts `session`'s stall clock when it has that much unread and
    /// more requests waiting, and holds it when its unread bytes pass its socket's writable
    /// mark (a quarter of the send buffer: the kernel reports the socket writable again only
    /// below it).
    func holdIfBehind(_ session: ClientSession) {
        guard !session.isHeld, !session.closing else { return }
        let unread = unreadBytes(of: session)
        guard unread > Self.stallStartBytes else { return }
        if session.stalledSince == nil, requestsWaiting(session) { startStallClock(session) }
        if unread > session.writableMark { hold(session) }
    }

    /// Reads no more of `session`'s requests until its socket turns writable.
    func hold(_ session: ClientSession) {
        guard !session.isHeld else { return }
        session.isHeld = true
        updateInterest(of: session)
    }

    /// Sends what waits for `session` once its socket is writable (it read down to the mark):
    /// all of it releases the session; some of it shows the client reads, which restarts its
    /// clock. False when it is gone (and disconnected).
    func flush(_ session: ClientSession) -> Bool {
        let queued = session.outbox.count
        guard session.flush() else {
            disconnect(session, why: "send failed")
            return false
        }
        if session.outbox.isEmpty {
            release(session)
        } else if session.outbox.count < queued, session.stalledSince != nil {
            session.stalledSince = currentTime()
            session.lastUnread = unreadBytes(of: session)
        }
        return true
    }

    /// `session` drained to its writable mark: its requests are read again, its clock stops.
    func release(_ session: ClientSession) {
        guard session.isHeld else { return }
        session.isHeld = false
        session.stalledSince = nil
        updateInterest(of: session)
    }

    func startStallClock(_ session: ClientSession) {
        guard session.stalledSince == nil else { return }
        let now = currentTime()
        session.stalledSince = now
        session.lastUnread = unreadBytes(of: session)
        scheduleStallCheck(at: now + configuration.clientStallMillis * 1_000_000)
    }

    /// One timer entry looks at every clock: a later look is not scheduled while an earlier
    /// one is pending (every clock runs for the same bound, so the pending one comes first).
    func scheduleStallCheck(at deadline: UInt64) {
        if let pending = nextStallCheck, pending <= deadline { return }
        nextStallCheck = deadline
        timers.schedule(.clientStall, at: deadline)
    }

    /// Restarts `session`'s stall clock if it read anything since the last sample.
    func noteReads(of session: ClientSession, now: UInt64) {
        let unread = unreadBytes(of: session)
        if unread < session.lastUnread { session.stalledSince = now }
        session.lastUnread = unread
    }

    /// Whether requests wait in `session`'s socket; false when the kernel will not say.
    func requestsWaiting(_ session: ClientSession) -> Bool {
        do { return try session.socket.pendingBytes() > 0 } catch {
            logger.debug("SIOCINQ failed", metadata: ["client": "\(session.owner)", "op": "ioctl", "errno": "\(error.symbolicName)"])
            return false
        }
    }

    /// Disconnects every client whose stall clock has run `client-stall-ms` without it reading
    /// a byte; stops the clock of a client that is no longer behind (nothing queued, no
    /// request waiting); schedules the next look for the rest.
    func disconnectStalledClients(now: UInt64) {
        let bound = configuration.clientStallMillis * 1_000_000
        var next: UInt64?
        for session in Array(sessions.values) where session.stalledSince != nil {
            noteReads(of: session, now: now)
            guard let since = session.stalledSince else { continue }
            if session.outbox.isEmpty, !requestsWaiting(session) {
                session.stalledSince = nil
                continue
            }
            if now >= since + bound {
                logger.warning("client disconnected: not reading", metadata: [
                    "client": "\(session.owner)", "pid": "\(session.credentials.pid)", "uid": "\(session.credentials.uid)",
                    "unread": "\(session.lastUnread)", "queued": "\(session.outboxBytes)", "bound": "client-stall-ms \(configuration.clientStallMillis)"])
                disconnect(session, why: "not reading its replies for client-stall-ms (\(configuration.clientStallMillis))")
            } else {
                next = min(next ?? .max, since + bound)
            }
        }
        if let next { scheduleStallCheck(at: next) }
    }

    /// Which bound on queued packets `session`'s queue passes, if any: its message count, its
    /// bytes, or the bytes queued for all clients. The total is summed here, from the sessions
    /// (the one owner of each queue), only when a client is behind.
    func boundPassed(by session: ClientSession) -> String? {
        if session.outbox.count > configuration.maxQueuedMessages {
            return "\(session.outbox.count) packets queued, past max-queued-messages (\(configuration.maxQueuedMessages))"
        }
        if session.outboxBytes > configuration.maxQueuedBytesPerClient {
            return "\(session.outboxBytes) bytes queued, past max-queued-bytes-per-client (\(configuration.maxQueuedBytesPerClient))"
        }
        let total = sessions.values.reduce(UInt64(0)) { $0 + $1.outboxBytes }
        if total > configuration.maxQueuedBytes {
            return "\(total) bytes queued for all clients, past max-queued-bytes (\(configuration.maxQueuedBytes))"
        }
        return nil
    }

    /// What `session`'s peer has not read of its socket; `Int.max` when the kernel will not
    /// say (then no read can be seen, and the stall bound counts from the first full socket).
    func unreadBytes(of session: ClientSession) -> Int {
        do { return try session.socket.unreadBytes() } catch {
            logger.debug("SIOCOUTQ failed", metadata: ["client": "\(session.owner)", "op": "ioctl", "errno": "\(error.symbolicName)"])
            return .max
        }
    }

    /// A held client is watched for writability only: its requests are not read until it has
    /// drained (see `handle`); hangups and errors are reported either way.
    /// What the loop waits for on `session`'s socket: writability while it is held, nothing
    /// while its registration waits for a pin (a hang-up is reported anyway), else its requests.
    func updateInterest(of session: ClientSession) {
        let events: Epoll.Events = session.isHeld ? .writable : session.registration == nil ? .readable : []
        do {
            try epoll.watch(session.descriptor, for: events)
        } catch {
            disconnect(session, why: "epoll_ctl failed: \(error.symbolicName)")
        }
    }
}
