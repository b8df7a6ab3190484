import ArgumentParser
import Foundation
import LinuxFile
import MRLeaseClient

/// `mrlease register`: registers a file range, then holds it and prints its events until
/// SIGINT/SIGTERM. The region lives as long as this process's connection.
struct RegisterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "register",
        abstract: "Register a file range as an RDMA MR, hold it, and print its events until interrupted.",
        discussion: """
        Opens PATH (read-write when write or atomic access is asked, else read-only) and passes \
        the fd to mrleased; with --count N, N ranges of --length back to back in one \
        register-batch request, all or none. Prints each region and its keys, then one line per event with a \
        timestamp (revoking, revoked, restored, lost) until SIGINT or SIGTERM; closing the \
        connection makes mrleased deregister the region. Revocations are acknowledged at once \
        (this process issues no RDMA); --no-ack leaves them to the daemon's deadline instead.
        With --grant, each region is also granted to remote peers (mrleased must listen: its \
        `listen` setting) and one line `descriptor REGION GRANT mrlg…` per region is printed, holding \
        the credential a peer connects with (`mrlease peer DESCRIPTOR …`); give it only to the \
        peer. The grants end with this process. While it runs, `mrlease grant REGION` and \
        `mrlease revoke-grant GRANT` from another process of this user make and end grants on \
        its regions through it (its control socket, register-PID.sock in $XDG_RUNTIME_DIR/mrlease).
        If mrleased dies, this process releases the lease it left on the file (else a truncate \
        or open of it would wait lease-break-time), prints what it did, and exits 1.
        Exit status: 0 interrupted after registering; 1 refused, unreachable, or the daemon \
        went away; 2 usage.
        """
    )

    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "The file to register.") var path: String
    @Option(help: ArgumentHelp("Byte offset in the file: a multiple of the page size (K, M, G suffixes: KiB, MiB, GiB).", valueName: "bytes"))
    var offset: String = "0"
    @Option(help: ArgumentHelp("Bytes to register (K, M, G suffixes).", valueName: "bytes"))
    var length: String
    @Option(help: "Comma list of read, write, atomic.") var access: String = "read"
    @Option(help: "odp, pinned, or any (the daemon chooses).") var strategy: String = "any"
    @Option(help: ArgumentHelp("follow or revoke: what an ODP region does when the file's layout changes (default: the daemon's layout-policy).", valueName: "policy"))
    var layoutPolicy: String?
    @Option(help: "A label shown by `mrlease list`.") var tag: String?
    @Option(help: ArgumentHelp("Register COUNT ranges of --length back to back from --offset, in one register-batch request (1-64).", valueName: "count"))
    var count: Int = 1
    @Flag(inversion: .prefixedNo, help: "Acknowledge revoking events at once (--no-ack: let the deadline pass).")
    var ack = true
    @Flag(help: "Print one JSON object per line: the registration, then each event.")
    var json = false
    @Flag(help: "Grant each region to remote peers and print its descriptor (the daemon must listen).")
    var grant = false
    @Option(help: ArgumentHelp("With --grant: what peers may do, a comma list of read, write, atomic (default: the region's access).", valueName: "access"))
    var grantAccess: String?
    @Option(help: ArgumentHelp("With --grant: peers connected at once (default 1).", valueName: "count"))
    var maxPeers: UInt64?
    @Option(help: ArgumentHelp("With --grant: the grant ends after this many milliseconds.", valueName: "ms"))
    var grantExpiresMs: UInt64?
    @Option(help: ArgumentHelp("After registering, write TEXT at the region's start through a shared mapping of this process's own fd (needs write access).", valueName: "text"))
    var write: String?

    func validate() throws {
        guard Self.bytes(offset) != nil else { throw ValidationError("--offset takes a byte count such as 0, 4096 or 2M (got '\(offset)')") }
        guard let length = Self.bytes(length), length > 0 else { throw ValidationError("--length takes a positive byte count such as 4096 or 2M (got '\(length)')") }
        guard Self.accessSet(access) != nil else { throw ValidationError("--access takes a comma list of read, write, atomic (got '\(access)')") }
        guard StrategyPreference(rawValue: strategy) != nil else { throw ValidationError("--strategy takes odp, pinned or any (got '\(strategy)')") }
        if let layoutPolicy, RegionLayoutPolicy(rawValue: layoutPolicy) == nil {
            throw ValidationError("--layout-policy takes follow or revoke (got '\(layoutPolicy)')")
        }
        if let grantAccess, Self.accessSet(grantAccess) == nil { throw ValidationError("--grant-access takes a comma list of read, write, atomic (got '\(grantAccess)')") }
        if !grant, grantAccess != nil || maxPeers != nil || grantExpiresMs != nil {
            throw ValidationError("--grant-access, --max-peers and --grant-expires-ms go with --grant")
        }
        guard (1...Codec.maxBatchRanges).contains(count) else { throw ValidationError("--count takes 1 to \(Codec.maxBatchRanges) (one register-batch request)") }
        let (span, overflow) = length.multipliedReportingOverflow(by: UInt64(count))
        guard !overflow, Self.bytes(offset)!.addingReportingOverflow(span).overflow == false else {
            throw ValidationError("--offset + --count x --length is beyond 2^64 - 1")
        }
    }

    /// The ranges asked for: `count` of `length` bytes, back to back from `offset`.
    var ranges: [Request.Register] {
        let start = Self.bytes(offset)!, size = Self.bytes(length)!
        return (0..<UInt64(count)).map {
            Request.Register(offset: start + $0 * size, length: size, access: Self.accessSet(access)!,
                             strategy: StrategyPreference(rawValue: strategy)!,
                             layoutPolicy: layoutPolicy.flatMap(RegionLayoutPolicy.init(rawValue:)), tag: tag)
        }
    }

    func run() throws {
        // Blocked before anything else, so no thread started later can take the signal: both
        // arrive on the signalfd, polled with the socket.
        let signals = try SignalFD(signals: [SIGINT, SIGTERM])
        let (client, _) = try daemon.connect("register", acknowledgingRevocations: ack)
        let ranges = ranges
        let registrations = try daemonCall("register") { () throws(ClientError) in
            if count == 1 {
                let one = ranges[0]
                return [try client.register(path: path, offset: one.offset, length: one.length, access: one.access,
                                            strategy: one.strategy, layoutPolicy: one.layoutPolicy, tag: one.tag)]
            }
            return try client.registerBatch(path: path, ranges: ranges)
        }
        for (registration, range) in zip(registrations, ranges) { printRegistration(registration, at: range.offset) }
        if !json { emit("  holding \(count == 1 ? "it" : "them"); events follow (Ctrl-C releases \(count == 1 ? "it" : "them"))") }
        if let text = write { try writeThroughMapping(text, client: client, region: registrations[0].region) }
        var grants = Set<UInt64>()
        if grant {
            for registration in registrations {
                let made = try daemonCall("grant") { () throws(ClientError) in
                    try client.grant(region: registration.region, access: grantAccess.flatMap(Self.accessSet),
                                     expiresInMillis: grantExpiresMs, maxPeers: maxPeers)
                }
                grants.insert(made.grant)
                if json {
                    var object = WireJSON.object(.grant(made))
                    object["time"] = Self.now()
                    object["event"] = "granted"
                    emit(WireJSON.line(object))
                } else {
                    Self.printGrant(made)
                }
            }
        }
        let regions = registrations.map { String($0.region) }.joined(separator: ", ")
        // Without it the regions still work; only `mrlease grant`/`revoke-grant` cannot reach them.
        let control: ControlListener?
        do { control = try ControlListener() } catch {
            control = nil
            printError("mrlease register: no control socket (mrlease grant/revoke-grant cannot reach this process): \(error)")
        }
        while true {
            while let event = try nextEvent(client) { printEvent(event) }
            var fds = [pollfd(fd: signals.descriptor.rawValue, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: client.descriptor.rawValue, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: control?.descriptor.rawValue ?? -1, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 3, -1) >= 0 || errno == EINTR else {
                printError("mrlease register: poll: errno \(errno)")
                throw ExitCode(1)
            }
            if fds[2].revents != 0, let control,
               let done = control.serveOne(client: client, regions: Set(registrations.map(\.region)), grants: &grants) {
                if json { emit(WireJSON.line(["time": Self.now(), "event": "control", "detail": done])) } else { emit(done) }
            }
            if fds[0].revents != 0, let signal = try signals.read().first {
                let name = signal.signal == SIGINT ? "SIGINT" : "SIGTERM"
                if json {
                    emit(WireJSON.line(["time": Self.now(), "event": "closing", "signal": name, "regions": registrations.map(\.region)]))
                } else {
                    emit("\(Self.now()) \(name): closing the connection; mrleased deregisters region\(count == 1 ? "" : "s") \(regions)")
                }
                client.close()
                return
            }
        }
    }

    /// The next event already read, or nil. When the daemon's connection has ended, prints
    /// what the client library did about the leases on the file (it releases those a dead
    /// mrleased left, so writers do not wait lease-break-time) and exits 1.
    func nextEvent(_ client: MRLeaseClient) throws -> Event? {
        do {
            return try client.nextEvent(timeout: .zero)
        } catch .disconnected(_, let end) {
            if json {
                let leases: [[String: Any]] = end.leases.map { ["regions": $0.regions, "outcome": Self.outcomeName($0.outcome), "detail": "\($0)"] }
                emit(WireJSON.line(["time": Self.now(), "event": "daemon-lost", "shutdownAnnounced": end.shutdownAnnounced, "leases": leases]))
            } else {
                emit("\(Self.now()) \(end)")
            }
            throw ExitCode(1)
        } catch {
            printError("mrlease register: \(error)")
            throw ExitCode(1)
        }
    }

    static func outcomeName(_ outcome: LeaseCleanup.Outcome) -> String {
        switch outcome {
        case .noLease: "no-lease"
        case .released: "released"
        case .heldByRunningProcess: "held-by-running-process"
        case .holderNotVisible: "holder-not-visible"
        case .failed: "failed"
        }
    }

    /// Stores `text` at the region's start through a MAP_SHARED mapping of the fd the daemon
    /// leased (the same open file, so no lease break): what an application writing its log does.
    func writeThroughMapping(_ text: String, client: MRLeaseClient, region: UInt64) throws {
        guard let fd = client.file(region: region), let start = Self.bytes(offset) else { return }
        let bytes = Array(text.utf8)
        guard bytes.count <= Self.bytes(length)! else {
            printError("mrlease register: --write text is longer than the region")
            throw ExitCode(2)
        }
        do {
            let mapping = try SharedMapping(fd: fd, offset: start, length: max(bytes.count, 1), protection: .readWrite)
            mapping.base.copyMemory(from: bytes, byteCount: bytes.count)
            try mapping.flush()
            try mapping.unmap()
        } catch {
            printError("mrlease register: writing through the mapping failed: mmap/msync \(error.symbolicName)")
            throw ExitCode(1)
        }
        if json {
            emit(WireJSON.line(["time": Self.now(), "event": "written", "region": region, "bytes": bytes.count]))
        } else {
            emit("\(Self.now()) wrote \(bytes.count) bytes at offset \(start) through a shared mapping of the leased fd")
        }
    }

    /// `descriptor REGION GRANT mrlg…` (what a script reads), then the grant's terms.
    static func printGrant(_ made: GrantResult) {
        emit("descriptor \(made.region) \(made.grant) \(made.descriptor)")
        emit("  grant \(made.grant) on region \(made.region): \(made.access.map(\.rawValue).sorted().joined(separator: ",")) for up to \(made.maxPeers) peer\(made.maxPeers == 1 ? "" : "s") at \(made.endpoint), transfer alignment \(made.alignment)")
    }

    func printRegistration(_ r: Registration, at start: UInt64) {
        if json {
            var object = WireJSON.object(.register(r))
            object["time"] = Self.now()
            object["event"] = "registered"
            object["path"] = path
            return emit(WireJSON.line(object))
        }
        emit("\(Self.now()) registered region \(r.region): \(path) [\(start), +\(r.length)) \(access)")
        emit("  strategy \(r.strategy.rawValue) on \(r.device), \(r.backing.rawValue): \(r.strategyReason)")
        if let policy = r.layoutPolicy { emit("  layout policy \(policy.rawValue)") }
        emit("  lkey \(Format.hex(r.lkey))  rkey \(Format.hex(r.rkey))  address 0x\(String(r.address, radix: 16))")
    }

    func printEvent(_ event: Event) {
        if json {
            var object = WireJSON.object(event)
            object["time"] = Self.now()
            switch event {
            case .revoking, .revokingFile: object["acknowledged"] = ack
            default: break
            }
            return emit(WireJSON.line(object))
        }
        emit("\(Self.now()) \(Self.describe(event, acknowledged: ack))")
    }

    static func describe(_ event: Event, acknowledged: Bool) -> String {
        switch event {
        case .revoking(let r):
            return "revoking region \(r.region) (\(r.reason.rawValue), deadline \(r.deadlineMillis) ms)" + (acknowledged ? ": acknowledged" : "")
        case .revokingFile(let r):
            return "revoking \(r.count) regions of file \(r.file) (\(r.reason.rawValue), deadline \(r.deadlineMillis) ms)" + (acknowledged ? ": acknowledged" : "")
        case .revoked(let region):
            return "revoked region \(region)"
        case .restored(let r):
            return "restored region \(r.region) rkey \(Format.hex(r.rkey)) lkey \(Format.hex(r.lkey)) "
                + (r.layoutChanged ? "layout changed" : "layout unchanged")
        case .lost(let l):
            let detail = l.message.flatMap { $0 == l.reason.rawValue ? nil : ": \($0)" } ?? ""
            return "lost region \(l.region) (\(l.reason.rawValue))\(detail)"
        case .unlinked(let region):
            return "region \(region)'s file was unlinked: the region stays registered; deregister it to free the space"
        case .peerConnected(let p):
            return "peer \(p.peer) connected to grant \(p.grant) of region \(p.region) from \(p.address) (generation \(p.generation))"
        case .peerDisconnected(let p):
            return "peer \(p.peer) of grant \(p.grant) on region \(p.region) disconnected (\(p.reason.rawValue))"
        case .layout(let l):
            return "region \(l.region)'s range moved in the file (layout \(l.layout.rawValue), file now \(l.size) bytes): its MR follows the file, keys unchanged"
        }
    }

    static func now() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }

    /// "4096", "2M", "1G": bytes, with binary K/M/G suffixes.
    static func bytes(_ text: String) -> UInt64? {
        let shifts: [Character: UInt64] = ["K": 10, "k": 10, "M": 20, "m": 20, "G": 30, "g": 30]
        guard let last = text.last else { return nil }
        guard let shift = shifts[last] else { return UInt64(text) }
        guard let number = UInt64(text.dropLast()), number <= UInt64.max >> shift else { return nil }
        return number << shift
    }

    static func accessSet(_ text: String) -> Set<Access>? {
        var set: Set<Access> = []
        for word in text.split(separator: ",") {
            guard let access = Access(rawValue: String(word)) else { return nil }
            set.insert(access)
        }
        return set.isEmpty ? nil : set
    }
}
