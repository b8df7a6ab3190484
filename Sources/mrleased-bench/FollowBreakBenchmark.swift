import CLinux
import Foundation
import Glibc
import MRLeaseClient
import MRLeaseGrant
import MRLeasePeer
import MRLeaseProtocol

/// Issue 18's layout-change figures for an ODP region its peers write through: another opener
/// punches a page of the region (open O_RDWR, `fallocate(PUNCH_HOLE)`, close, timed on a thread
/// of this process) while every peer writes and persists its own page in a loop.
///
/// - the breaker's wait against the same open + punch of an unregistered file of the same size
///   on the same file system, alternating one with the other (the baseline of each pair);
/// - the peers' reconnects (a `follow` region must have none);
/// - the longest gap between two successes of any peer around a punch, above that peer's median
///   gap over the whole case (what the punch cost the peers).
///
/// With `revoke` the same punch breaks the lease: revocation, new keys, reconnects: the
/// comparison the issue asks for.
struct FollowBreakBenchmark {
    struct Row {
        var policy: RegionLayoutPolicy
        var peers: Int
        /// Per punch: the breaker's open + punch + close on the registered file, and on the
        /// unregistered one just before it.
        var breaker = Samples()
        var unregistered = Samples()
        /// Per punch: the same on the region's extra page, which no peer writes (the ODP
        /// invalidation alone, without a WRITE in flight on the page), and on the unregistered
        /// file's page mapped (MAP_SHARED) and touched by this process (the unmap alone).
        var idlePage = Samples()
        var mappedUnregistered = Samples()
        var reconnects = 0
        /// Per punch: the longest gap of any peer across it, minus that peer's median gap (ns).
        var gapAboveNormal = Samples()
        var normalGapMS = Double.nan
        var strategy = ""
    }

    let socket: String
    let path: String
    let unregisteredPath: String
    let fileSize: Int

    /// open(O_RDWR) + fallocate(PUNCH_HOLE | KEEP_SIZE) of the page at `offset` + close, on a
    /// thread of its own (a lease break blocks the open until the daemon unlocks, and this
    /// thread's caller keeps reading the owner's events meanwhile); its duration.
    static func punch(_ path: String, offset: Int, owner: MRLeaseClient?) throws -> UInt64 {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<UInt64, BenchError> = .failure(BenchError("no result"))
        let thread = Thread {
            let start = MonotonicClock.now()
            let fd = open(path, O_RDWR | O_CLOEXEC)
            if fd < 0 {
                result = .failure(BenchError("open \(path): \(String(cString: strerror(errno)))"))
            } else {
                let punched = mrl_fallocate(fd, MRL_FALLOC_FL_PUNCH_HOLE | MRL_FALLOC_FL_KEEP_SIZE, off_t(offset), 4096)
                let error = errno
                close(fd)
                result = punched == 0 ? .success(UInt64((MonotonicClock.now() - start) * 1e9))
                    : .failure(BenchError("fallocate(PUNCH_HOLE) \(path): \(String(cString: strerror(error)))"))
            }
            done.signal()
        }
        thread.start()
        // The owner acknowledges a revocation as soon as it reads it (a `revoke` region).
        while done.wait(timeout: .now() + .milliseconds(1)) == .timedOut {
            _ = try? owner?.nextEvent(timeout: .milliseconds(0))
        }
        return try result.get()
    }

    func run(policy: RegionLayoutPolicy, peers: Int, punches: Int) throws -> Row {
        let owner: MRLeaseClient
        do { owner = try MRLeaseClient.connect(path: socket, acknowledgingRevocations: true) } catch { throw BenchError("connect: \(error)") }
        defer { owner.close() }
        let registration: Registration
        do {
            // One page per peer, and one more that no peer writes.
            registration = try owner.register(path: path, offset: 0, length: UInt64((peers + 1) * 4096), access: [.read, .write],
                                              strategy: .odp, layoutPolicy: policy)
        } catch { throw BenchError("register (ODP, \(policy.rawValue)): \(error)") }
        let grant: GrantResult
        do { grant = try owner.grant(region: registration.region, maxPeers: UInt64(peers)) } catch { throw BenchError("grant: \(error)") }
        let descriptor = try GrantDescriptor(text: grant.descriptor)
        var options = PeerOptions()
        options.stagingBytes = 4096
        options.workRequestBytes = 4096
        var workers: [PeerWorker] = []
        for index in 0..<peers {
            do { workers.append(PeerWorker(peer: try Peer(descriptor: descriptor, options: options), offset: UInt64(index) * 4096)) } catch {
                throw BenchError("peer \(index): \(error)")
            }
        }
        workers.forEach { $0.start() }
        var row = Row(policy: policy, peers: peers)
        row.strategy = registration.strategy.rawValue
        var stopped = false
        defer { if !stopped { workers.forEach { $0.stop() } } }
        try waitUntil(workers.allSatisfy { $0.firstSuccess(generation: 1) != nil }, workers: workers)
        workers.forEach { _ = $0.record(true) }
        var windows: [(start: Double, end: Double)] = []
        let fd = open(unregisteredPath, O_RDWR | O_CLOEXEC)
        guard fd >= 0, let mapped = mmap(nil, fileSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), mapped != MAP_FAILED else {
            throw BenchError("mmap \(unregisteredPath): \(String(cString: strerror(errno)))")
        }
        close(fd)
        defer { munmap(mapped, fileSize) }
        let spare = fileSize / 2
        for index in 0..<punches {
            // Each peer writes a while between punches: its normal gaps.
            usleep(100_000)
            row.unregistered.append(try Self.punch(unregisteredPath, offset: (index % peers) * 4096, owner: nil))
            let start = MonotonicClock.now()
            row.breaker.append(try Self.punch(path, offset: (index % peers) * 4096, owner: owner))
            windows.append((start, MonotonicClock.now()))
            // Under revoke these would be two more revocations per round: follow only.
            guard policy == .follow else { continue }
            usleep(20_000)
            row.idlePage.append(try Self.punch(path, offset: peers * 4096, owner: owner))
            // A page of the second half, written through the mapping (allocated and mapped again).
            mapped.storeBytes(of: UInt8(index), toByteOffset: spare, as: UInt8.self)
            row.mappedUnregistered.append(try Self.punch(unregisteredPath, offset: spare, owner: nil))
        }
        usleep(100_000)
        let records = workers.map { $0.record(false) }
        workers.forEach { $0.stop() }
        stopped = true
        row.reconnects = workers.reduce(0) { $0 + $1.reconnects }
        if let failed = workers.lazy.compactMap(\.failed).first { throw BenchError("a peer failed: \(failed)") }
        var normal: [Double] = []
        for times in records where times.count > 2 {
            let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
            let median = gaps.sorted()[gaps.count / 2]
            normal.append(median)
            for window in windows {
                // The gap that holds the punch's start, or the first success after its end.
                let around = zip(times.dropFirst(), times).filter { later, earlier in later >= window.start && earlier <= window.end }
                let longest = around.map { $0 - $1 }.max() ?? 0
                row.gapAboveNormal.append(UInt64(max(longest - median, 0) * 1e9))
            }
        }
        row.normalGapMS = normal.isEmpty ? .nan : normal.sorted()[normal.count / 2] * 1000
        return row
    }
}
