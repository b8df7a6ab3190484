import Foundation
import Glibc
import MRLeaseClient
import MRLeaseGrant
import MRLeasePeer
import MRLeaseProtocol

/// One peer writing and persisting its own page of the region in a loop on a thread of its own,
/// noting when its first write of each new generation succeeded.
final class PeerWorker: @unchecked Sendable {
    private let peer: Peer
    private let offset: UInt64
    private let lock = NSLock()
    private var stopping = false
    private var done = false
    /// Generation → when its first write + persist completed (MonotonicClock seconds).
    private var firstSuccess: [UInt64: Double] = [:]
    /// When each write + persist completed, while `recording` (MonotonicClock seconds).
    private var successes: [Double] = []
    private var recording = false
    private(set) var failure: String?
    private var thread: Thread?

    init(peer: Peer, offset: UInt64) {
        self.peer = peer
        self.offset = offset
    }

    func start() {
        let thread = Thread { [self] in loop() }
        self.thread = thread
        thread.start()
    }

    private func loop() {
        let page = [UInt8](repeating: UInt8(truncatingIfNeeded: offset / 4096 + 1), count: 4096)
        while !locked({ stopping }) {
            do throws(PeerError) {
                try peer.write(page, at: offset)
                try peer.persist()
                let generation = peer.terms.generation
                let now = MonotonicClock.now()
                locked {
                    if firstSuccess[generation] == nil { firstSuccess[generation] = now }
                    if recording { successes.append(now) }
                }
            } catch {
                locked { failure = "\(error)" }
                break
            }
        }
        locked { done = true }
    }

    func firstSuccess(generation: UInt64) -> Double? { locked { firstSuccess[generation] } }

    /// Starts (or ends, returning them) the record of every success's time.
    func record(_ on: Bool) -> [Double] {
        locked {
            recording = on
            defer { if !on { successes = [] } }
            return successes
        }
    }

    /// How many times the peer reconnected (a revocation, or an access that failed).
    var reconnects: Int { peer.statistics.reconnects }
    var failed: String? { locked { failure } }

    /// Stops the loop, waits for it, and closes the peer.
    func stop() {
        locked { stopping = true }
        while !locked({ done }) { usleep(1000) }
        peer.close()
    }

    private func locked<T>(_ body: () -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }
}

/// Issue 10's revocation figure as peers see it: from the start of a lease break (another
/// process opening the file for writing, `dd` extending it) to each peer's first successful
/// write + persist with the restored region's new keys. The baseline, in the same run: the same
/// break with no grant, timed to the owner's `restored` event (what any client waits for).
struct PeerBreakBenchmark {
    struct Row {
        var peers: Int
        var breaks: Int
        /// Per break: the breaker's open + ftruncate.
        var breaker = Samples()
        /// Per break: break start → the owner's `restored`.
        var restored = Samples()
        /// Per peer and break: break start → that peer's first write of the new generation.
        var firstWrite = Samples()
    }

    let socket: String
    let path: String
    let fileSize: Int

    /// Opens the file for writing from another process (`dd` ftruncates it to its size): the
    /// lease breaks. The owner's events are read meanwhile, so its ack goes out as soon as
    /// `revoking` arrives (a breaker waiting for the ack would otherwise wait for quiesce-ms).
    /// Returns how long `dd` ran (its open waits for the daemon's unlock) and when the owner
    /// heard `restored` (MonotonicClock seconds).
    func breakLease(_ owner: MRLeaseClient, region: UInt64) throws -> (breaker: UInt64, restoredAt: Double) {
        let start = MonotonicClock.now()
        let exited = ExitTime()
        let dd = Process()
        dd.executableURL = URL(fileURLWithPath: "/bin/dd")
        dd.arguments = ["if=/dev/null", "of=\(path)", "bs=1", "seek=\(fileSize)", "status=none"]
        dd.terminationHandler = { _ in exited.note(MonotonicClock.now()) }
        try dd.run()
        var restoredAt: Double?
        let deadline = start + 30
        while restoredAt == nil || exited.value == nil {
            guard MonotonicClock.now() < deadline else { throw BenchError("no restored event, or dd still running, after 30 s") }
            let event: Event?
            do { event = try owner.nextEvent(timeout: .milliseconds(1)) } catch { throw BenchError("owner: \(error)") }
            if case .restored(let restored) = event, restored.region == region { restoredAt = MonotonicClock.now() }
            if case .lost(let lost) = event, lost.region == region { throw BenchError("region lost: \(lost.reason.rawValue)") }
        }
        dd.waitUntilExit()
        guard dd.terminationStatus == 0 else { throw BenchError("dd on \(path) exited \(dd.terminationStatus)") }
        return (Self.nanoseconds((exited.value ?? start) - start), restoredAt ?? start)
    }

    static func nanoseconds(_ seconds: Double) -> UInt64 { UInt64(max(seconds, 0) * 1e9) }

    /// `peers` peers (0: the baseline, no grant) through `breaks` lease breaks. `elsewhere`:
    /// the peers write into a granted region of another file, and the broken file's region has
    /// no grant (the baseline under the same load: what the peers' traffic costs the breaker
    /// on these CPUs, apart from stopping them).
    func run(peers: Int, breaks: Int, elsewhere: Bool = false) throws -> Row {
        let owner: MRLeaseClient
        do { owner = try MRLeaseClient.connect(path: socket, acknowledgingRevocations: true) } catch { throw BenchError("connect: \(error)") }
        defer { owner.close() }
        let length = UInt64(max(peers, 1) * 4096)
        let region: UInt64
        var granted: UInt64
        // `revoke`: this benchmark times the lease protocol's break → restored (an ODP region
        // under the default, `follow`, has no break: --follow-break measures that).
        do {
            region = try owner.register(path: path, offset: 0, length: length, access: [.read, .write], layoutPolicy: .revoke).region
            granted = region
            if elsewhere {
                let other = path + ".load"
                guard FileManager.default.createFile(atPath: other, contents: Data(count: fileSize)) else { throw BenchError("create \(other)") }
                defer { unlink(other) }  // the client holds its fd
                granted = try owner.register(path: other, offset: 0, length: length, access: [.read, .write], layoutPolicy: .revoke).region
            }
        } catch {
            throw BenchError("register: \(error)")
        }
        var workers: [PeerWorker] = []
        if peers > 0 {
            let grant: GrantResult
            do { grant = try owner.grant(region: granted, maxPeers: UInt64(peers)) } catch { throw BenchError("grant: \(error)") }
            let descriptor = try GrantDescriptor(text: grant.descriptor)
            var options = PeerOptions()
            options.stagingBytes = 4096
            options.workRequestBytes = 4096
            for index in 0..<peers {
                do { workers.append(PeerWorker(peer: try Peer(descriptor: descriptor, options: options), offset: UInt64(index) * 4096)) } catch {
                    throw BenchError("peer \(index): \(error)")
                }
            }
            workers.forEach { $0.start() }
        }
        defer { workers.forEach { $0.stop() } }
        var row = Row(peers: peers, breaks: breaks)
        for index in 0..<breaks {
            let generation = UInt64(index + 2)
            // Every peer has written with the current keys before the break.
            try waitUntil(workers.allSatisfy { $0.firstSuccess(generation: elsewhere ? 1 : generation - 1) != nil }, workers: workers)
            let start = MonotonicClock.now()
            let broken = try breakLease(owner, region: region)
            row.breaker.append(broken.breaker)
            row.restored.append(Self.nanoseconds(broken.restoredAt - start))
            if elsewhere { continue }
            try waitUntil(workers.allSatisfy { $0.firstSuccess(generation: generation) != nil }, workers: workers)
            for first in workers.compactMap({ $0.firstSuccess(generation: generation) }) { row.firstWrite.append(Self.nanoseconds(first - start)) }
        }
        return row
    }

}

/// Waits up to 60 s for `condition`, failing at once when a peer failed.
func waitUntil(_ condition: @autoclosure () -> Bool, workers: [PeerWorker]) throws {
    let deadline = MonotonicClock.now() + 60
    while !condition() {
        if let failed = workers.lazy.compactMap(\.failed).first { throw BenchError("a peer failed: \(failed)") }
        guard MonotonicClock.now() < deadline else { throw BenchError("peers did not write within 60 s") }
        usleep(1000)
    }
}

/// When a child exited, noted by its termination handler's thread.
final class ExitTime: @unchecked Sendable {
    private let lock = NSLock()
    private var time: Double?
    func note(_ now: Double) { lock.withLock { time = now } }
    var value: Double? { lock.withLock { time } }
}
