import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import SystemPackage
import Verbs

/// One row of the break table: the breaker's blocked time with the engine and, interleaved
/// with it (one baseline break before each engine break), with the immediate-unlock baseline.
struct BreakCase: Codable {
    var regions: Int
    var acknowledged: Bool
    var iterations: Int
    var engineMedianMS: Double
    var engineP90MS: Double
    var engineMaxMS: Double
    var baselineMedianMS: Double
    var baselineP90MS: Double
    var ratio: Double
    /// With acks: the owner's ack loop, whose last ack runs the revocation (deregister every
    /// MR, unmap, unlock). nil without acks (the revocation runs inside `poll` at the deadline).
    var revokeWorkMedianMS: Double?
    /// How long after the child exited the last region was restored (re-lease backoff included).
    var restoreMedianMS: Double
    /// Registering the regions before the first break (engine.register, one at a time).
    var registerMS: Double
    /// MRs of this process as `rdma resource show mr` lists them while the regions are
    /// registered (nil with the stub registrar or without the rdma tool).
    var mrsListed: Int?
    /// A bare `ibv_dereg_mr` of as many MRs over the same file, same flags, one after another
    /// (median over `iterations` rounds; nil with the stub registrar): with the baseline, the
    /// floor a revocation cannot go below.
    var bareDeregisterMedianMS: Double?
    /// The bare ibv_reg_mr rate of those MRs (registrations per second, all rounds), to set the
    /// engine's setup rate against at the same count.
    var bareRegisterPerSecond: Double?
}

/// Times truncate(2) against a file with R regions registered by the engine, against the
/// baseline lease on a twin file in the same directory.
final class BreakBenchmark {
    let engine: Engine
    let events: EventLog
    let baseline: BaselineLease
    let path: String
    let fd: FileDescriptor
    let size: UInt64
    let owner = OwnerID(1)
    /// The device for the bare deregistration floor; nil with the stub registrar.
    let bare: VerbsRegistrar?

    init(engine: Engine, bare: VerbsRegistrar?, events: EventLog, directory: String, size: UInt64) throws(BenchError) {
        self.engine = engine
        self.bare = bare
        self.events = events
        self.size = size
        let stem = "\(directory)/mrleased-bench-\(getpid())"
        path = stem + "-break"
        try BenchFile.create(path, size: size)
        try BenchFile.create(stem + "-baseline", size: size)
        do {
            fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.closeOnExec])
        } catch {
            throw BenchError("open \(path): \(error)")
        }
        baseline = try BaselineLease(path: stem + "-baseline")
    }

    deinit {
        try? fd.close()
        unlink(path)
        unlink(baseline.path)
    }

    /// Registers `regions` 4 KiB regions at distinct pages, breaks `iterations` times, and
    /// deregisters them again.
    func run(regions count: Int, iterations: Int, acknowledge: Bool, countMRs: Bool) throws(BenchError) -> BreakCase {
        let page = UInt64(SharedMapping.pageSize)
        guard UInt64(count) * page <= size else { throw BenchError("\(count) regions do not fit in \(size) bytes") }
        var ids: [RegionID] = []
        // Cleanup after the timed part: a region already gone is fine, and nobody listens to events.
        defer { for id in ids { _ = try? engine.deregister(id) } }
        let start = Engine.now()
        var strategy = Strategy.odp
        for i in 0..<count {
            do {
                let info = try engine.register(owner: owner, fd: fd, offset: UInt64(i) * page, length: page, access: [.read, .write])
                ids.append(info.id)
                strategy = info.strategy
            } catch {
                if case .refused = error { throw BenchError("register region \(i) of \(count): \(error)", refused: true) }
                throw BenchError("register region \(i) of \(count): \(error)")
            }
        }
        let registerMS = Double(Engine.now() - start) / 1e6
        let mrs = countMRs ? ProcessCensus.countProcessMRs() : nil
        var engineTimes = Samples(), baselineTimes = Samples(), work = Samples(), restore = Samples()
        var bareDeregisterTimes = Samples(), bareRegisterNS: UInt64 = 0
        for _ in 0..<iterations {
            baselineTimes.append(try baseline.breakOnce(size: size))
            let one = try breakOnce(regions: count, acknowledge: acknowledge)
            engineTimes.append(one.blocked)
            if let w = one.work { work.append(w) }
            restore.append(one.restore)
            // The deregistration floor interleaved too, one round after each break: the bare
            // loop's time drifts over a run (62-94 ms for 10 000 MRs across runs), and a floor
            // taken after every break would compare the engine with another moment's machine.
            if let bare {
                let round = try bareDeregistration(bare, count: count, flags: RegistrationBenchmark.flags(for: strategy))
                bareDeregisterTimes.append(round.deregister)
                bareRegisterNS += round.register
            }
        }
        let bareRun: (deregisterMS: Double, registerPerSecond: Double)? = bare == nil ? nil
            : (bareDeregisterTimes.medianMS, Double(count * iterations) / (Double(bareRegisterNS) / 1e9))
        return BreakCase(regions: count, acknowledged: acknowledge, iterations: iterations,
                         engineMedianMS: engineTimes.medianMS, engineP90MS: engineTimes.p90MS, engineMaxMS: engineTimes.maxMS,
                         baselineMedianMS: baselineTimes.medianMS, baselineP90MS: baselineTimes.p90MS,
                         ratio: engineTimes.medianMS / baselineTimes.medianMS,
                         revokeWorkMedianMS: acknowledge ? work.medianMS : nil, restoreMedianMS: restore.medianMS,
                         registerMS: registerMS, mrsListed: mrs, bareDeregisterMedianMS: bareRun?.deregisterMS,
                         bareRegisterPerSecond: bareRun?.registerPerSecond)
    }

    /// One round of the deregistration floor: `count` MRs of one page each over one mapping of
    /// the same file, then `ibv_dereg_mr` of all of them; both times, in nanoseconds.
    func bareDeregistration(_ registrar: VerbsRegistrar, count: Int, flags: AccessFlags) throws(BenchError) -> (register: UInt64, deregister: UInt64) {
        let page = SharedMapping.pageSize
        return try PlainVerbs.registerThenDeregister(fd: fd, mappedLength: count * page, count: count, range: { ($0 * page, page) },
                                                     flags: flags, registrar: registrar, rounds: 1, what: "bare")[0]
    }

    /// One break of the engine's file: drive the engine until the child has returned and
    /// every region is restored, acknowledging revocations right after `poll` returns.
    func breakOnce(regions count: Int, acknowledge: Bool) throws(BenchError) -> (blocked: UInt64, work: UInt64?, restore: UInt64) {
        events.reset()
        let breaksBefore = engine.statistics().breaksHandled
        let child = try Breaker(truncating: path, to: size)
        let deadline = Engine.now() + 60_000_000_000
        var work: UInt64?
        var exitedAt: UInt64?
        while exitedAt == nil || events.restored + events.lost.count < count {
            events.record(engine.poll(timeout: .milliseconds(5)))
            if acknowledge && !events.revoking.isEmpty {
                let start = Engine.now()
                // One call per file the break named, as a client answers a `revoking-file`
                // with one `ack` of `file` (docs/protocol.md §5).
                for revocation in events.revoking { events.record(engine.acknowledge(file: revocation.file, owner: owner)) }
                work = Engine.now() - start
                events.revoking = []
            }
            if exitedAt == nil && child.hasExited { exitedAt = Engine.now() }
            if Engine.now() > deadline {
                throw BenchError("no restoration within 60 s (restored \(events.restored) of \(count), child exited: \(child.hasExited))")
            }
        }
        let restore = Engine.now() - (exitedAt ?? 0)
        let blocked = try child.blockedNanoseconds()
        guard events.lost.isEmpty else { throw BenchError("regions lost on restore: \(events.lost.prefix(5))") }
        let breaks = engine.statistics().breaksHandled - breaksBefore
        guard breaks == 1 else {
            throw BenchError(breaks == 0
                ? "truncate(2) to the file's own size did not break the lease"
                : "one truncate caused \(breaks) breaks (the lease was re-taken before the breaker woke?)")
        }
        return (blocked, work, restore)
    }
}
