import Foundation
import Glibc
import LinuxFile
import Logging
import SystemPackage

/// Where the loop sends work that costs what a range's size costs (pinning it: 25-100 ms per GB
/// on hardware), so that no client and no lease break waits for another client's large
/// registration: a grant's exposure (`ExposureJob`), a large pinned registration (`PinJob`).
/// The loop submits a job and takes it back, run, from `finished()` when `descriptor` turns
/// readable; a job crosses between the threads only inside the runner's lock.
protocol JobRunner<Job>: AnyObject {
    associatedtype Job
    /// Readable when `finished()` has jobs; nil when jobs finish inside `submit`.
    var descriptor: FileDescriptor? { get }
    func submit(_ job: Job)
    /// The jobs that ran since the last call, in the order they were submitted.
    func finished() -> [Job]
    /// Waits for the job under way, if any; jobs not started are returned unrun by the next
    /// `finished()`. Nothing runs after it.
    func shutDown()
}

/// Runs each job at `submit`, on the loop: for stand-in verbs and registrars (fuzzers and host
/// tests drive the daemon deterministically with it), never for a device.
final class InlineRunner<Job>: JobRunner {
    private let run: (Job) -> Void
    private var done: [Job] = []

    init(run: @escaping (Job) -> Void) { self.run = run }

    var descriptor: FileDescriptor? { nil }
    func submit(_ job: Job) {
        run(job)
        done.append(job)
    }
    func finished() -> [Job] { defer { done = [] }; return done }
    func shutDown() {}
}

/// Runs jobs on one thread of its own, in order, and signals the loop through an eventfd
/// when one is done. One thread per kind of job: jobs are rare (a grant's first connect of
/// each generation, a registration above the offload size) and each is one registration; two
/// large ones in a row wait for each other, not the loop.
final class ThreadRunner<Job>: JobRunner, @unchecked Sendable {
    private let name: String
    private let run: (Job) -> Void
    private let logger: Logger
    private let ready: EventFD
    private let wakeups = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)
    // Shared with the worker, touched only under `lock`.
    private let lock = NSLock()
    private var queue: [Job] = []
    private var done: [Job] = []
    private var stopping = false
    private var started = false

    /// `run` is called on the runner's thread, one job at a time, and must touch nothing but
    /// the job.
    init(name: String, logger: Logger, run: @escaping (Job) -> Void) throws(Errno) {
        self.name = name
        self.run = run
        self.logger = logger
        ready = try EventFD()
    }

    var descriptor: FileDescriptor? { ready.descriptor }

    func submit(_ job: Job) {
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
            thread.name = name
            thread.start()
        }
        wakeups.signal()
    }

    func finished() -> [Job] {
        do { _ = try ready.take() } catch {
            logger.error("reading a worker's eventfd failed", metadata: ["worker": "\(name)", "op": "read", "errno": "\(error.symbolicName)"])
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
            done += queue   // not started: returned unrun
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
            let next = lock.withLock { () -> Job?? in
                if stopping { return .none }
                return .some(queue.isEmpty ? nil : queue.removeFirst())
            }
            guard let next else { return }
            guard let job = next else { continue }
            run(job)
            lock.withLock { done.append(job) }
            do { try ready.signal() } catch {
                logger.error("signalling the loop from a worker failed", metadata: ["worker": "\(name)", "op": "write", "errno": "\(error.symbolicName)"])
            }
        }
    }
}
