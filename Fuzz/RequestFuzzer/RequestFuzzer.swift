import FuzzSupport
import Glibc
import LinuxFile
import Logging
import MRLeaseGrant
import MRLeaseEngine
import MRLeaseProtocol
import SystemPackage
import TestSupport

@testable import MRLeaseDaemon

// libFuzzer's entry for the daemon's request path: an in-process `Daemon` with a recording
// registrar and the peer service on a recording rdma_cm (no RDMA device is needed; `grant`
// and `revoke-grant` reach a listening peer service) answers each input as a packet from one client,
// `Daemon.answer(_:from:)` on a session over a socketpair, with the fds the input asks for.
//
// Input: byte 0 chooses the fds and receive flags, the rest is the packet, in which `$R`
// stands for a region the client holds (one is registered if it holds none) and `$G` for the
// last grant a reply made: ids are counters and random numbers a mutation would not guess, and
// `grant`, `verify`, `ack` and `revoke-grant` would otherwise stop at `unknown-region`.
//   bits 0-2: fds attached: none, a read-write file, a read-only file, a directory, two
//             files, a FIFO, a socket, an empty file; bit 3: the kernel cut the packet
//             (MSG_TRUNC); bit 4: fds were dropped; bit 5: which of two files of a kind.
// Checked beyond "never traps": every reply and event fits in maxMessageBytes and decodes;
// the engine's indexes agree (`indexProblems`); a client's disconnect leaves no region, file,
// lease or grant behind.

final class Harness {
    let scratch: String
    let registrar = RecordingRegistrar()
    let peerVerbs = RecordingPeerVerbs()
    let daemon: Daemon
    var session: ClientSession
    var peer: UnixSocket
    let readWrite: [FileDescriptor]
    let readOnly: [FileDescriptor]
    let empty: FileDescriptor
    let directory: FileDescriptor
    let fifo: FileDescriptor
    let socket: UnixSocket
    var inputs = 0
    var lastGrant: UInt64 = 0

    init() throws {
        var template = Array("/tmp/mrleased-fuzz-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed: \(errno)") }
        scratch = String(cString: made)
        var configuration = DaemonConfiguration()
        configuration.socketPath = scratch + "/s.sock"
        configuration.maxBytesPerUID = 1 << 40
        configuration.listen = [GrantEndpoint(host: "192.0.2.1", port: 7471)!]
        var logger = Logger(label: "mrleased.fuzz")
        logger.logLevel = .critical
        daemon = try Daemon(configuration: configuration, environment: [:], logger: logger, registrar: registrar, peerVerbs: peerVerbs)
        let directory = scratch
        func file(_ name: String, size: Int, _ mode: FileDescriptor.AccessMode) throws -> FileDescriptor {
            let fd = try FileDescriptor.open(FilePath(directory + "/" + name), mode, options: [.create, .closeOnExec],
                                             permissions: [.ownerReadWrite])
            guard mode == .readOnly || ftruncate(fd.rawValue, off_t(size)) == 0 else { fatalError("ftruncate: \(errno)") }
            return fd
        }
        readWrite = try [file("rw0", size: 1 << 20, .readWrite), file("rw1", size: 3 * 4096 + 100, .readWrite)]
        _ = try [file("ro0", size: 1 << 20, .readWrite), file("ro1", size: 8192, .readWrite)].map { try $0.close() }
        readOnly = try [file("ro0", size: 0, .readOnly), file("ro1", size: 0, .readOnly)]
        empty = try file("empty", size: 0, .readWrite)
        self.directory = try FileDescriptor.open(FilePath(directory), .readOnly, options: [.directory, .closeOnExec])
        guard mkfifo(directory + "/fifo", 0o600) == 0 else { fatalError("mkfifo: \(errno)") }
        fifo = try FileDescriptor.open(FilePath(directory + "/fifo"), .readWrite, options: [.nonBlocking, .closeOnExec])
        socket = try UnixSocket.pair().0
        (session, peer) = try Self.connect(daemon)
    }

    /// A new client: the daemon's end admitted as a session, the other end ours.
    static func connect(_ daemon: Daemon) throws -> (ClientSession, UnixSocket) {
        let known = Set(daemon.sessions.keys)
        let (ours, theirs) = try UnixSocket.pair()
        try theirs.setNonBlocking(true)
        try ours.setNonBlocking(true)
        daemon.admit(theirs)
        guard let owner = Set(daemon.sessions.keys).subtracting(known).first, let session = daemon.sessions[owner] else {
            fatalError("the daemon did not admit the socketpair")
        }
        return (session, ours)
    }

    func fds(_ selector: UInt8) -> [FileDescriptor] {
        let which = Int(selector >> 5) & 1
        let chosen: [FileDescriptor] = switch selector & 7 {
        case 0: []
        case 1: [readWrite[which]]
        case 2: [readOnly[which]]
        case 3: [directory]
        case 4: [readWrite[which], readOnly[which]]
        case 5: [fifo]
        case 6: [socket.descriptor]
        default: [empty]
        }
        // The daemon gets its own fds, as from SCM_RIGHTS (the same open file descriptions).
        return chosen.map { fd in
            let copy = fcntl(fd.rawValue, F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else { fatalError("F_DUPFD_CLOEXEC: \(errno)") }
            return FileDescriptor(rawValue: copy)
        }
    }

    func run(_ input: [UInt8]) {
        let selector = input.first ?? 0
        let packet = substitutingIDs(Array(input.dropFirst()))
        let fds = selector & 0x10 != 0 ? [] : fds(selector)
        let message = UnixSocket.Message(bytes: packet, fds: fds, truncated: selector & 0x08 != 0, fdsDropped: selector & 0x10 != 0)
        // The fuzzers' daemon pins inline (a stand-in registrar): every request is answered now.
        guard let reply = daemon.answer(message, from: session) else { fatalError("a reply left for later by an inline pin runner") }
        for fd in fds { _ = try? fd.close() }  // the daemon's copies; the engine dups what it keeps
        // As readRequests sends it: a list in pages, anything else whole.
        let encoded = if case .success(.list(let page)) = reply.outcome, let id = reply.id {
            Codec.encodeList(id: id, regions: page.regions)
        } else {
            Codec.encode(reply)
        }
        checkServerPacket(encoded, "reply")
        if case .success(.grant(let made)) = reply.outcome { lastGrant = made.grant }
        guard daemon.send(encoded, to: session, what: "replies") else { fatalError("the session was dropped") }
        drain()
        inputs += 1
        if inputs % 64 == 0 {
            do { try daemon.turn(maxWaitMillis: 0) } catch { fatalError("turn: \(error)") }
            drain()
        }
        if inputs % 2048 == 0 || (daemon.engine?.statistics().regions ?? 0) > 1024 { reconnect() }
    }

    /// `packet` with `$R` and `$G` replaced by a region the client holds and the last grant.
    func substitutingIDs(_ packet: [UInt8]) -> [UInt8] {
        guard packet.count >= 2 else { return packet }
        var out: [UInt8] = []
        var index = 0
        while index < packet.count {
            if packet[index] == UInt8(ascii: "$"), index + 1 < packet.count,
               let id = packet[index + 1] == UInt8(ascii: "R") ? heldRegion() : packet[index + 1] == UInt8(ascii: "G") ? lastGrant : nil {
                out += Array(String(id).utf8)
                index += 2
            } else {
                out.append(packet[index])
                index += 1
            }
        }
        return out
    }

    /// A region the client holds: its newest, or one registered now on rw0 (0 if refused).
    func heldRegion() -> UInt64 {
        let engine = daemon.engine!
        if let newest = engine.list(owner: session.owner).map(\.id.rawValue).max() { return newest }
        let fd = fds(1)
        let answered = daemon.answer(UnixSocket.Message(bytes: Array(#"{"v":1,"type":"register","id":1,"offset":0,"length":4096,"access":["read","write"]}"#.utf8), fds: fd),
                                     from: session)
        guard let reply = answered else { fatalError("a reply left for later by an inline pin runner") }
        for copy in fd { _ = try? copy.close() }  // ours; the engine keeps its own duplicate
        // A refusal (a quota the input reached) leaves $R naming no region: an answer too.
        guard case .success(.register(let made)) = reply.outcome else { return 0 }
        return made.region
    }

    /// Reads what the daemon sent: each packet fits and decodes.
    func drain() {
        while true {
            switch try? peer.receive(maxSize: Codec.maxMessageBytes + 1) {
            case .message(let message)?:
                precondition(!message.truncated, "a packet longer than maxMessageBytes")
                checkServerPacket(message.bytes, "packet")
            case .endOfStream?: fatalError("the daemon closed the connection")
            default: return
            }
        }
    }

    /// The client goes; nothing of it may stay behind.
    func reconnect() {
        let engine = daemon.engine!
        precondition(engine.indexProblems().isEmpty, "engine indexes: \(engine.indexProblems())")
        daemon.disconnect(session, why: "fuzz rotation")
        _ = try? peer.close()
        let stats = engine.statistics()
        let grants = daemon.peers!.book.grants.count
        precondition(stats.regions == 0 && stats.files == 0 && stats.leasesHeld == 0 && grants == 0,
                     "left behind after disconnect: \(stats.regions) regions, \(stats.files) files, \(stats.leasesHeld) leases, \(grants) grants")
        precondition(engine.indexProblems().isEmpty, "engine indexes after disconnect: \(engine.indexProblems())")
        registrar.steps.removeAll(keepingCapacity: true)
        do { (session, peer) = try Self.connect(daemon) } catch { fatalError("reconnect: \(error)") }
    }
}


nonisolated(unsafe) var harness: Harness?

@_cdecl("LLVMFuzzerTestOneInput")
public func requestFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if harness == nil {
        do { harness = try Harness() } catch { fatalError("harness: \(error)") }
    }
    harness!.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

@_cdecl("RequestFuzzer_main")
public func requestFuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, requestFuzzerTestOneInput)
}
