import FuzzSupport
import Glibc
import Logging
import MRLeaseEngine
import MRLeaseGrant
import MRLeaseProtocol
import SystemPackage
import TestSupport

@testable import LinuxFile
@testable import MRLeaseDaemon

// libFuzzer's entry for sequences: each input is a run of steps against one in-process
// `Daemon` with a recording registrar and its peer service on a recording rdma_cm: requests
// from up to three clients, lease breaks and closes by other openers, size changes and writes,
// unlinks, loop turns, timer expiries, disconnects, and peers' connects (with a grant's own
// private data or not), ESTABLISHED or never, and their ends. The daemon reads every request,
// lease signal, inotify event and CM event through its own `handle`, as its loop would.
//
// Input: steps until the input ends (at most `maxSteps`); a step is an opcode byte and its
// operands (see `step`). Past the end every byte reads 0.
// Time: the engine arms deadlines from CLOCK_MONOTONIC, so a tick fires the timers due a
// chosen span after the real clock: nothing, the layout debounce, the quiesce deadline, the
// restore backoffs, a peer's handshake bound, a grant's expiry. A run takes microseconds, far
// below every span.
// MRLEASED_FUZZ_TRACE=1 prints each step and every packet both ways (to replay an artifact:
// `MRLEASED_FUZZ_TRACE=1 .build-fuzz/release/SequenceFuzzer ARTIFACT`).
// Checked after every step: the engine's indexes agree (`indexProblems`), every packet fits
// and decodes; a rejected connection's rdma_cm id is destroyed. After every input: every client
// goes, and nothing may be left behind (regions, files, leases, grants, peers, rdma_cm ids,
// PDs); the files are reset, so each input starts from the same state.

final class SequenceHarness {
    static let clientSlots = 3
    static let maxSteps = 128
    /// Tick spans (ns after the real clock): 0, 1 ms, past the 20 ms layout debounce, past the
    /// 100 ms quiesce, past the first 500 ms backoff, past the 2 s backoff cap, an hour, a year,
    /// past the 5 s handshake bound.
    static let spans: [UInt64] = [0, 1_000_000, 25_000_000, 150_000_000, 700_000_000, 3_000_000_000,
                                  3_600_000_000_000, 365 * 86_400_000_000_000, 6_000_000_000]
    static let sizes = [0, 4096, 8192, 3 * 4096 + 100, 1 << 20, 2 << 20]
    static let breakerFlags = [O_RDONLY, O_WRONLY, O_RDWR, O_RDWR | O_TRUNC]

    let registrar = RecordingRegistrar()
    let peerVerbs = RecordingPeerVerbs()
    let daemon: Daemon
    let files: FuzzFiles
    var clients: [FuzzClient?] = Array(repeating: nil, count: clientSlots)
    /// Region and grant ids the replies of this input named.
    var regions: [UInt64] = []
    var grants: [UInt64] = []
    /// The descriptors of the grants made this input, as their replies gave them.
    var descriptors: [String] = []

    init() throws {
        var template = Array("/tmp/mrleased-sequence-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed: \(errno)") }
        let scratch = String(cString: made)
        var configuration = DaemonConfiguration()
        configuration.socketPath = scratch + "/s.sock"
        configuration.maxBytesPerUID = 1 << 40
        configuration.listen = [GrantEndpoint(host: "192.0.2.1", port: 7471)!]
        var logger = Logger(label: "mrleased.fuzz")
        logger.logLevel = .critical
        // Two file reads per deregistration otherwise; the fuzzer checks the indexes instead.
        registrar.checksAtDeregistration = false
        daemon = try Daemon(configuration: configuration, environment: [:], logger: logger, registrar: registrar, peerVerbs: peerVerbs)
        files = FuzzFiles(directory: scratch)
    }

    var engine: Engine { daemon.engine! }

    func run(_ bytes: [UInt8]) {
        var input = FuzzInput(bytes)
        var steps = 0
        while !input.isAtEnd, steps < Self.maxSteps {
            if tracing { trace("step \(steps): opcode \(input.bytes[input.position] % 23) at byte \(input.position)") }
            step(&input)
            steps += 1
            deliver()
            let problems = engine.indexProblems()
            precondition(problems.isEmpty, "engine indexes after step \(steps): \(problems)")
            checkPeers()
        }
        finish()
    }

    /// One step: an opcode and its operands.
    func step(_ input: inout FuzzInput) {
        switch input.byte() % 23 {
        case 0: register(&input, batch: false)
        case 1: register(&input, batch: true)
        case 2: request(&input, "deregister") { "\"region\":\(FuzzRequests.id(&$0, known: self.regions))" }
        case 3: request(&input, "ack") { "\"region\":\(FuzzRequests.id(&$0, known: self.regions))" }
        case 4:
            request(&input, "ack") { input in
                let ids = (0...input.below(4)).map { _ in FuzzRequests.id(&input, known: self.regions) }
                return "\"regions\":[\(ids.map(String.init).joined(separator: ","))]"
            }
        case 5: ackWhatWasHeard(&input)
        case 6:
            request(&input, "list") { input in
                let flags = input.byte()
                var members = flags & 1 != 0 ? "\"all\":true" : ""
                if flags & 2 != 0 { members += (members.isEmpty ? "" : ",") + "\"after\":\(FuzzRequests.id(&input, known: self.regions))" }
                return members
            }
        case 7:
            let flags = input.byte()
            let hello = flags & 1 != 0, perFile = flags & 2 != 0
            request(&input, hello ? "hello" : "stats") { _ in hello ? "\"versions\":[1]" + (perFile ? ",\"revokingPerFile\":true" : "") : "" }
        case 8: request(&input, "verify") { "\"region\":\(FuzzRequests.id(&$0, known: self.regions))" }
        case 9: request(&input, "grant") { FuzzRequests.grant(&$0, regions: self.regions) }
        case 10: request(&input, "revoke-grant") { "\"grant\":\(FuzzRequests.id(&$0, known: self.grants))" }
        case 11: raw(&input)
        case 12: files.open(input.below(FuzzFiles.files.count), flags: input.pick(Self.breakerFlags))
        case 13: files.closeBreaker(input.below(FuzzFiles.maxBreakers))
        case 14:
            let which = input.byte()
            files.truncate(breaker: which & 0x80 != 0 ? Int(which & 7) : nil, file: Int(which & 3), to: input.pick(Self.sizes))
        case 15: files.write(file: input.below(FuzzFiles.files.count), at: Int(input.pick(FuzzRequests.offsets) % (2 << 20)))
        case 16: files.unlink(input.below(FuzzFiles.files.count))
        case 17: turn()
        case 18: daemon.fireTimers(now: Engine.now() + input.pick(Self.spans))
        case 19: disconnect(&input)
        case 20: peerConnect(&input)
        case 21: peerEstablished(&input)
        default: peerEnded(&input)
        }
    }

    /// The client in the slot the next byte names, connected if the slot is empty.
    func client(_ input: inout FuzzInput) -> FuzzClient? {
        let slot = input.below(Self.clientSlots)
        if clients[slot] == nil { clients[slot] = FuzzClient.connect(to: daemon) }
        return clients[slot]
    }

    /// Sends a request of `type` with the members `build` makes, and has the daemon read it.
    func request(_ input: inout FuzzInput, _ type: String, fds: [FileDescriptor] = [], _ build: (inout FuzzInput) -> String) {
        guard let client = client(&input) else { return }
        let packet = FuzzRequests.packet(type, id: client.nextID, build(&input))
        client.nextID += 1
        send(packet, fds: fds, from: client)
    }

    func send(_ packet: [UInt8], fds: [FileDescriptor], from client: FuzzClient) {
        guard client.send(packet, fds: fds) else { return }
        daemon.handle(Epoll.Ready(fd: client.session.descriptor.rawValue, events: .readable))
    }

    /// `register` or `register-batch` of 1 to 4 ranges on one of the files (or on a breaker's
    /// fd, or none).
    func register(_ input: inout FuzzInput, batch: Bool) {
        let which = input.byte()
        let fds: [FileDescriptor] = switch which % 8 {
        case 0..<4: [files.clientFDs[Int(which % 8)]]
        case 4, 5: files.breakers.isEmpty ? [] : [files.breakers[Int(which >> 3) % files.breakers.count].fd]
        case 6: [files.clientFDs[0], files.clientFDs[1]]
        default: []
        }
        if batch {
            request(&input, "register-batch", fds: fds) { input in
                "\"ranges\":[\((0...input.below(4)).map { _ in "{" + FuzzRequests.range(&input) + "}" }.joined(separator: ","))]"
            }
        } else {
            request(&input, "register", fds: fds) { FuzzRequests.range(&$0) }
        }
    }

    /// A client acks every region it heard `revoking` for (one `ack` with `regions`, or one
    /// `ack` each), as a well-behaved client does.
    func ackWhatWasHeard(_ input: inout FuzzInput) {
        guard let client = client(&input), !client.revoking.isEmpty else { return }
        let ids = client.revoking.sorted()
        let how = input.byte()
        if how & 2 != 0, !client.revokingFiles.isEmpty {
            for file in client.revokingFiles.sorted() {
                send(FuzzRequests.packet("ack", id: client.nextID, "\"file\":\"\(file)\""), fds: [], from: client)
                client.nextID += 1
            }
            client.revokingFiles = []
        } else if how & 1 == 0 {
            send(FuzzRequests.packet("ack", id: client.nextID, "\"regions\":[\(ids.map(String.init).joined(separator: ","))]"), fds: [], from: client)
            client.nextID += 1
        } else {
            for id in ids {
                send(FuzzRequests.packet("ack", id: client.nextID, "\"region\":\(id)"), fds: [], from: client)
                client.nextID += 1
            }
        }
    }

    /// Up to 255 bytes as they are, with a client's fd or none. An empty packet reads as the
    /// end of the stream (recvmsg returns 0 for it on SOCK_SEQPACKET): the client is gone.
    func raw(_ input: inout FuzzInput) {
        guard let client = client(&input) else { return }
        let flags = input.byte()
        let packet = input.take(Int(input.byte()))
        send(packet, fds: flags & 1 != 0 ? [files.clientFDs[Int(flags >> 1) & 3]] : [], from: client)
        if packet.isEmpty, let slot = clients.firstIndex(where: { $0 === client }) {
            clients[slot] = nil
            client.close()
        }
    }

    /// One turn of the daemon's loop, without waiting: lease signals, inotify events, clients
    /// that closed, and the timers due by the real clock.
    func turn() {
        do { try daemon.turn(maxWaitMillis: 0) } catch { fatalError("turn: \(error)") }
    }

    /// A client goes: it closes its end, and the daemon reads the end of stream now or (odd
    /// operand) at the next turn.
    func disconnect(_ input: inout FuzzInput) {
        let slot = input.below(Self.clientSlots), now = input.byte() & 1 == 0
        guard let client = clients[slot] else { return }
        clients[slot] = nil
        client.close()
        if now { daemon.handle(Epoll.Ready(fd: client.session.descriptor.rawValue, events: [.readable, .hangup])) }
    }

    /// Reads everything the daemon sent every client, letting it flush what it queued until
    /// nothing waits (each flush follows an emptied socket, so it sends at least one packet),
    /// and notes the regions and grants the replies name.
    func deliver() {
        for case let client? in clients {
            while true {
                guard let messages = client.receiveAll() else {
                    fatalError("the daemon closed a connection whose client reads everything")
                }
                for case .reply(let reply) in messages { note(reply) }
                let queued = client.session.outbox.count
                guard queued > 0, !client.session.closing else { break }
                daemon.handle(Epoll.Ready(fd: client.session.descriptor.rawValue, events: .writable))
                precondition(client.session.outbox.count < queued, "a flush into an empty socket sent nothing")
            }
        }
    }

    func note(_ reply: Reply) {
        guard case .success(let result) = reply.outcome else { return }
        switch result {
        case .register(let made): regions.append(made.region)
        case .registerBatch(let made): regions += made.map(\.region)
        case .grant(let made):
            grants.append(made.grant)
            descriptors.append(made.descriptor)
        default: break
        }
    }

    /// Every client goes; then nothing may be left behind, and the files are reset.
    func finish() {
        for case let client? in clients { client.close() }
        clients = Array(repeating: nil, count: Self.clientSlots)
        for session in Array(daemon.sessions.values) { daemon.disconnect(session, why: "end of input") }
        files.closeBreakers()
        // Lease signals and inotify events still queued are read now (they find no file), so
        // none reaches the next input's files through a reused fd number.
        turn()
        // Every timer still queued fires (they find nothing), so the heaps do not grow.
        daemon.fireTimers(now: Engine.now() + (1 << 62))
        let stats = engine.statistics()
        precondition(stats.regions == 0 && stats.files == 0 && stats.leasesHeld == 0,
                     "left behind after every client went: \(stats.regions) regions, \(stats.files) files, \(stats.leasesHeld) leases")
        let problems = engine.indexProblems()
        precondition(problems.isEmpty, "engine indexes after every client went: \(problems)")
        checkPeersGone()
        files.reset()
        regions = []
        grants = []
        descriptors = []
        registrar.steps.removeAll(keepingCapacity: true)
        registrar.ranges.removeAll(keepingCapacity: true)
        registrar.nextKey = 1
    }
}

nonisolated(unsafe) var harness: SequenceHarness?
let tracing = getenv("MRLEASED_FUZZ_TRACE").map { String(cString: $0) == "1" } ?? false

/// One trace line, unbuffered (a crash follows the line that explains it).
func trace(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = Glibc.write(STDERR_FILENO, bytes, bytes.count)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func sequenceFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if harness == nil {
        do { harness = try SequenceHarness() } catch { fatalError("harness: \(error)") }
    }
    harness!.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

@_cdecl("SequenceFuzzer_main")
public func sequenceFuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, sequenceFuzzerTestOneInput)
}
