import Foundation
import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeasePolicy
import SystemPackage
import Verbs

/// One grant's PD and MR to make over one generation of its region's registration, and the
/// connect requests waiting for them. The loop makes it and reads `made` and `waiting`; the
/// maker's thread fills in `made`. It crosses between them only inside the maker's lock, and
/// no thread touches it while the other has it: hence `@unchecked Sendable`.
final class ExposureJob: @unchecked Sendable {
    let grant: UInt64
    let region: RegionID
    let generation: UInt64
    let address: UnsafeMutableRawPointer
    let length: Int
    let flags: AccessFlags
    /// The connect requests admitted for the grant while the job runs (loop only).
    var waiting: [PeerCMEvent] = []
    /// The PD and MR, or why not; nil until the job ran.
    var made: Result<(domain: any PeerPD, memory: any PeerMR), VerbsError>?
    /// How long `ibv_alloc_pd` + `ibv_reg_mr` took (ns).
    var nanos: UInt64 = 0
    /// Closing the PD after its MR was refused failed too (the loop logs it).
    var closeFailure: VerbsError?

    init(grant: UInt64, region: RegionID, generation: UInt64, address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) {
        self.grant = grant
        self.region = region
        self.generation = generation
        self.address = address
        self.length = length
        self.flags = flags
    }

    /// Makes the PD and registers the grant's MR in it (on whichever thread runs the job).
    func run(on verbs: any PeerVerbs) {
        let start = Engine.now()
        do throws(VerbsError) {
            let domain = try verbs.makePD()
            do {
                made = .success((domain, try domain.register(address: address, length: length, access: flags)))
            } catch {
                do { try domain.close() } catch { closeFailure = error }
                throw error
            }
        } catch {
            made = .failure(error)
        }
        nanos = Engine.now() - start
    }
}

/// Where grants' exposures are made: registering a region again (pinning its pages, for a
/// pinned region) costs what the region's size costs, 25-100 ms per GB on hardware, and a
/// peer's connect must not hold the loop, and every other client, for that long
/// (docs/remote-access.md, "Admission off the loop").
protocol ExposureMaker: AnyObject {
    /// Readable when `finished()` has jobs; nil when jobs finish inside `submit`.
    var descriptor: FileDescriptor? { get }
    func submit(_ job: ExposureJob)
    /// The jobs that ran since the last call, in the order they were submitted.
    func finished() -> [ExposureJob]
    /// Waits for the job under way, if any; jobs not started are returned unrun by the next
    /// `finished()`. Nothing runs after it.
    func shutDown()
}

/// Runs each job at `submit`, on the loop: for stand-in verbs (fuzzers and host tests drive
/// the peer service deterministically with it), never for a device.
final class InlineExposureMaker: ExposureMaker {
    let verbs: any PeerVerbs
    private var done: [ExposureJob] = []

    init(verbs: any PeerVerbs) { self.verbs = verbs }

    var descriptor: FileDescriptor? { nil }
    func submit(_ job: ExposureJob) {
        job.run(on: verbs)
        done.append(job)
    }
    func finished() -> [ExposureJob] { defer { done = [] }; return done }
    func shutDown() {}
}

/// Runs jobs on one thread of its own, in order, and signals the loop through an eventfd
/// when one is done. One thread: jobs are rare (a grant's first connect of each generation)
/// and each is one registration; two large ones in a row wait for each other, not the loop.
final class ThreadedExposureMaker: ExposureMaker, @unchecked Sendable {
    private let verbs: any PeerVerbs
    private let logger: Logger
    private let ready: EventFD
    private let wakeups = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)
    // Shared with the worker, touched only under `lock`.
    private let lock = NSLock()
    private var queue: [ExposureJob] = []
    private var done: [ExposureJob] = []
    private var stopping = false
    private var started = false

    init(verbs: any PeerVerbs, logger: Logger) throws(Errno) {
        self.verbs = verbs
        self.logger = logger
        ready = try EventFD()
    }

    var descriptor: FileDescriptor? { ready.descriptor }

    func submit(_ job: ExposureJob) {
        let start = lock.withLock { () -> Bool in
            guard !stopping else { done.append(job); return false }   // returned unrun
            queue.append(job)
            defer { started = true }
            return !started
        }
        if start {
            let thread = Thread { [self] in
                serve()
                exited.signal()
            }
            thread.name = "mrleased-exposures"
            thread.start()
        }
        wakeups.signal()
    }

    func finished() -> [ExposureJob] {
        do { _ = try ready.take() } catch {
            logger.error("reading the exposure worker's eventfd failed", metadata: ["op": "read", "errno": "\(error.symbolicName)"])
        }
        return lock.withLock { defer { done = [] }; return done }
    }

    func shutDown() {
        let wait = lock.withLock { () -> Bool in
            stopping = true
            return started
        }
        guard wait else { return }
        wakeups.signal()
        exited.wait()
        lock.withLock {
            done += queue   // not started: returned unrun (`made` nil)
            queue = []
        }
    }

    private func serve() {
        // The loop's signals (lease breaks, SIGTERM) are read from signalfds in the loop's
        // thread: this one must never take one.
        var all = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_BLOCK, &all, nil)
        while true {
            wakeups.wait()
            let next = lock.withLock { () -> ExposureJob?? in
                if stopping { return .none }
                return .some(queue.isEmpty ? nil : queue.removeFirst())
            }
            guard let next else { return }
            guard let job = next else { continue }
            job.run(on: verbs)
            lock.withLock { done.append(job) }
            do { try ready.signal() } catch {
                logger.error("signalling the loop from the exposure worker failed", metadata: ["op": "write", "errno": "\(error.symbolicName)"])
            }
        }
    }
}
