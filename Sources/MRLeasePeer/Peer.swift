import MRLeaseGrant
import Verbs

/// A remote peer of one mrleased grant: connects with a `GrantDescriptor` over rdma_cm and
/// reads, writes and (where granted) updates the region with one-sided RDMA. Offsets are
/// relative to the region's first byte.
///
/// Every operation is checked against the current connection's terms before anything is
/// posted (`TransferRules`: bounds, granted access, the grant's transfer alignment, 8-byte
/// atomics) and refused with `PeerError.refused` otherwise: nothing is ever sent that could
/// land outside the region or be corrupted by the device.
///
/// **Revocation.** When the daemon revokes the region (a lease break) it disconnects every peer
/// QP: posted requests complete with WR_FLUSH_ERR (or REM_ACCESS_ERR once the MR is gone) and
/// the event channel reports DISCONNECTED, which the peer answers with `rdma_disconnect`. The
/// peer then drops the connection, reconnects with backoff (10 ms doubling to 1 s, at least the
/// daemon's retry-after; reject `region-revoking` while the region is down), takes the new
/// generation, rkey, address, length and alignment from the new accept, checks the operation
/// again under them, and retries it: a read or write sees a delay, not an error. It gives up
/// with an error when the daemon's reject is final (region-lost, revoked, unknown-grant,
/// bad-secret, expired …) or after `PeerOptions.reconnectTimeout`.
///
/// **Atomics are never re-executed blindly.** A compare-and-swap or fetch-and-add whose request
/// was posted when the connection broke may have been executed by the responder (its ACK lost
/// with the connection): re-running it could add twice or swap against a value it wrote itself.
/// So the peer reconnects and throws `PeerError.atomicOutcomeUnknown` (with the new generation):
/// the application reads the word and decides. Only where the outcome is known — the connection
/// was already seen broken before posting, or the responder NAKed the request (REM_ACCESS_ERR:
/// the MR was gone, nothing executed) — is the atomic retried after the reconnect.
///
/// **Persist** (`persist()`) is READ-after-WRITE (`PersistMethod.readAfterWrite`): see there.
/// Writes that completed under an old generation were executed by the responder before the
/// revocation (an RC WRITE completes on the responder's ACK); a persist that has to reconnect
/// re-issues its READ under the new generation, ordering nothing new, and succeeds.
///
/// Not thread-safe: one thread uses a peer (it busy-polls its completion queue).
public final class Peer {
    public let descriptor: GrantDescriptor
    public let options: PeerOptions
    /// What this build uses for `persist()`.
    public static let persistMethod = PersistMethod.readAfterWrite
    /// The terms of the current (or last) connection.
    public private(set) var terms: GrantTerms
    public private(set) var statistics = PeerStatistics()
    var connection: PeerConnection?
    /// The application's registered buffers (`register(_:)`), each registered in a connection's
    /// PD on first use there.
    var buffers: [ObjectIdentifier: PeerBuffer] = [:]
    private var awaitingFirstSuccess = false
    /// The end of the furthest write since the last persist (what persist's READ covers).
    var unpersistedEnd: UInt64?
    var isClosed = false

    /// Connects to the descriptor's grant, retrying retryable rejects (region-revoking, busy,
    /// too-many-peers) and transport failures until `options.reconnectTimeout`.
    public init(descriptor: GrantDescriptor, options: PeerOptions = PeerOptions()) throws(PeerError) {
        try options.validate()
        self.descriptor = descriptor
        self.options = options
        var statistics = PeerStatistics()
        let connection = try Self.connect(descriptor, options: options, operation: "connect", statistics: &statistics)
        self.connection = connection
        terms = connection.terms
        statistics.generations.append(connection.terms.generation)
        self.statistics = statistics
    }

    deinit { connection?.close() }

    /// Disconnects and releases the connection; later operations throw `closed`.
    public func close() {
        connection?.close()
        connection = nil
        isClosed = true
        for buffer in buffers.values { buffer.isRegistered = false }
        buffers = [:]
    }

    /// Whether a connection is up now (false between a break and the reconnect the next
    /// operation makes).
    public var isConnected: Bool { connection != nil }

    // MARK: - Operations

    /// Writes `bytes` at `offset`.
    public func write(_ bytes: [UInt8], at offset: UInt64) throws(PeerError) {
        var failure: PeerError?
        bytes.withUnsafeBytes { buffer in
            do throws(PeerError) { try write(from: buffer, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Writes `buffer` at `offset`, through the staging buffer in rounds of at most its size,
    /// each round as work requests of at most `workRequestBytes` (default: the options') in
    /// flight together.
    public func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64, workRequestBytes: Int? = nil) throws(PeerError) {
        try transfer(.write, offset: offset, count: buffer.count, workRequestBytes: workRequestBytes, local: nil) { connection, done, window in
            connection.staging.copyMemory(from: buffer.baseAddress! + done, byteCount: window)
        } after: { _, _, _ in }
        unpersistedEnd = max(unpersistedEnd ?? 0, offset + UInt64(buffer.count))
    }

    /// Reads `count` bytes at `offset`.
    public func read(count: Int, at offset: UInt64) throws(PeerError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: PeerError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(PeerError) { try read(into: buffer, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Reads `buffer.count` bytes at `offset` into `buffer`.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, workRequestBytes: Int? = nil) throws(PeerError) {
        try transfer(.read, offset: offset, count: buffer.count, workRequestBytes: workRequestBytes, local: nil) { _, _, _ in
        } after: { connection, done, window in
            (buffer.baseAddress! + done).copyMemory(from: connection.staging, byteCount: window)
        }
    }

    /// If the 8-byte word at `offset` equals `expected`, replaces it with `desired`; returns
    /// the word's previous value (equal to `expected` when the swap happened). Needs atomic
    /// access; `offset` a multiple of 8. See the type's notes on atomics and revocation.
    public func compareAndSwap(at offset: UInt64, expected: UInt64, desired: UInt64) throws(PeerError) -> UInt64 {
        try atomic(.compareAndSwap, .compareAndSwap(expected: expected, desired: desired), at: offset)
    }

    /// Adds `add` to the 8-byte word at `offset` (wrapping); returns the previous value.
    public func fetchAdd(at offset: UInt64, add: UInt64) throws(PeerError) -> UInt64 {
        try atomic(.fetchAdd, .fetchAdd(add), at: offset)
    }

    /// Returns once every write made before it has been placed in the region's memory: an RDMA
    /// READ (of the grant's alignment, at least 1 byte, where the last write ended) on the same
    /// QP, which RC executes after all earlier requests (`PersistMethod.readAfterWrite`).
    /// Needs read access.
    public func persist() throws(PeerError) {
        let end = unpersistedEnd ?? 0
        try perform(.persist) { (connection) throws(PeerError) in
            let read = TransferRules.persistRead(after: end, terms: connection.terms)
            try Self.check(.persist, offset: read.offset, length: read.length, terms: connection.terms)
            return connection.run([WorkItem(operation: .read, localOffset: 0, remoteOffset: read.offset, length: UInt32(read.length))])
        }
        unpersistedEnd = nil
    }

    // MARK: - The machinery

    private static func check(_ operation: PeerOperation, offset: UInt64, length: UInt64, terms: GrantTerms) throws(PeerError) {
        if let problem = TransferRules.check(operation, offset: offset, length: length, terms: terms) {
            throw .refused(operation: operation, problem)
        }
    }

    /// A read or write in rounds. Through the staging buffer (`local` nil): `before` fills it for
    /// a round (`done` bytes into the transfer, `window` bytes long), `after` empties it. From
    /// or into an application's registered buffer (`local`: the buffer and the transfer's first
    /// byte in it): one round of work requests straight from its memory, no copy.
    /// A round that fails on a broken connection is repeated whole on the next connection.
    func transfer(_ operation: PeerOperation, offset: UInt64, count: Int, workRequestBytes: Int?, local: (buffer: PeerBuffer, start: Int)?,
                  before: (PeerConnection, Int, Int) -> Void, after: (PeerConnection, Int, Int) -> Void) throws(PeerError) {
        if let requested = workRequestBytes, requested <= 0 || requested > options.stagingBytes {
            throw .badOption("work requests of \(requested) bytes: use 1 to the staging size (\(options.stagingBytes))")
        }
        if count == 0 {
            try Self.check(operation, offset: offset, length: 0, terms: terms)
            return
        }
        var done = 0
        while done < count {
            done += try perform(operation) { (connection) throws(PeerError) in
                let terms = connection.terms
                // Checked against this connection's terms: a restored region may differ.
                try Self.check(operation, offset: offset, length: UInt64(count), terms: terms)
                let alignment = Int(terms.transferAlignment)
                let stagingWindow = options.stagingBytes - options.stagingBytes % alignment
                // A registered buffer needs no rounds: its whole transfer is one window.
                let window = local == nil ? min(count - done, stagingWindow) : count - done
                var chunk = min(workRequestBytes ?? options.workRequestBytes, window)
                chunk = max(chunk - chunk % alignment, alignment)
                var memory: MemoryRegion?
                if let local {
                    do throws(VerbsError) { memory = try connection.memoryRegion(for: local.buffer) } catch {
                        throw .verbs(operation: "\(operation.rawValue): registering the application's buffer", error)
                    }
                }
                before(connection, done, window)
                var items: [WorkItem] = []
                var start = 0
                while start < window {
                    let length = min(chunk, window - start)
                    items.append(WorkItem(operation: operation == .write ? .write : .read, localOffset: local.map { $0.start + done + start } ?? start,
                                          remoteOffset: offset + UInt64(done + start), length: UInt32(length), local: memory))
                    start += length
                }
                return connection.run(items).map {
                    after(connection, done, window)
                    return window
                }
            }
        }
    }

    private func atomic(_ operation: PeerOperation, _ request: QueuePair.RemoteOperation, at offset: UInt64) throws(PeerError) -> UInt64 {
        try perform(operation) { (connection) throws(PeerError) in
            try Self.check(operation, offset: offset, length: 8, terms: connection.terms)
            return connection.run([WorkItem(operation: request, localOffset: 0, remoteOffset: offset, length: 8)]).map {
                connection.staging.load(as: UInt64.self)
            }
        }
    }

    /// Runs `body` on a live connection; on a broken link drops it, reconnects and runs `body`
    /// again (it re-checks the rules under the new terms) — except an atomic that may have
    /// executed, which throws `atomicOutcomeUnknown` once connected again.
    private func perform<T>(_ operation: PeerOperation,
                            _ body: (PeerConnection) throws(PeerError) -> Result<T, LinkFailure>) throws(PeerError) -> T {
        guard !isClosed else { throw .closed(operation: operation.rawValue) }
        // Connections that come up and break again under the same operation (an accept whose
        // keys do not work, a responder that drops every request) end like a failed reconnect.
        var firstBreak: Double?
        var breaks = 0
        while true {
            let connection = try liveConnection(for: operation)
            switch try body(connection) {
            case .success(let value):
                if awaitingFirstSuccess {
                    awaitingFirstSuccess = false
                    statistics.firstSuccessAfterReconnect = MonotonicClock.now()
                }
                return value
            case .failure(.fault(let text)):
                throw .completionFailed(operation: operation, completion: text)
            case .failure(.broken(let cause, let mayHaveExecuted)):
                let now = MonotonicClock.now()
                statistics.lastBreak = now
                statistics.lastBreakCause = cause
                breaks += 1
                if let first = firstBreak, now - first > options.reconnectTimeout {
                    connection.close()
                    self.connection = nil
                    throw .reconnectTimedOut(operation: operation.rawValue, seconds: now - first, attempts: breaks,
                                             last: .transport("the connection broke again after reconnecting: \(cause)"))
                }
                firstBreak = firstBreak ?? now
                connection.close()
                self.connection = nil
                if operation.isAtomic && mayHaveExecuted {
                    let next = try liveConnection(for: operation)
                    throw .atomicOutcomeUnknown(operation: operation, completion: cause, generation: next.terms.generation)
                }
            }
        }
    }

    /// The current connection, or a new one (counted as a reconnect).
    private func liveConnection(for operation: PeerOperation) throws(PeerError) -> PeerConnection {
        if let connection { return connection }
        let connection = try Self.connect(descriptor, options: options, operation: "\(operation.rawValue) (reconnecting)",
                                          statistics: &statistics)
        self.connection = connection
        terms = connection.terms
        statistics.reconnects += 1
        statistics.lastReconnect = MonotonicClock.now()
        statistics.generations.append(connection.terms.generation)
        awaitingFirstSuccess = true
        return connection
    }

    /// Connection attempts with backoff until one succeeds, one fails for good, or the
    /// reconnect timeout passes.
    private static func connect(_ descriptor: GrantDescriptor, options: PeerOptions, operation: String,
                                statistics: inout PeerStatistics) throws(PeerError) -> PeerConnection {
        let started = MonotonicClock.now()
        var backoff = ReconnectBackoff(initial: options.initialBackoff, cap: options.maxBackoff, timeout: options.reconnectTimeout)
        while true {
            switch PeerConnection.open(descriptor, options: options) {
            case .success(let connection):
                return connection
            case .failure(let failure):
                statistics.failedAttempts += 1
                guard failure.isRetryable else { throw .connectFailed(operation: operation, failure) }
                let elapsed = MonotonicClock.now() - started
                guard let delay = backoff.delayAfterFailure(elapsed: elapsed, retryAfterMillis: failure.retryAfterMillis) else {
                    throw .reconnectTimedOut(operation: operation, seconds: elapsed, attempts: backoff.attempts, last: failure)
                }
                MonotonicClock.sleep(seconds: delay)
            }
        }
    }
}
