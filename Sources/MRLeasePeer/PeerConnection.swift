import Glibc
import MRLeaseGrant
import Verbs

/// One work request of a transfer: `length` bytes between local memory at `localOffset` (in
/// the staging buffer, or in `local`'s memory: an application's registered `PeerBuffer`) and
/// the region at `remoteOffset` (relative to the region's start).
struct WorkItem {
    var operation: QueuePair.RemoteOperation
    var localOffset: Int
    var remoteOffset: UInt64
    var length: UInt32
    /// The MR of the application's buffer the request posts from or into; nil: the staging buffer.
    var local: MemoryRegion? = nil

    /// Compare-and-swap and fetch-and-add: not to be posted on a connection that may be
    /// broken, since their failure leaves the outcome unknown.
    var isAtomic: Bool {
        switch operation {
        case .write, .read: false
        case .compareAndSwap, .fetchAdd: true
        }
    }
}

/// What stopped posted work.
enum LinkFailure: Error {
    /// The connection is gone (revocation, disconnect, silence): reconnect and retry.
    /// `mayHaveExecuted`: a failed request may have been carried out by the responder.
    case broken(String, mayHaveExecuted: Bool)
    /// Not the connection's fault: do not retry.
    case fault(String)
}

/// One rdma_cm connection to a grant: its own event channel and id, a PD, CQ and RC QP on the
/// id's librdmacm context, the staging buffer registered in that PD, and the terms the accept
/// gave. Made by `open`, used until anything breaks, then `close()`d; a new one replaces it.
final class PeerConnection {
    let channel: CMEventChannel
    let id: CMID
    let domain: ClientDomain
    let completions: CompletionQueue
    let completionChannel: CompletionChannel
    let queuePair: QueuePair
    let staging: UnsafeMutableRawPointer
    let stagingBytes: Int
    let stagingMR: MemoryRegion
    let terms: GrantTerms
    private let options: PeerOptions
    /// The application's buffers registered in this connection's PD so far (`PeerBuffer.key`).
    private var buffers: [ObjectIdentifier: MemoryRegion] = [:]
    /// The channel reported DISCONNECTED (and it was answered with `disconnect()`).
    private(set) var isDisconnected = false
    private var lastEventCheck = MonotonicClock.now()
    private var isClosed = false

    private init(channel: CMEventChannel, id: CMID, domain: ClientDomain, completions: CompletionQueue,
                 completionChannel: CompletionChannel, queuePair: QueuePair,
                 staging: UnsafeMutableRawPointer, stagingMR: MemoryRegion, terms: GrantTerms, options: PeerOptions) {
        self.channel = channel
        self.id = id
        self.domain = domain
        self.completions = completions
        self.completionChannel = completionChannel
        self.queuePair = queuePair
        self.staging = staging
        self.stagingBytes = options.stagingBytes
        self.stagingMR = stagingMR
        self.terms = terms
        self.options = options
    }

    deinit { close() }

    /// The descriptor's endpoint as rdma_resolve_addr wants it: the bare address text.
    static func host(of endpoint: GrantEndpoint) -> String {
        let text = endpoint.description
        if text.hasPrefix("["), let end = text.firstIndex(of: "]") {
            return String(text[text.index(after: text.startIndex)..<end])
        }
        return String(text[..<(text.lastIndex(of: ":") ?? text.endIndex)])
    }

    /// One attempt: resolve the descriptor's endpoint, make the QP and staging MR, connect with
    /// the grant's id and secret, and wait for ESTABLISHED (its accept checked) or REJECTED.
    static func open(_ descriptor: GrantDescriptor, options: PeerOptions) -> Result<PeerConnection, ConnectFailure> {
        let deadline = MonotonicClock.now() + options.attemptTimeout
        let millis = Int32(min(options.attemptTimeout * 1000, 60_000))
        var cleanup: [() -> Void] = []
        defer { for step in cleanup.reversed() { step() } }
        do throws(VerbsError) {
            let channel = try CMEventChannel()
            let id = try channel.createID()
            do { try id.resolveAddress(host(of: descriptor.endpoint), port: descriptor.endpoint.port, timeoutMillis: millis) } catch {
                return .failure(.resolving(error, step: "resolving \(descriptor.endpoint)"))
            }
            if case .failure(let failure) = expect(.addressResolved, on: channel, deadline: deadline, step: "resolving \(descriptor.endpoint)") {
                return .failure(failure)
            }
            do { try id.resolveRoute(timeoutMillis: millis) } catch {
                return .failure(.resolving(error, step: "resolving the route to \(descriptor.endpoint)"))
            }
            if case .failure(let failure) = expect(.routeResolved, on: channel, deadline: deadline, step: "resolving the route to \(descriptor.endpoint)") {
                return .failure(failure)
            }
            guard let context = try id.context() else {
                return .failure(.transport("rdma_resolve_addr gave the id no device for \(descriptor.endpoint)"))
            }
            let domain = try ClientDomain(context: context)
            // Destroys the id's QP and the id, then the staging MR and the PD, in that order.
            cleanup.append { Self.closeQuietly(domain) }
            let completionChannel = try context.createCompletionChannel()
            let completions = try context.createCompletionQueue(entries: Int32(options.queueDepth + 1), channel: completionChannel)
            let queuePair = try domain.createQueuePair(on: id, sendQueue: completions, receiveQueue: completions,
                                                       maxSend: UInt32(options.queueDepth), maxReceive: 1)
            let staging = UnsafeMutableRawPointer.allocate(byteCount: options.stagingBytes, alignment: 4096)
            staging.initializeMemory(as: UInt8.self, repeating: 0, count: options.stagingBytes)
            cleanup.insert({ staging.deallocate() }, at: 0)  // after the MR is gone
            let stagingMR = try domain.register(address: staging, length: options.stagingBytes, access: [.localWrite])
            try id.connect(privateData: ConnectPrivateData(descriptor).encoded(), initiatorDepth: UInt8(min(options.queueDepth, 16)))
            let event: CMEvent
            switch waitForEvent(on: channel, deadline: deadline, step: "waiting for the accept from \(descriptor.endpoint)") {
            case .failure(let failure): return .failure(failure)
            case .success(let received): event = received
            }
            switch event.kind {
            case .established:
                switch ConnectFailure.accept(event.privateData, grantID: descriptor.grantID) {
                case .failure(let failure): return .failure(failure)
                case .success(let accept):
                    let terms = GrantTerms(accept)
                    if terms.transferAlignment > UInt64(options.stagingBytes) {
                        return .failure(.badAccept("transfer alignment \(terms.transferAlignment) exceeds the staging buffer (\(options.stagingBytes) bytes); raise the staging size"))
                    }
                    cleanup.removeAll()
                    return .success(PeerConnection(channel: channel, id: id, domain: domain, completions: completions,
                                                   completionChannel: completionChannel, queuePair: queuePair,
                                                   staging: staging, stagingMR: stagingMR, terms: terms, options: options))
                }
            case .rejected:
                return .failure(ConnectFailure.reject(status: event.status, privateData: event.privateData))
            default:
                return .failure(.transport("\(event.kind) (status \(event.status)) while connecting to \(descriptor.endpoint)"))
            }
        } catch {
            return .failure(.local("\(error)"))
        }
    }

    /// Waits for the next event on `channel`, which must be `kind`.
    private static func expect(_ kind: CMEvent.Kind, on channel: CMEventChannel, deadline: Double, step: String) -> Result<Void, ConnectFailure> {
        switch waitForEvent(on: channel, deadline: deadline, step: step) {
        case .failure(let failure): return .failure(failure)
        case .success(let event) where event.kind == kind: return .success(())
        case .success(let event): return .failure(.transport("\(event.kind) (status \(event.status)) while \(step)"))
        }
    }

    /// The next event on `channel`, waiting (poll(2) on its fd) until `deadline`.
    private static func waitForEvent(on channel: CMEventChannel, deadline: Double, step: String) -> Result<CMEvent, ConnectFailure> {
        while true {
            do throws(VerbsError) {
                if let event = try channel.nextEvent() { return .success(event) }
            } catch {
                return .failure(.local("\(error)"))
            }
            let left = deadline - MonotonicClock.now()
            if left <= 0 { return .failure(.timedOut("no rdma_cm event within the attempt timeout while \(step)")) }
            var descriptor = pollfd(fd: channel.descriptor.rawValue, events: Int16(POLLIN), revents: 0)
            // EINTR or a timeout both go round the loop again, which checks the deadline.
            _ = poll(&descriptor, 1, Int32(min(left * 1000 + 1, 1000)))
        }
    }

    /// `buffer`'s MR in this connection's PD, registered on first use (local write: a read
    /// fills it, a write sends from it).
    ///
    /// The corresponding C function is `ibv_reg_mr`.
    func memoryRegion(for buffer: PeerBuffer) throws(VerbsError) -> MemoryRegion {
        if let registered = buffers[buffer.key] { return registered }
        let registered = try domain.register(address: buffer.memory.baseAddress!, length: buffer.memory.count, access: [.localWrite])
        buffers[buffer.key] = registered
        return registered
    }

    /// Deregisters `buffer` here if it was registered (a buffer the application releases).
    ///
    /// The corresponding C function is `ibv_dereg_mr`.
    func forget(_ buffer: PeerBuffer) throws(VerbsError) {
        guard let registered = buffers.removeValue(forKey: buffer.key) else { return }
        try registered.deregister()
    }

    /// Posts `items` (at most `queueDepth` in flight) and waits for all their completions,
    /// watching the event channel for DISCONNECTED while it waits.
    func run(_ items: [WorkItem]) -> Result<Void, LinkFailure> {
        // Nothing posted yet: a connection already seen broken costs nothing to retry on. The
        // rdma_cm channel is read before every atomic (one syscall); before a read or write at
        // most once a millisecond, since they are repeated whole if the connection turns out
        // broken (docs/benchmarks.md, remote access: what the syscall per request cost).
        if let cause = brokenCause(force: items.contains(where: \.isAtomic)) { return .failure(.broken(cause, mayHaveExecuted: false)) }
        var next = 0, outstanding = 0
        var lastProgress = MonotonicClock.now()
        var posted = false
        while next < items.count || outstanding > 0 {
            while outstanding < options.queueDepth && next < items.count {
                let item = items[next]
                do throws(VerbsError) {
                    let local = item.local ?? stagingMR
                    try queuePair.post(item.operation, local: local, localAddress: local.address + UInt64(item.localOffset),
                                       length: item.length, remoteAddress: terms.remoteAddress + item.remoteOffset,
                                       rkey: terms.rkey, wrID: UInt64(next))
                } catch {
                    return .failure(postFailure(error, posted: posted))
                }
                posted = true
                next += 1
                outstanding += 1
            }
            var done: [WorkCompletion]
            do throws(VerbsError) { done = try completions.poll(max: 16) } catch { return .failure(.fault("\(error)")) }
            if done.isEmpty {
                let now = MonotonicClock.now()
                if let cause = brokenCause(force: false) { return .failure(.broken(cause, mayHaveExecuted: true)) }
                if now - lastProgress > options.completionTimeout {
                    return .failure(.broken("no completion within \(options.completionTimeout) s", mayHaveExecuted: true))
                }
                // Spin briefly (a completion on rxe takes tens of microseconds), then sleep in
                // poll(2) on the completion channel and the rdma_cm channel together: a peer that
                // only spins starves the kernel work that produces its completions when CPUs are
                // scarce (measured in the 2-CPU guests: no completion at all for 10 s). Each turn
                // of the spin yields the CPU: the kernel work that completes our requests may
                // need this very CPU (one-CPU hosts), and runs only when this thread gives way
                // (measured, 7.3.4 peer on one vCPU: 4 KiB READs 878 µs median, perftest 337).
                if now - lastProgress < options.spinSeconds {
                    sched_yield()
                    continue
                }
                switch sleepUntilCompletionOrEvent(until: lastProgress + options.completionTimeout) {
                case .failure(let failure): return .failure(failure)
                case .success(let polled): done = polled
                }
            }
            if !done.isEmpty { lastProgress = MonotonicClock.now() }
            for completion in done {
                outstanding -= 1
                guard completion.isSuccess else {
                    let text = "\(completion.statusText) (status \(completion.status)) on work request \(completion.wrID)"
                    switch CompletionVerdict(status: completion.status) {
                    case .connectionLost(let mayHaveExecuted):
                        return .failure(.broken(text, mayHaveExecuted: mayHaveExecuted || outstanding > 0))
                    case .fault: return .failure(.fault(text))
                    }
                }
            }
        }
        return .success(())
    }

    /// Arms the CQ and polls it once more (a completion that arrived before the arm raises no
    /// event); with none, sleeps in poll(2) until the completion channel or the rdma_cm channel
    /// is readable, at most 100 ms at a time. Returns what the CQ held after arming.
    private func sleepUntilCompletionOrEvent(until deadline: Double) -> Result<[WorkCompletion], LinkFailure> {
        do throws(VerbsError) {
            try completions.requestNotification()
            let raced = try completions.poll(max: 16)
            if !raced.isEmpty { return .success(raced) }
            let millis = Int32(max(0, min((deadline - MonotonicClock.now()) * 1000, 100)))
            var fds = [pollfd(fd: completionChannel.descriptor.rawValue, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: channel.descriptor.rawValue, events: Int16(POLLIN), revents: 0)]
            // EINTR and timeouts go back to the caller's loop, which polls the CQ and the deadline.
            _ = poll(&fds, 2, millis)
            if fds[0].revents != 0 { _ = try completionChannel.takeEvents() }
            if fds[1].revents != 0, let cause = brokenCause(force: true) { return .failure(.broken(cause, mayHaveExecuted: true)) }
            return .success([])
        } catch {
            return .failure(.fault("\(error)"))
        }
    }

    /// A failed ibv_post_send: a QP the connection's end moved to error is a broken link
    /// (nothing of this request ran); a QP still ready to send means the request itself is bad.
    private func postFailure(_ error: VerbsError, posted: Bool) -> LinkFailure {
        let state: QueuePair.State?
        do throws(VerbsError) { state = try queuePair.queryState() } catch { state = nil }
        if state == .readyToSend { return .fault("\(error)") }
        return .broken("\(error) (QP \(queuePair.number) \(state.map { "\($0)" } ?? "state unknown"))", mayHaveExecuted: posted)
    }

    /// Reads the event channel at most once a millisecond (unless `force`): DISCONNECTED (the
    /// daemon revoked or closed the connection) is answered with `disconnect()`, which moves
    /// our QP to error so whatever is posted flushes at once instead of waiting for retries.
    /// Returns why the connection is gone, or nil while it is up.
    private func brokenCause(force: Bool) -> String? {
        if isDisconnected { return "the connection was disconnected" }
        let now = MonotonicClock.now()
        guard force || now - lastEventCheck >= 0.001 else { return nil }
        lastEventCheck = now
        while true {
            let event: CMEvent?
            do throws(VerbsError) { event = try channel.nextEvent() } catch { return "\(error)" }
            guard let event else { return nil }
            switch event.kind {
            case .disconnected, .deviceRemoval, .addressChange:
                isDisconnected = true
                answerDisconnect()
                return "rdma_cm reported \(event.kind)"
            default:
                continue  // TIMEWAIT_EXIT and the like say nothing about the QP's use.
            }
        }
    }

    /// The DREP the daemon waits for; failure means the id is already down, which is the goal.
    private func answerDisconnect() {
        do throws(VerbsError) { try id.disconnect() } catch { /* already disconnected: nothing to answer */ }
    }

    /// Disconnects (unless the other side did) and releases QP, id, MR, PD and buffer.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        if !isDisconnected { answerDisconnect() }
        Self.closeQuietly(domain)
        staging.deallocate()
    }

    /// Closing after the connection broke: a failure here leaves an object to its deinit and
    /// cannot change what the peer does next (it reconnects with fresh objects).
    private static func closeQuietly(_ domain: ClientDomain) {
        do throws(VerbsError) { try domain.close() } catch { /* left to the objects' deinit */ }
    }
}
