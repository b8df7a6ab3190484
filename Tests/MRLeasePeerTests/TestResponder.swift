import Foundation
import Glibc
import MRLeaseGrant
import TestSupport
import Verbs

/// A minimal stand-in for mrleased's listener, written with the Verbs CM wrappers: it listens on
/// the guest's rdma_cm address, checks connect requests' grant id and secret, and accepts with
/// an `AcceptPrivateData` for an MR of its own (pinned anonymous memory), or rejects with
/// whatever reason the test sets. It can revoke: disconnect its peers, deregister the MR,
/// reject for a while, then register the same memory again (new rkey, next generation).
///
/// It checks the peer library, not the daemon: it runs on its own thread, polling its channel,
/// because a `Peer` blocks the test's thread while it connects and waits for completions.
final class TestResponder: @unchecked Sendable {
    enum Answer: Sendable {
        case accept
        case reject(RejectPrivateData)
    }

    let grantID: UInt64 = 77
    let secret: GrantSecret
    let length: Int
    let memory: UnsafeMutableRawPointer
    let descriptor: GrantDescriptor
    private let access: GrantAccess
    private let alignment: UInt32

    // The responder thread's (set up before it starts).
    private let channel: CMEventChannel
    private let listener: CMID
    private let domain: ClientDomain
    private let completions: CompletionQueue
    private var memoryRegion: MemoryRegion?
    /// Accepted connections. The QP is held here: a CMID holds its QP only weakly, and a QP
    /// nobody holds is destroyed at once (the peer would then talk to a QP number that is gone).
    private var peers: [(id: CMID, queuePair: QueuePair)] = []
    private var restoreAt: Double?

    // Shared with the test's thread, under `lock`.
    private let lock = NSLock()
    private var answer = Answer.accept
    private var nextAnswerAfterRestore = Answer.accept
    private var commands: [() -> Void] = []
    private var stopping = false
    private var _generation: UInt64 = 1
    private var _rkey: UInt32 = 0
    private var _events: [String] = []
    private let finished = DispatchSemaphore(value: 0)

    init(address: String, length: Int = 1 << 20, access: GrantAccess = .all, alignment: UInt32 = 1) throws {
        self.length = length
        self.access = access
        self.alignment = alignment
        secret = try GrantSecret.random()
        memory = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 4096)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        channel = try CMEventChannel()
        listener = try channel.createID()
        try listener.bind(address: address, port: 0)
        try listener.listen()
        guard let context = try listener.context() else { throw TestFailure("the bound listener has no device") }
        domain = try ClientDomain(context: context)
        completions = try context.createCompletionQueue(entries: 16)
        let port = try listener.localPort()
        var raw = in_addr()
        guard inet_pton(AF_INET, address, &raw) == 1 else { throw TestFailure("\(address) is not IPv4") }
        descriptor = GrantDescriptor(endpoint: GrantEndpoint(address: .ipv4(UInt32(bigEndian: raw.s_addr)), port: port),
                                     grantID: grantID, secret: secret)
        try register()
        let thread = Thread { [self] in run() }
        thread.start()
        startWatchdog(seconds: 120)
    }

    /// A hung test would otherwise hold the guest until vm-test's boot timeout with nothing in
    /// the log: after `seconds` without `stop()`, print what the responder saw and abort.
    private func startWatchdog(seconds: Double) {
        let thread = Thread { [self] in
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if lock.withLock({ stopping }) { return }
                usleep(100_000)
            }
            FileHandle.standardError.write(Data("TestResponder watchdog: not stopped after \(seconds) s; events: \(events)\n".utf8))
            abort()
        }
        thread.start()
    }

    deinit { memory.deallocate() }

    var generation: UInt64 { lock.withLock { _generation } }
    var rkey: UInt32 { lock.withLock { _rkey } }
    /// What happened, in order: "accept g1", "reject region-revoking", "disconnected" …
    var events: [String] { lock.withLock { _events } }

    func setAnswer(_ new: Answer) { lock.withLock { answer = new } }

    /// Disconnects every peer and deregisters the MR now; answers `whileDown` to connect
    /// requests; after `downFor` seconds (nil: never) registers the memory again with the next
    /// generation and answers `afterwards`. Returns once the MR is gone.
    func revoke(whileDown: Answer, downFor: Double?, afterwards: Answer = .accept) throws {
        try perform { [self] in
            for peer in peers {
                do throws(VerbsError) { try peer.id.disconnect() } catch { note("disconnect failed: \(error)") }
            }
            do throws(VerbsError) { try memoryRegion?.deregister() } catch { note("dereg failed: \(error)") }
            memoryRegion = nil
            lock.withLock {
                answer = whileDown
                nextAnswerAfterRestore = afterwards
            }
            restoreAt = downFor.map { now() + $0 }
            note("revoked")
        }
    }

    /// Deregisters the MR without disconnecting anyone (a peer's next request gets a NAK,
    /// REM_ACCESS_ERR); registers the memory again after `downFor` seconds, next generation.
    func deregisterOnly(downFor: Double) throws {
        try perform { [self] in
            do throws(VerbsError) { try memoryRegion?.deregister() } catch { note("dereg failed: \(error)") }
            memoryRegion = nil
            lock.withLock { nextAnswerAfterRestore = answer }
            restoreAt = now() + downFor
            note("deregistered")
        }
    }

    /// Destroys the peers' QPs without a word to them (no DREQ): their requests go unanswered.
    /// Their ids stay until the peers disconnect.
    func dropQueuePairsSilently() throws {
        try perform { [self] in
            for peer in peers {
                do throws(VerbsError) { try peer.queuePair.destroy() } catch { note("destroy QP failed: \(error)") }
            }
            note("dropped QPs")
        }
    }

    /// Stops the thread and releases everything (peers' ids and QPs, MR, PD, listener).
    func stop() {
        let already = lock.withLock { () -> Bool in
            defer { stopping = true }
            return stopping
        }
        if !already { finished.wait() }
    }

    /// Runs `body` on the responder's thread and waits for it.
    private func perform(_ body: @escaping () -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        lock.withLock { commands.append { body(); done.signal() } }
        guard done.wait(timeout: .now() + 10) == .success else { throw TestFailure("the responder did not run a command within 10 s") }
    }

    private func note(_ text: String) {
        lock.withLock { _events.append(text) }
        FileHandle.standardError.write(Data("responder: \(text)\n".utf8))
    }

    private func now() -> Double { Date().timeIntervalSince1970 }

    private func register() throws(VerbsError) {
        let region = try domain.register(address: memory, length: length, access: [.localWrite, .remoteWrite, .remoteRead, .remoteAtomic])
        memoryRegion = region
        lock.withLock { _rkey = region.rkey }
    }

    private func run() {
        while true {
            let (stop, pending) = lock.withLock { () -> (Bool, [() -> Void]) in
                defer { commands = [] }
                return (stopping, commands)
            }
            if stop { break }
            pending.forEach { $0() }
            if let restoreAt, now() >= restoreAt {
                self.restoreAt = nil
                do throws(VerbsError) { try register() } catch { note("register failed: \(error)") }
                lock.withLock {
                    _generation += 1
                    answer = nextAnswerAfterRestore
                }
                note("restored g\(generation)")
            }
            do throws(VerbsError) {
                while let event = try channel.nextEvent() { handle(event) }
            } catch {
                note("rdma_get_cm_event: \(error)")
            }
            var fd = pollfd(fd: channel.descriptor.rawValue, events: Int16(POLLIN), revents: 0)
            _ = poll(&fd, 1, 5)  // events, or another look at commands and the restore time
        }
        for peer in peers {
            do throws(VerbsError) { try peer.id.destroy() } catch { note("destroy: \(error)") }
        }
        peers = []
        do throws(VerbsError) {
            try domain.close()
            try listener.destroy()
        } catch {
            note("close: \(error)")
        }
        finished.signal()
    }

    private func handle(_ event: CMEvent) {
        switch event.kind {
        case .connectRequest:
            answerRequest(event)
        case .disconnected:
            note("disconnected")
            // Every DISCONNECTED is answered; the id then goes (its QP with it).
            do throws(VerbsError) {
                try event.id.disconnect()
            } catch {
                // Ours was sent first (a revocation): nothing left to answer.
            }
            do throws(VerbsError) { try event.id.destroy() } catch { note("destroy: \(error)") }
            peers.removeAll { $0.id === event.id }
        case .established:
            note("established")
        default:
            note("\(event.kind)")
        }
    }

    private func answerRequest(_ event: CMEvent) {
        let reply: Answer
        do throws(GrantFormatError) {
            let request = try ConnectPrivateData(decoding: event.privateData)
            if request.grantID != grantID {
                reply = .reject(RejectPrivateData(reason: .unknownGrant))
            } else if request.secret != secret {
                reply = .reject(RejectPrivateData(reason: .badSecret))
            } else {
                reply = lock.withLock { answer }
            }
        } catch {
            reply = .reject(RejectPrivateData(reason: .malformed))
        }
        do {
            switch reply {
            case .reject(let reject):
                note("reject \(reject.reason)")
                try event.id.reject(privateData: reject.encoded())
            case .accept:
                guard let region = memoryRegion else {
                    note("reject (no MR)")
                    try event.id.reject(privateData: RejectPrivateData(reason: .regionRevoking, retryAfterMilliseconds: 10).encoded())
                    return
                }
                let queuePair = try domain.createQueuePair(on: event.id, sendQueue: completions, receiveQueue: completions)
                let accept = try AcceptPrivateData(access: access, remoteAddress: region.address, length: UInt64(length), rkey: region.rkey,
                                                   transferAlignment: alignment, generation: generation, grantID: grantID)
                try event.id.accept(privateData: accept.encoded())
                peers.append((event.id, queuePair))
                note("accept g\(generation)")
            }
        } catch {
            note("answering a request failed: \(error)")
        }
    }
}
