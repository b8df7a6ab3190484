import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

/// Per-registration latency through the daemon against a direct `Engine.register`, µs.
struct DaemonRegistrationCase: Codable {
    var regions: Int
    var length: Int
    var passes: Int
    var strategy: String
    var daemonMedianUS: Double
    var daemonP90US: Double
    var directMedianUS: Double
    var directP90US: Double
    /// median(daemon) / median(direct): the target is ≤ 1.5.
    var ratio: Double
    var daemonDeregisterMedianUS: Double
    var directDeregisterMedianUS: Double
    /// `stats` round trip while the daemon holds `regions` regions of this client.
    var statsWithRegionsMedianUS: Double
    /// The same regions through `register-batch` requests of `batchSize` ranges: each
    /// request's time divided by its ranges, one sample per request.
    var batchSize: Int
    var batchPerRegionMedianUS: Double
    var batchPerRegionP90US: Double
    /// median(batch per region) / median(direct).
    var batchRatio: Double
    /// Direct `Engine.register` with an untimed round trip to an echo process before each
    /// call: the same call made right after the process was switched out and back, as the
    /// daemon makes it after every request's wake-up. Under QEMU TCG a switch flushes the
    /// emulated TLB, so the same code runs slower for a while after it.
    var directAfterSwitchMedianUS: Double
}

/// Registrations through the daemon (a `register` request carrying the file's fd) against
/// `Engine.register` in this process on the same device, in alternating passes.
///
/// Each side has its own file on the same filesystem: each holds a lease on its file, and a
/// lease breaks when anyone else opens the file. So the daemon's file is opened once, and that
/// one fd goes with every request.
final class DaemonRegistrationBenchmark {
    let client: DaemonClient
    let engine: Engine
    let daemonFile: String, directFile: String
    let daemonFD: FileDescriptor, directFD: FileDescriptor
    let size: UInt64
    let owner = OwnerID(4)
    /// The peer for the direct-after-a-switch pass.
    let echo: EchoPeer

    init(client: DaemonClient, engine: Engine, directory: String, size: UInt64) throws(BenchError) {
        self.client = client
        self.engine = engine
        self.size = size
        echo = try EchoPeer(reply: Array("{}".utf8))
        daemonFile = "\(directory)/mrleased-bench-\(getpid())-daemon"
        directFile = "\(directory)/mrleased-bench-\(getpid())-direct"
        try BenchFile.create(daemonFile, size: size)
        try BenchFile.create(directFile, size: size)
        do {
            daemonFD = try FileDescriptor.open(FilePath(daemonFile), .readWrite, options: [.closeOnExec])
            directFD = try FileDescriptor.open(FilePath(directFile), .readWrite, options: [.closeOnExec])
        } catch {
            throw BenchError("open the registration files: \(error)")
        }
    }

    deinit {
        echo.close()
        try? daemonFD.close()
        try? directFD.close()
        unlink(daemonFile)
        unlink(directFile)
    }

    func offset(_ i: Int, length: Int) -> UInt64 {
        UInt64(i % max(1, Int(size) / length)) * UInt64(length)
    }

    func run(regions count: Int, length: Int, passes: Int, batchSize: Int) throws(BenchError) -> DaemonRegistrationCase {
        var daemonRegister = Samples(), daemonDeregister = Samples(), directRegister = Samples(), directDeregister = Samples()
        var stats = Samples(), batch = Samples(), afterSwitch = Samples(), unused = Samples()
        var strategy = ""
        for pass in 0..<passes {
            // The last pass also times stats while its regions are held.
            let daemonRun = try daemonPass(count: count, length: length, register: &daemonRegister, deregister: &daemonDeregister,
                                           statsWhileHeld: pass == passes - 1 ? 1000 : 0)
            strategy = daemonRun.strategy
            if daemonRun.stats.count > 0 { stats = daemonRun.stats }
            // Three batch passes per pass: a batch pass is a few requests, so more samples.
            for _ in 0..<3 { try batchPass(count: count, length: length, batchSize: batchSize, perRegion: &batch) }
            try directPass(count: count, length: length, register: &directRegister, deregister: &directDeregister)
            try directPass(count: count, length: length, register: &afterSwitch, deregister: &unused, switching: true)
        }
        return DaemonRegistrationCase(
            regions: count, length: length, passes: passes, strategy: strategy,
            daemonMedianUS: daemonRegister.quantileUS(0.5), daemonP90US: daemonRegister.quantileUS(0.9),
            directMedianUS: directRegister.quantileUS(0.5), directP90US: directRegister.quantileUS(0.9),
            ratio: daemonRegister.quantileUS(0.5) / directRegister.quantileUS(0.5),
            daemonDeregisterMedianUS: daemonDeregister.quantileUS(0.5), directDeregisterMedianUS: directDeregister.quantileUS(0.5),
            statsWithRegionsMedianUS: stats.quantileUS(0.5),
            batchSize: batchSize, batchPerRegionMedianUS: batch.quantileUS(0.5), batchPerRegionP90US: batch.quantileUS(0.9),
            batchRatio: batch.quantileUS(0.5) / directRegister.quantileUS(0.5),
            directAfterSwitchMedianUS: afterSwitch.quantileUS(0.5))
    }

    /// The same `count` regions in `register-batch` requests of `batchSize` ranges (the last
    /// one shorter when `batchSize` does not divide `count`), each timed like a `register`;
    /// then deregistered one request each, untimed.
    func batchPass(count: Int, length: Int, batchSize: Int, perRegion: inout Samples) throws(BenchError) {
        var regions: [UInt64] = []
        for first in stride(from: 0, to: count, by: batchSize) {
            let ranges = (first..<min(count, first + batchSize)).map {
                Request.Register(offset: offset($0, length: length), length: UInt64(length), access: [.read, .write])
            }
            let start = Engine.now()
            let result = try client.request(.registerBatch(ranges), fds: [daemonFD])
            perRegion.append((Engine.now() - start) / UInt64(ranges.count))
            guard case .registerBatch(let made) = result, made.count == ranges.count else {
                throw BenchError("register-batch: unexpected result \(result)")
            }
            regions += made.map(\.region)
        }
        for region in regions { _ = try client.request(.deregister(region: region)) }
    }

    /// Timed per request: encoding, the send with the fd, the daemon's work, the reply and its
    /// decoding — what a client waits for.
    func daemonPass(count: Int, length: Int, register: inout Samples, deregister: inout Samples,
                    statsWhileHeld: Int) throws(BenchError) -> (strategy: String, stats: Samples) {
        var regions: [UInt64] = []
        var strategy = ""
        for i in 0..<count {
            let start = Engine.now()
            let result = try client.request(.register(.init(offset: offset(i, length: length), length: UInt64(length),
                                                            access: [.read, .write])), fds: [daemonFD])
            register.append(Engine.now() - start)
            guard case .register(let registration) = result else { throw BenchError("register: unexpected result \(result)") }
            regions.append(registration.region)
            strategy = registration.strategy.rawValue
        }
        var stats = Samples()
        try client.timeStats(statsWhileHeld, into: &stats)
        for region in regions {
            let start = Engine.now()
            _ = try client.request(.deregister(region: region))
            deregister.append(Engine.now() - start)
        }
        return (strategy, stats)
    }

    /// `switching`: an untimed echo round trip before each registration.
    func directPass(count: Int, length: Int, register: inout Samples, deregister: inout Samples,
                    switching: Bool = false) throws(BenchError) {
        var ids: [RegionID] = []
        var discard = Samples()
        // Cleanup after the timed part: a region already gone is fine, and nobody listens to events.
        defer { for id in ids { _ = try? engine.deregister(id) } }
        for i in 0..<count {
            if switching { try echo.time(Array("{}".utf8), count: 1, into: &discard) }
            let start = Engine.now()
            do {
                ids.append(try engine.register(owner: owner, fd: directFD, offset: offset(i, length: length), length: UInt64(length),
                                               access: [.read, .write]).id)
            } catch {
                throw BenchError("engine.register \(i) of \(count) × \(length) B: \(error)")
            }
            register.append(Engine.now() - start)
        }
        for id in ids {
            let start = Engine.now()
            do { _ = try engine.deregister(id) } catch { throw BenchError("engine.deregister \(id): \(error)") }
            deregister.append(Engine.now() - start)
        }
        ids = []
        _ = engine.release(owner: owner)
    }
}
