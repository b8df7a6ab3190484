import Foundation
import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

/// One row of `--large-registration` (issue 19, "large ranges off the loop"): a client registers
/// one large range through the daemon while another client times `stats` round trips; the
/// region is then revoked by another process's open and restored, timed the same way; and the
/// same range is registered bare (`ibv_reg_mr` over one mapping), for what the pin itself costs.
struct LargeRegistrationCase: Codable {
    var bytes: UInt64
    var strategy: String
    var daemonRegisterMS: Double
    var bareRegisterMS: Double
    /// The same range bare as `parallelSlices` MRs registered from as many threads at once.
    var parallelSlices: Int
    var bareParallelMS: Double
    /// From the owner's ack (the revocation done, the lease let go) to its `restored`: the
    /// breaker's open and close, then the restoration.
    var restoreMS: Double
    /// Another client's `stats` round trips: idle (before), while the registration ran, while
    /// the revocation ran (the breaker's start to the owner's ack: the 1 GiB MR is deregistered
    /// before the unlock, on the loop), and while the restoration ran.
    var idle: Probe
    var duringRegistration: Probe
    var duringRevocation: Probe
    var duringRestoration: Probe

    struct Probe: Codable {
        var count: Int
        var medianUS: Double
        var p99US: Double
        var maxUS: Double

        init(_ samples: Samples) {
            count = samples.count
            medianUS = samples.medianMS * 1000
            p99US = samples.quantileMS(0.99) * 1000
            maxUS = samples.maxMS * 1000
        }
    }

    var registrationP99Ratio: Double { duringRegistration.p99US / idle.p99US }
    var registerRatio: Double { daemonRegisterMS / bareRegisterMS }
    var restoreRatio: Double { restoreMS / bareRegisterMS }
}

/// Times another client's `stats` round trips while one large `register`, and then its
/// restoration, run in the daemon.
final class LargeRegistrationBenchmark {
    let socket: String
    let directory: String
    let verbs: VerbsRegistrar

    init(socket: String, directory: String, verbs: VerbsRegistrar) {
        self.socket = socket
        self.directory = directory
        self.verbs = verbs
    }

    func run(bytes: UInt64, idleTrips: Int) throws(BenchError) -> LargeRegistrationCase {
        let path = "\(directory)/large"
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.create, .truncate, .closeOnExec], permissions: [.ownerReadWrite]) } catch {
            throw BenchError("create \(path): \(error)")
        }
        defer { try? fd.close(); unlink(path) }
        guard ftruncate(fd.rawValue, off_t(bytes)) == 0 else { throw BenchError("ftruncate \(path): \(String(cString: strerror(errno)))") }
        // Written through first, so both registrations find every page in memory (as a
        // restoration does): a first pin of a sparse file would also time the allocation of its
        // pages, for whichever registration came first.
        let chunk = [UInt8](repeating: 0x5A, count: 1 << 20)
        var written: UInt64 = 0
        while written < bytes {
            let n = chunk.withUnsafeBytes { pwrite(fd.rawValue, $0.baseAddress, Int(min(UInt64(chunk.count), bytes - written)), off_t(written)) }
            guard n > 0 else { throw BenchError("write \(path) at \(written): \(String(cString: strerror(errno)))") }
            written += UInt64(n)
        }

        let prober = try DaemonClient(path: socket)
        var idle = Samples()
        try prober.timeStats(idleTrips, into: &idle)

        // The registration, pinned (what the target is about), with the prober going.
        let owner = try DaemonClient(path: socket)
        var daemonNS: UInt64 = 0
        let (made, duringRegistration) = try probing(prober) { () throws(BenchError) -> Registration in
            let started = Engine.now()
            let reply = try owner.request(.register(.init(offset: 0, length: bytes, access: [.read, .write], strategy: .pinned)), fds: [fd])
            daemonNS = Engine.now() - started
            guard case .register(let made) = reply else { throw BenchError("register: unexpected reply") }
            return made
        }

        // Another process opens the file: the owner acks, the breaker reads nothing and exits,
        // and its close starts the restoration.
        let breaker = Process()
        breaker.executableURL = URL(fileURLWithPath: "/bin/sh")
        breaker.arguments = ["-c", ": < \"$1\"", "breaker", path]
        let (acked, duringRevocation) = try probing(prober) { () throws(BenchError) -> UInt64 in
            do { try breaker.run() } catch { throw BenchError("start the breaker: \(error)") }
            _ = try owner.awaitEvent(.revoking)
            // The ack's reply comes after `revoked` (the ack ran the revocation), which the
            // request reads past.
            _ = try owner.request(.ack(region: made.region))
            return Engine.now()
        }
        let (restored, duringRestoration) = try probing(prober) { () throws(BenchError) -> UInt64 in
            _ = try owner.awaitEvent(.restored)
            return Engine.now()
        }
        breaker.waitUntilExit()
        let restoreNS = restored - acked
        _ = try owner.request(.deregister(region: made.region))

        // The same range bare, with the flags the daemon's strategy used.
        let strategy: Strategy = switch made.strategy {
        case .odp: .odp
        case .pinned: .pinned
        }
        let flags = RegistrationBenchmark.flags(for: strategy)
        let bare = try PlainVerbs.registerThenDeregister(fd: fd, mappedLength: Int(bytes), count: 1, range: { _ in (0, Int(bytes)) },
                                                         flags: flags, registrar: verbs, what: "bare")
        let slices = max(2, min(4, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        let parallel = try PlainVerbs.registerSlicesInParallel(fd: fd, length: Int(bytes), slices: slices, flags: flags, registrar: verbs)
        return LargeRegistrationCase(bytes: bytes, strategy: made.strategy.rawValue, daemonRegisterMS: Double(daemonNS) / 1e6,
                                     bareRegisterMS: Double(bare[0].register) / 1e6, parallelSlices: slices,
                                     bareParallelMS: Double(parallel) / 1e6, restoreMS: Double(restoreNS) / 1e6,
                                     idle: .init(idle), duringRegistration: .init(duringRegistration),
                                     duringRevocation: .init(duringRevocation), duringRestoration: .init(duringRestoration))
    }

    /// Runs `body` while `prober` times `stats` round trips on a thread of its own, from
    /// before `body` starts until it returns.
    func probing<T>(_ prober: DaemonClient, _ body: () throws(BenchError) -> T) throws(BenchError) -> (T, Samples) {
        nonisolated(unsafe) var samples = Samples()
        nonisolated(unsafe) var failure: BenchError?
        nonisolated(unsafe) let probe = prober
        let stop = ManagedAtomicFlag(), started = DispatchSemaphore(value: 0), finished = DispatchSemaphore(value: 0)
        Thread {
            defer { finished.signal() }
            started.signal()
            do throws(BenchError) {
                while !stop.isSet { try probe.timeStats(1, into: &samples) }
            } catch {
                failure = error
            }
        }.start()
        started.wait()
        let result: Result<T, BenchError>
        do throws(BenchError) { result = .success(try body()) } catch { result = .failure(error) }
        stop.set()
        finished.wait()
        if let failure { throw failure }
        return (try result.get(), samples)
    }
}

/// A flag one thread sets and another polls.
final class ManagedAtomicFlag: @unchecked Sendable {
    private var value = false
    private let lock = NSLock()
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
