import Foundation
import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

/// One row of `--large-registration` (issue 19, "large ranges off the loop"): a client registers
/// one large range through the daemon while another client times `stats` round trips; and the
/// same range registered bare (`ibv_reg_mr` over one mapping), for what the registration itself
/// costs.
struct LargeRegistrationCase: Codable {
    var bytes: UInt64
    var strategy: String
    var daemonRegisterMS: Double
    var bareRegisterMS: Double
    /// Another client's `stats` round trips: idle (before), and while the registration ran.
    var idleCount: Int
    var idleMedianUS: Double
    var idleP99US: Double
    var duringCount: Int
    var duringMedianUS: Double
    var duringP99US: Double
    var duringMaxUS: Double

    var p99Ratio: Double { duringP99US / idleP99US }
    var registerRatio: Double { daemonRegisterMS / bareRegisterMS }
}

/// Times another client's `stats` round trips while one large `register` runs in the daemon.
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

        // The prober: its own connection, on its own thread; idle first, then until told to stop.
        let prober = try DaemonClient(path: socket)
        nonisolated(unsafe) var idle = Samples(), during = Samples()
        nonisolated(unsafe) var failure: BenchError?
        let stop = ManagedAtomicFlag(), idleDone = DispatchSemaphore(value: 0), finished = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let probe = prober
        Thread {
            defer { finished.signal() }
            func trip() throws(BenchError) -> UInt64 {
                let start = Engine.now()
                _ = try probe.request(.stats)
                return Engine.now() - start
            }
            do throws(BenchError) {
                for _ in 0..<idleTrips { idle.append(try trip()) }
                idleDone.signal()
                while !stop.isSet { during.append(try trip()) }
            } catch {
                failure = error
                idleDone.signal()
            }
        }.start()
        idleDone.wait()
        if let failure { throw failure }

        let owner = try DaemonClient(path: socket)
        let started = Engine.now()
        let reply: Result<ReplyResult, BenchError>
        do throws(BenchError) {
            reply = .success(try owner.request(.register(.init(offset: 0, length: bytes, access: [.read, .write])), fds: [fd]))
        } catch {
            reply = .failure(error)
        }
        let daemonNS = Engine.now() - started
        stop.set()
        finished.wait()
        guard case .register(let made) = try reply.get() else { throw BenchError("register: unexpected reply") }
        if let failure { throw failure }
        _ = try owner.request(.deregister(region: made.region))

        // The same range bare, with the flags the daemon's strategy used.
        let strategy: Strategy = switch made.strategy {
        case .odp: .odp
        case .pinned: .pinned
        }
        let flags = RegistrationBenchmark.flags(for: strategy)
        let bare = try PlainVerbs.registerThenDeregister(fd: fd, mappedLength: Int(bytes), count: 1, range: { _ in (0, Int(bytes)) },
                                                         flags: flags, registrar: verbs, what: "bare")
        return LargeRegistrationCase(bytes: bytes, strategy: made.strategy.rawValue, daemonRegisterMS: Double(daemonNS) / 1e6,
                                     bareRegisterMS: Double(bare[0].register) / 1e6,
                                     idleCount: idle.count, idleMedianUS: idle.medianMS * 1000, idleP99US: idle.quantileMS(0.99) * 1000,
                                     duringCount: during.count, duringMedianUS: during.medianMS * 1000,
                                     duringP99US: during.quantileMS(0.99) * 1000, duringMaxUS: during.maxMS * 1000)
    }
}

/// A flag one thread sets and another polls.
final class ManagedAtomicFlag: @unchecked Sendable {
    private var value = false
    private let lock = NSLock()
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
