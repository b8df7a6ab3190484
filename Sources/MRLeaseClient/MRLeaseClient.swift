@_exported import MRLeaseProtocol
import LinuxFile
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A connection to mrleased (docs/protocol.md): synchronous requests, and the events the
/// daemon pushes about this connection's regions.
///
/// Each request is sent, then packets are read until the reply with its id arrives; events that
/// arrive meanwhile are queued for `nextEvent`. Regions belong to the connection: closing it
/// (or exiting, or crashing) makes the daemon deregister all of them. If the daemon dies
/// instead, the client releases the leases it left on the files it keeps (`ConnectionEnd`, in
/// the `disconnected` error), and `reconnect()` registers those ranges again.
///
/// Not thread-safe: use one client from one thread (or guard it yourself).
///
/// ```swift
/// let client = try MRLeaseClient.connect()
/// let region = try client.register(path: "/mnt/pmem/data", offset: 0, length: 2 << 20, access: [.read, .write])
/// let grant = try client.grant(region: region.region, access: [.write])
/// // hand grant.descriptor to the peer (MRLeasePeer, `mrlease peer`): it connects to the daemon
/// // and gets the keys it may use; region.lkey and region.rkey reach nothing (docs/protocol.md §4)
/// while let event = try client.nextEvent(timeout: nil) {
///     if case .revoking(let r) = event { stopWriting(r.region); try client.ack(region: r.region) }
/// }
/// ```
public final class MRLeaseClient {
    /// Where mrleased listens unless configured otherwise.
    public static let defaultSocketPath = Codec.defaultSocketPath

    /// `$MRLEASED_SOCKET` when set and not empty, else `defaultSocketPath`.
    public static var configuredSocketPath: String {
        guard let value = getenv("MRLEASED_SOCKET").map({ String(cString: $0) }), !value.isEmpty else {
            return defaultSocketPath
        }
        return value
    }

    public let socketPath: String
    /// The connection; replaced by `reconnect()`.
    var socket: UnixSocket
    var nextID: UInt64 = 1
    var events: [Event] = []
    /// Ids of `ack` requests sent on the client's own initiative; their replies are dropped.
    var automaticAcks: Set<UInt64> = []
    /// The fd kept for each region, open for the region's life (a batch's regions share one):
    /// the file `register(path:)` opened, or a duplicate of the one `register(fd:)` was given.
    /// Through them the client releases the leases a dead daemon left (`ConnectionEnd`).
    var heldFiles: [UInt64: FileDescriptor] = [:]
    /// The range each kept region was registered with, for `reconnect()`.
    var heldRanges: [UInt64: Request.Register] = [:]
    /// Set once when the daemon's connection ends; every later call fails with it.
    public internal(set) var connectionEnd: ConnectionEnd?
    /// Whether a `revoking` with reason `shutdown` came: the daemon said it is stopping.
    var shutdownAnnounced = false

    /// Regions with a `revoking` event not yet acknowledged, in the order the events came.
    public internal(set) var pendingRevocations: [UInt64] = []
    /// The regions each file's `revoking-file` events named, until `ack(file:)`.
    var pendingFiles: [String: [UInt64]] = [:]
    /// What the last `hello` asked, for `reconnect()` to ask again.
    var helloAsked: (clientName: String?, revokingPerFile: Bool)?
    /// When true, every `revoking` event is acknowledged the moment it is read (the event is
    /// still queued for `nextEvent`). Only for a client that has no RDMA in flight to stop, such
    /// as a monitor: acknowledging tells the daemon it may deregister the MR at once.
    public var acknowledgesRevocations: Bool
    /// How long a request waits for its reply; nil waits forever.
    public var replyTimeout: Duration? = .seconds(60)
    /// The pauses before each retry of a registration the daemon answered `fd-not-received`
    /// (it was out of file descriptors and could not install the fd; nothing was done): one
    /// retry per entry, the fd sent again each time, then the error is thrown. The default,
    /// 10, 50 and 250 ms (at most 310 ms in all), rides out a transient shortage — another
    /// connection closing, a burst of registrations — without holding the caller long when
    /// the shortage lasts and the operator has to act (mrleased's `LimitNOFILE`). Empty: no
    /// retry.
    public var fdNotReceivedRetryDelays: [Duration] = [.milliseconds(10), .milliseconds(50), .milliseconds(250)]
    /// The daemon's answer to `hello`, once asked.
    public internal(set) var daemon: HelloResult?

    init(socket: UnixSocket, path: String, acknowledgesRevocations: Bool) {
        self.socket = socket
        self.socketPath = path
        self.acknowledgesRevocations = acknowledgesRevocations
    }

    deinit {
        closeHeldFiles()
    }

    /// Connects to the daemon at `path` (nil: `$MRLEASED_SOCKET`, else
    /// `/run/mrleased/mrleased.sock`).
    ///
    /// The corresponding C functions are `socket` and `connect`.
    public static func connect(path: String? = nil, acknowledgingRevocations: Bool = false) throws(ClientError) -> MRLeaseClient {
        let path = path ?? configuredSocketPath
        let socket: UnixSocket
        do { socket = try UnixSocket.connect(path: path) } catch { throw .connect(path: path, error) }
        return MRLeaseClient(socket: socket, path: path, acknowledgesRevocations: acknowledgingRevocations)
    }

    /// The connection's socket, to wait on in the application's own poll/epoll loop: when it
    /// is readable, call `nextEvent(timeout: .zero)` until it returns nil.
    public var descriptor: FileDescriptor { socket.descriptor }

    /// Closes the connection (the daemon then deregisters every region it made) and the files
    /// `register(path:)` opened. Later calls do nothing; later requests fail.
    public func close() {
        try? socket.close()
        closeHeldFiles()
    }

    /// Each held file once, though several regions may share it.
    func closeHeldFiles() {
        for raw in Set(heldFiles.values.map(\.rawValue)) { try? FileDescriptor(rawValue: raw).close() }
        heldFiles = [:]
        heldRanges = [:]
    }

    // MARK: Requests

    /// Negotiates the protocol version and learns what the daemon offers (devices, strategies,
    /// limits). Optional: every other request works without it.
    ///
    /// With `revokingPerFile`, a revocation comes as one `revokingFile` event per file (naming
    /// all of this connection's regions of it that it takes) instead of one `revoking` per
    /// region; answer it with `ack(file:)`. The result's `revokingPerFile` says whether the
    /// daemon does it (an older one sends `revoking` per region). `reconnect()` asks again.
    @discardableResult
    public func hello(clientName: String? = nil, revokingPerFile: Bool = false) throws(ClientError) -> HelloResult {
        guard case .hello(let result) = try call(.hello(.init(clientName: clientName, revokingPerFile: revokingPerFile))) else {
            throw unexpected(.hello)
        }
        daemon = result
        helloAsked = (clientName, revokingPerFile)
        return result
    }

    /// Registers `[offset, offset + length)` of the file behind `fd`, which goes to the daemon
    /// with `SCM_RIGHTS`. Its open mode bounds the access: `O_RDONLY` gives `read` only,
    /// `write` and `atomic` need `O_RDWR`.
    ///
    /// The daemon keeps its own copy of the fd, so closing yours afterwards does not affect the
    /// region. Keep it if you do I/O on the file: it is the open file the daemon leased, so
    /// using it never breaks the lease, while opening the path again would.
    ///
    /// The client keeps a duplicate of `fd` (one more fd, `FD_CLOEXEC`) until the region is
    /// deregistered or the client closes: if mrleased dies, its lease stays on this open file
    /// as long as anyone holds it, and the duplicate is what releases it (`ConnectionEnd`).
    ///
    /// A `fd-not-received` refusal (the daemon was out of file descriptors) is retried after
    /// each of `fdNotReceivedRetryDelays`, as every registration is; if the last retry is
    /// refused too, that refusal is thrown.
    public func register(fd: FileDescriptor, offset: UInt64, length: UInt64, access: Set<Access>,
                         strategy: StrategyPreference = .any, tag: String? = nil) throws(ClientError) -> Registration {
        let request = Request.Register(offset: offset, length: length, access: access, strategy: strategy, tag: tag)
        return try keeping(try duplicate(fd), for: [request]) { held throws(ClientError) in
            guard case .register(let result) = try callSendingFD(.register(request), fd: held) else { throw unexpected(.register) }
            return [result]
        }[0]
    }

    /// Registers several ranges of the file behind `fd` in one request (the fd goes once):
    /// all of them, or none when one fails (the error's `index` says which). At most
    /// `hello().limits.maxBatchRanges` ranges (`Codec.maxBatchRanges`) per call; one round trip
    /// to the daemon instead of one per range. Keeps one duplicate of `fd` for them all, and
    /// retries `fd-not-received`, as `register(fd:)` does.
    public func registerBatch(fd: FileDescriptor, ranges: [Request.Register]) throws(ClientError) -> [Registration] {
        try keeping(try duplicate(fd), for: ranges) { held throws(ClientError) in try sendBatch(ranges, fd: held) }
    }

    /// Opens `path` (`O_RDWR` when `write` or `atomic` is asked, else `O_RDONLY`) and registers
    /// it. The client keeps that fd open until the region is deregistered or the client
    /// closes: `file(region:)` returns it for I/O that must not break the daemon's lease.
    public func register(path: String, offset: UInt64, length: UInt64, access: Set<Access>,
                         strategy: StrategyPreference = .any, layoutPolicy: RegionLayoutPolicy? = nil,
                         tag: String? = nil) throws(ClientError) -> Registration {
        let request = Request.Register(offset: offset, length: length, access: access, strategy: strategy,
                                       layoutPolicy: layoutPolicy, tag: tag)
        return try keeping(try open(path, for: [request]), for: [request]) { fd throws(ClientError) in
            guard case .register(let result) = try callSendingFD(.register(request), fd: fd) else { throw unexpected(.register) }
            return [result]
        }[0]
    }

    /// `registerBatch(fd:ranges:)` on `path`, opened as `register(path:)` opens it (`O_RDWR`
    /// when any range asks for `write` or `atomic`); the regions share that fd, kept open until
    /// the last of them is deregistered or the client closes.
    public func registerBatch(path: String, ranges: [Request.Register]) throws(ClientError) -> [Registration] {
        try keeping(try open(path, for: ranges), for: ranges) { fd throws(ClientError) in try sendBatch(ranges, fd: fd) }
    }

    func sendBatch(_ ranges: [Request.Register], fd: FileDescriptor) throws(ClientError) -> [Registration] {
        guard case .registerBatch(let results) = try callSendingFD(.registerBatch(ranges), fd: fd) else { throw unexpected(.registerBatch) }
        return results
    }

    /// `path` opened the way `ranges` need it.
    func open(_ path: String, for ranges: [Request.Register]) throws(ClientError) -> FileDescriptor {
        let writable = ranges.contains { $0.access.contains(.write) || $0.access.contains(.atomic) }
        let fd = openFile(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard fd >= 0 else { throw .system(op: "open \(path) \(writable ? "O_RDWR" : "O_RDONLY")", Errno(rawValue: errno)) }
        return FileDescriptor(rawValue: fd)
    }

    /// A close-on-exec duplicate of the application's `fd`: the same open file description.
    ///
    /// The corresponding C function is `fcntl` (`F_DUPFD_CLOEXEC`).
    func duplicate(_ fd: FileDescriptor) throws(ClientError) -> FileDescriptor {
        let raw = fcntl(fd.rawValue, F_DUPFD_CLOEXEC, 0)
        guard raw >= 0 else {
            throw .system(op: "fcntl(F_DUPFD_CLOEXEC) of fd \(fd.rawValue), kept to release the lease if mrleased dies", Errno(rawValue: errno))
        }
        return FileDescriptor(rawValue: raw)
    }

    /// Runs `register` with `fd` and keeps `fd` for the regions it made (closes it when it
    /// made none).
    func keeping(_ fd: FileDescriptor, for ranges: [Request.Register],
                 _ register: (FileDescriptor) throws(ClientError) -> [Registration]) throws(ClientError) -> [Registration] {
        do {
            let registrations = try register(fd)
            for (registration, range) in zip(registrations, ranges) {
                heldFiles[registration.region] = fd
                heldRanges[registration.region] = range
            }
            if registrations.isEmpty { try? fd.close() }  // ours, never shared: nothing to report
            return registrations
        } catch {
            try? fd.close()  // ours, never shared: the registration's error is the one to report
            throw error
        }
    }

    /// The fd the client keeps for `region` (opened by `register(path:)`, or the duplicate
    /// `register(fd:)` made), or nil.
    public func file(region: UInt64) -> FileDescriptor? { heldFiles[region] }

    /// Deregisters one of this connection's regions (a region made by another connection is
    /// `unknown-region`). Closes the file `register(path:)` opened for it either way (a
    /// batch's file once its last region goes).
    public func deregister(region: UInt64) throws(ClientError) {
        heldRanges[region] = nil
        if let fd = heldFiles.removeValue(forKey: region), !heldFiles.values.contains(fd) { try? fd.close() }
        pendingRevocations.removeAll { $0 == region }
        _ = try call(.deregister(region: region))
    }

    /// This connection's regions, every page of them (`list` with `after` until no `next`).
    /// With `allConnections`, those of every connection of this uid (of every uid for root),
    /// each with its owner's `pid`: what an operator's `mrlease list` shows.
    public func list(allConnections: Bool = false) throws(ClientError) -> [RegionList.Region] {
        var regions: [RegionList.Region] = []
        var after: UInt64?
        repeat {
            guard case .list(let page) = try call(.list(after: after, all: allConnections)) else { throw unexpected(.list) }
            regions += page.regions
            after = page.next
        } while after != nil
        return regions
    }

    /// The daemon's counters (all clients, not just this one).
    public func stats() throws(ClientError) -> Statistics {
        guard case .stats(let result) = try call(.stats) else { throw unexpected(.stats) }
        return result
    }

    /// Tells the daemon this client has stopped issuing RDMA to a `revoking` region, so it
    /// may deregister the MR now instead of at the deadline.
    public func ack(region: UInt64) throws(ClientError) {
        pendingRevocations.removeAll { $0 == region }
        _ = try call(.ack(region: region))
    }

    /// Tells the daemon this client has stopped using every region of `file` (`major:minor:inode`,
    /// a `revokingFile` event's `file`) that is revoking: one message, whatever their number.
    /// For a connection whose `hello` asked for `revokingPerFile`; call it once the event's last
    /// part (`more` false) has come.
    public func ack(file: String) throws(ClientError) {
        if let ids = pendingFiles.removeValue(forKey: file) {
            let acked = Set(ids)
            pendingRevocations.removeAll { acked.contains($0) }
        }
        _ = try call(.ackFile(file))
    }

    /// `ack` for many regions, in messages of up to `Codec.maxAckRegions`: what a client with
    /// thousands of regions on a broken file sends instead of one message per region.
    public func ack(regions: [UInt64]) throws(ClientError) {
        let acked = Set(regions)
        pendingRevocations.removeAll { acked.contains($0) }
        var start = 0
        while start < regions.count {
            let end = min(start + Codec.maxAckRegions, regions.count)
            _ = try call(.ackRegions(Array(regions[start..<end])))
            start = end
        }
    }

    /// Makes one of this connection's regions reachable by remote peers through the daemon's
    /// rdma_cm listener. The result's `descriptor` is the credential: give it only to the peer.
    /// The grant ends with `revokeGrant`, at its expiry, with the region, or when this
    /// connection closes.
    public func grant(region: UInt64, access: Set<Access>? = nil, expiresInMillis: UInt64? = nil,
                      maxPeers: UInt64? = nil) throws(ClientError) -> GrantResult {
        let request = Request.Grant(region: region, access: access, expiresInMillis: expiresInMillis, maxPeers: maxPeers)
        guard case .grant(let result) = try call(.grant(request)) else { throw unexpected(.grant) }
        return result
    }

    /// Ends a grant: its peers are disconnected, and its descriptor is refused from now on.
    public func revokeGrant(_ grant: UInt64) throws(ClientError) {
        _ = try call(.revokeGrant(grant: grant))
    }

    /// Compares the file's extent map now with the one recorded at registration.
    public func verify(region: UInt64) throws(ClientError) -> Verification {
        guard case .verify(let result) = try call(.verify(region: region)) else { throw unexpected(.verify) }
        return result
    }

    /// Acknowledges every revocation still pending, after reading whatever events have
    /// already arrived. Call it once all RDMA to those regions has stopped. Returns the regions
    /// acknowledged; their events stay queued for `nextEvent`.
    @discardableResult
    public func acknowledgeRevocations() throws(ClientError) -> [UInt64] {
        try drain()
        let regions = pendingRevocations
        // The files `revoking-file` named: one ack each, whatever their regions' number.
        for file in pendingFiles.keys.sorted() { try ack(file: file) }
        for region in pendingRevocations {
            do {
                try ack(region: region)
            } catch .refused(_, let error) where error.code == .unknownRegion {
                // Lost or deregistered meanwhile: nothing left to acknowledge.
            }
        }
        return regions
    }

    // MARK: The request core

    /// Sends `request` and returns the result of its reply, queueing events that come first.
    func call(_ request: Request, fds: [FileDescriptor] = []) throws(ClientError) -> ReplyResult {
        let id = try send(request, fds: fds)
        let op = "\(request.type.rawValue) reply"
        let deadline = replyTimeout.map { ContinuousClock.now + $0 }
        while true {
            guard let message = try receive(until: deadline, op: op) else {
                throw .timedOut(op: op, after: replyTimeout ?? .zero)
            }
            guard case .reply(let reply) = message else { continue }
            // A reply without id answers a request the daemon could not read (too large,
            // unknown envelope): with one request in flight, that is ours.
            guard reply.id == id || reply.id == nil else { continue }
            switch reply.outcome {
            case .success(let result):
                guard result.type == request.type else { throw unexpected(request.type) }
                return result
            case .failure(let error):
                throw .refused(request.type, error)
            }
        }
    }

    /// `call` for a request that passes `fd`, retrying a `fd-not-received` refusal after each
    /// of `fdNotReceivedRetryDelays` (events that come meanwhile are queued as ever); the
    /// refusal of the last try is thrown as it came.
    func callSendingFD(_ request: Request, fd: FileDescriptor) throws(ClientError) -> ReplyResult {
        var delays = fdNotReceivedRetryDelays[...]
        while true {
            do {
                return try call(request, fds: [fd])
            } catch .refused(_, let error) where error.code == .fdNotReceived && !delays.isEmpty {
                pause(delays.removeFirst())
            }
        }
    }

    /// Sleeps `duration`, resuming after a signal.
    ///
    /// The corresponding C function is `nanosleep`.
    func pause(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var wait = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000)), left = timespec()
        while nanosleep(&wait, &left) == -1 && errno == EINTR { wait = left }
    }

    /// Sends one request packet; returns its id.
    @discardableResult
    func send(_ request: Request, fds: [FileDescriptor] = []) throws(ClientError) -> UInt64 {
        let id = nextID
        nextID += 1
        do { try socket.send(Codec.encode(request, id: id), fds: fds) } catch {
            if error == .brokenPipe || error == .connectionReset { throw connectionEnded(op: "send \(request.type.rawValue)") }
            throw .system(op: "send \(request.type.rawValue)", error)
        }
        return id
    }

    func unexpected(_ type: RequestType) -> ClientError {
        .malformedReply(op: "\(type.rawValue) reply", ProtocolError(.badRequest, "the reply's result is not a \(type.rawValue) result"))
    }
}

/// open(2), named apart from the client's own `open(_:for:)`: the fd, or -1 with errno set.
private func openFile(_ path: String, _ flags: Int32) -> Int32 { open(path, flags) }
