import LinuxFile
import MRLeaseProtocol
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension MRLeaseClient {
    /// The next event about this connection's regions: a queued one first, else one read from
    /// the socket within `timeout` (nil: wait as long as it takes; `.zero`: only what has
    /// already arrived). Nil when none came in time.
    ///
    /// Throws `disconnected` when the daemon's connection ends (it is stopping: a
    /// `revoking`/`revoked` pair per region comes first, and is returned before the error; or
    /// it died, and the client has released the leases it left: see `ConnectionEnd`).
    public func nextEvent(timeout: Duration?) throws(ClientError) -> Event? {
        if !events.isEmpty { return events.removeFirst() }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            guard let message = try receive(until: deadline, op: "wait for events") else { return nil }
            // Replies read here answer no pending request (ours are read in `call`): the
            // automatic acks' replies, or a stale one. Dropped.
            if case .event = message, !events.isEmpty { return events.removeFirst() }
        }
    }

    /// Reads every packet already waiting, queueing its events.
    func drain() throws(ClientError) {
        while try receive(until: .now, op: "read events") != nil {}
    }

    /// One packet from the daemon, or nil when none came before `deadline` (nil deadline: wait).
    /// Events are noted and queued before they are returned; automatic acks' replies are
    /// consumed and come back as nothing-yet only when nothing else is waiting.
    func receive(until deadline: ContinuousClock.Instant?, op: String) throws(ClientError) -> ServerMessage? {
        var resets = 0
        while true {
            guard try waitReadable(until: deadline, op: op) else { return nil }
            let received: UnixSocket.Received
            do { received = try socket.receive(maxSize: Codec.maxMessageBytes + 1, maxFDs: 1) } catch {
                // A daemon that closed with our packets unread (it refused the connection, or
                // died) leaves ECONNRESET, which the kernel reports before the packets it sent
                // first; the report clears it, so read on: those packets, then end of stream
                // (libmrlease does the same).
                if error == .connectionReset && resets == 0 { resets += 1; continue }
                if error == .connectionReset { throw connectionEnded(op: op) }
                throw .system(op: "receive (\(op))", error)
            }
            let message: UnixSocket.Message
            switch received {
            case .wouldBlock: continue
            case .endOfStream: throw connectionEnded(op: op)
            case .message(let m): message = m
            }
            // The daemon never sends fds; close any so none leaks.
            for fd in message.fds { try? fd.close() }
            if message.truncated { throw .malformedReply(op: op, .messageTooLarge) }
            let decoded: ServerMessage
            do { decoded = try Codec.decodeServerMessage(message.bytes) } catch { throw .malformedReply(op: op, error) }
            switch decoded {
            case .event(let event):
                try note(event)
            case .reply(let reply):
                if let id = reply.id, automaticAcks.remove(id) != nil { continue }
            }
            return decoded
        }
    }

    /// Queues `event` and keeps the pending revocations (and the automatic ack) up to date.
    func note(_ event: Event) throws(ClientError) {
        events.append(event)
        switch event {
        case .revoking(let revoking):
            if revoking.reason == .shutdown { shutdownAnnounced = true }
            if acknowledgesRevocations {
                // Sent now, its reply read whenever it comes: no request waits on another.
                automaticAcks.insert(try send(.ack(region: revoking.region)))
            } else if !pendingRevocations.contains(revoking.region) {
                pendingRevocations.append(revoking.region)
            }
        case .revokingFile(let revoking):
            if revoking.reason == .shutdown { shutdownAnnounced = true }
            if acknowledgesRevocations {
                // Once the last part is in: the ack covers every part's regions.
                if !revoking.more { automaticAcks.insert(try send(.ackFile(revoking.file))) }
            } else {
                let ids = revoking.regions
                let pending = Set(pendingRevocations)
                pendingRevocations += ids.filter { !pending.contains($0) }
                pendingFiles[revoking.file, default: []] += ids
            }
        case .revoked, .restored, .lost:
            if !pendingRevocations.isEmpty { pendingRevocations.removeAll { $0 == event.region } }
        case .unlinked, .peerConnected, .peerDisconnected, .layout:
            // News, not steps of a revocation: a pending one still waits for its ack.
            break
        }
    }

    /// Whether the socket became readable before `deadline` (nil: wait without limit).
    ///
    /// The corresponding C function is `poll`.
    func waitReadable(until deadline: ContinuousClock.Instant?, op: String) throws(ClientError) -> Bool {
        while true {
            var milliseconds: Int32 = -1
            if let deadline {
                let left = ContinuousClock.now.duration(to: deadline)
                let (seconds, attoseconds) = left.components
                // Rounded up, so a sub-millisecond remainder still waits instead of spinning.
                milliseconds = left <= .zero ? 0 : Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
            }
            var pfd = pollfd(fd: socket.descriptor.rawValue, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, milliseconds)
            if ready > 0 { return true }
            if ready == 0 { return false }
            let error = Errno(rawValue: errno)
            // EINTR: poll again with what is left of the deadline.
            guard error == .interrupted else { throw .system(op: "poll (\(op))", error) }
        }
    }
}
