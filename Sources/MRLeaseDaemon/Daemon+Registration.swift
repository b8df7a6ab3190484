import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage

/// A `register` or `register-batch` whose reply waits for a pin on the worker: its ranges as
/// planned, the regions made so far, and the job making the next one (`PinJob`, for ranges of
/// at least `offload-pin-bytes`). Its client's further requests are not read meanwhile (one
/// request in flight per client, as always); its events still go out, and every other client
/// and every lease break is served as usual.
final class RegistrationInProgress {
    let id: UInt64
    let ranges: [Request.Register]
    let plans: [RegistrationPlan]
    let facts: FileFacts
    let batch: Bool
    /// When the request was read (monotonic ns): its time in `stats` runs to the reply.
    let started: UInt64
    /// The client's fd while the request is answered, then a duplicate of our own while a pin
    /// waits (the received one is closed when `answer` returns): a later range of the batch
    /// may need to track the file again, and must not find the number reused by another file.
    private(set) var fd: FileDescriptor
    private var ownsFD = false
    var made: [Registration] = []
    var job: PinJob?

    init(id: UInt64, ranges: [Request.Register], plans: [RegistrationPlan], facts: FileFacts, fd: FileDescriptor,
         batch: Bool, started: UInt64) {
        self.id = id
        self.ranges = ranges
        self.plans = plans
        self.facts = facts
        self.fd = fd
        self.batch = batch
        self.started = started
    }

    var type: RequestType { batch ? .registerBatch : .register }

    /// Takes a duplicate of the fd, to outlive the request's message.
    func keepFD() throws(Errno) {
        guard !ownsFD else { return }
        let raw = fcntl(fd.rawValue, F_DUPFD_CLOEXEC, 0)
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        fd = FileDescriptor(rawValue: raw)
        ownsFD = true
    }

    /// Closes the duplicate, if one was taken; close(2) releases it whatever it reports.
    func closeFD() {
        guard ownsFD else { return }
        _ = try? fd.close()
        ownsFD = false
    }

    /// The reply for what was made.
    var result: ReplyResult { batch ? .registerBatch(made) : .register(made[0]) }
}

extension Daemon {
    /// Registers each range of the file behind `fd`, all or none: when one fails, the ones
    /// made before it are deregistered, and in a batch the error names the range's position.
    /// The fd is inspected once for all of them; each range is planned (RegistrationPlan: the
    /// one set of rules the engine and the doctor use too) and checked against the quotas
    /// before anything is registered.
    ///
    /// Returns nil when a range's pin went to the worker: `pinsFinished` goes on from there and
    /// sends the reply.
    func registerRegions(_ ranges: [Request.Register], id: UInt64, fd: FileDescriptor, session: ClientSession,
                         batch: Bool, started: UInt64) throws(ProtocolError) -> [Registration]? {
        // The fd is the proof of access: the daemon never opens a client's path itself.
        let facts: FileFacts
        do { facts = try FileFacts.inspect(fd, mount: false) } catch {
            throw ProtocolError(.badRequest, "statx on the passed fd failed: \(error.symbolicName)", errnoName: error.symbolicName, errnoValue: error.rawValue)
        }
        let mode: OpenMode
        do { mode = try Engine.openMode(fd) } catch {
            throw ProtocolError(.badRequest, "\(error)", errnoName: error.errno?.symbolicName, errnoValue: error.errno?.rawValue)
        }
        let uid = session.credentials.uid
        let held = engine?.usage(uid: uid) ?? Usage()
        var heldRegions = held.regions
        var heldBytes = held.bytes
        var plans: [RegistrationPlan] = []
        plans.reserveCapacity(ranges.count)
        // Planned through the cache: a range like one planned before (in this batch or an
        // earlier request) is only checked arithmetically (`PlanCache`).
        for (index, register) in ranges.enumerated() {
            // A refusal of the fd itself (its type, its open mode) names no range.
            var aboutRange = true
            do throws(ProtocolError) {
                let access = RegionAccess(wire: register.access), preference = Strategy(wire: register.strategy)
                let policy = LayoutPolicy(wire: register.layoutPolicy ?? configuration.layoutPolicy)
                let made = planCache.plan(file: PlannedFile(facts), mode: mode, offset: register.offset, length: register.length,
                                          access: access, preference: preference, layoutPolicy: policy, lessee: session.lessee)
                switch made {
                case .success(let plan): plans.append(plan)
                case .failure(let refusal):
                    aboutRange = refusal.aboutRange
                    throw ProtocolError(refusal)
                }
                if heldRegions >= configuration.maxRegionsPerUID {
                    throw ProtocolError(.quotaExceeded, "uid \(uid) holds \(heldRegions) regions, the limit (max-regions-per-uid); deregister some first")
                }
                // Checked: an xfs file may be 2^63 bytes long, and a limit near 2^64 (the
                // operator's) then lets the sum pass 2^64, which is over any limit.
                let (total, overflow) = heldBytes.addingReportingOverflow(register.length)
                if let limit = session.byteLimit, overflow || total > limit {
                    let amount = overflow ? "more than 2^64" : "\(total)"
                    throw ProtocolError(.quotaExceeded, "uid \(uid) would hold \(amount) bytes in regions; its limit is \(limit) (its RLIMIT_MEMLOCK, or max-bytes-per-uid)")
                }
            } catch {
                throw batch && aboutRange ? error.at(index) : error
            }
            heldRegions += 1
            // Without a byte limit the sum is only reported: it saturates instead of trapping.
            heldBytes = heldBytes.addingReportingOverflow(register.length).overflow ? .max : heldBytes + register.length
        }
        guard let engine else {
            // No device: the plan has nothing to try, and says so.
            let error = switch plans[0].decide(trials: []) {
            case .failure(let refusal): ProtocolError(refusal)
            case .success: ProtocolError(.internal, "a registration plan without a device chose a strategy")
            }
            throw batch ? error.at(0) : error
        }
        let work = RegistrationInProgress(id: id, ranges: ranges, plans: plans, facts: facts, fd: fd, batch: batch, started: started)
        return try proceed(work, engine: engine, session: session)
    }

    /// Registers `work`'s ranges from the first not yet made, beginning with the end of `job`
    /// (a pin the worker made for it). nil when a pin went to the worker: `work` is then the
    /// session's `registration`, and the session reads no request until it is answered.
    func proceed(_ work: RegistrationInProgress, engine: Engine, session: ClientSession,
                 finishing job: PinJob? = nil) throws(ProtocolError) -> [Registration]? {
        var job = job
        while work.made.count < work.ranges.count {
            let index = work.made.count
            do throws(ProtocolError) {
                let step: RegistrationStep
                do {
                    if let pinned = job {
                        job = nil
                        step = try engine.finishRegistration(pinned)
                    } else {
                        step = try engine.startRegistration(owner: session.owner, uid: session.credentials.uid, fd: work.fd,
                                                            facts: work.facts, plan: work.plans[index])
                    }
                } catch {
                    throw ProtocolError(error)
                }
                switch step {
                case .registered(let info):
                    // Only a tag takes room: 100 000 untagged regions cost no entry here.
                    if let tag = work.ranges[index].tag, !tag.isEmpty { session.tags[info.id] = tag }
                    logger.debug("registered", metadata: ["region": "\(info.id)", "file": "\(info.file)", "client": "\(session.owner)",
                                                         "strategy": "\(info.strategy)", "bytes": "\(info.length)"])
                    work.made.append(Registration(info))
                case .pinning(let pinning):
                    guard let pins else {
                        engine.abandon(pinning)
                        throw ProtocolError(.internal, "an mrleased bug: a registration was left to a worker, and there is none; please report it with the daemon's log")
                    }
                    if pins.descriptor == nil {
                        // An inline runner (a stand-in registrar): the pin is made in `submit`.
                        pins.submit(pinning)
                        job = pins.finished().first
                        continue
                    }
                    do { try work.keepFD() } catch {
                        engine.abandon(pinning)
                        throw ProtocolError(.system(op: "fcntl(F_DUPFD_CLOEXEC)", errno: error))
                    }
                    logger.debug("pinning on the worker", metadata: ["client": "\(session.owner)", "bytes": "\(pinning.length)"])
                    work.job = pinning
                    session.registration = work
                    updateInterest(of: session)
                    pins.submit(pinning)
                    return nil
                }
            } catch {
                for registration in work.made { undo(RegionID(registration.region), of: session) }
                work.made = []
                throw work.batch ? error.at(index) : error
            }
        }
        // One line per request, not per region: a batch of 64 is one line.
        let made = work.made
        if let first = made.first {
            logger.info("registered", metadata: ["regions": "\(made.count == 1 ? "\(first.region)" : "\(first.region)…\(made[made.count - 1].region) (\(made.count))")",
                                                 "client": "\(session.owner)", "strategy": "\(first.strategy)",
                                                 "bytes": "\(work.ranges.reduce(0) { $0 + $1.length })"])
        }
        return made
    }

    /// Takes the pins the worker made: a restoration's goes back to the engine (the last one
    /// restores the file, and owners hear `restored`); a registration's goes on with its
    /// request and, when that is done, its reply is sent and its client's requests are read
    /// again. A pin whose client left is abandoned (its MR deregistered).
    func pinsFinished() {
        guard let pins, let engine else { return }
        for job in pins.finished() {
            logger.debug("pin in", metadata: ["for": "\(job.owner.map { "\($0)" } ?? "restoration")", "bytes": "\(job.length)",
                                              "micros": "\(job.nanos / 1000)"])
            guard let owner = job.owner else {
                route(engine.finishRestoration(job))
                continue
            }
            guard let session = sessions[owner], !session.closing, let work = session.registration, work.job === job else {
                engine.abandon(job)
                continue
            }
            work.job = nil
            session.registration = nil
            let reply: Reply
            do throws(ProtocolError) {
                guard try proceed(work, engine: engine, session: session, finishing: job) != nil else { continue }
                reply = Reply(id: work.id, work.result)
            } catch {
                reply = Reply(id: work.id, type: work.type, error: error)
            }
            work.closeFD()
            updateInterest(of: session)
            sendReply(reply, to: session, started: work.started)
        }
    }

    /// Deregisters a region `session` just made in a batch that failed.
    func undo(_ region: RegionID, of session: ClientSession) {
        session.tags[region] = nil
        guard let engine else { return }
        do { route(try engine.deregister(region, owner: session.owner)) } catch {
            logger.error("undo of a batch's region failed", metadata: ["region": "\(region)", "error": "\(error)"])
        }
    }

}
