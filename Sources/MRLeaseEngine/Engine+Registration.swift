import LinuxFile
import MRLeasePolicy
import SystemPackage
import Verbs

extension TrackedFile {
    /// A pin under way in `window` came back (finished or abandoned).
    func pinEnded(_ window: MappedWindow) {
        if let at = pinWindows.firstIndex(where: { $0 === window }) { pinWindows.remove(at: at) }
    }
}

/// What `startRegistration` did: registered the range, or handed its pin to a worker.
public enum RegistrationStep {
    case registered(RegionInfo)
    /// The range's pages are to be pinned off the loop: run the job on a worker (`run()`), then
    /// hand it back to `finishRegistration` on the engine's thread, or to `abandon` when
    /// nobody waits for it any more.
    case pinning(PinJob)
}

/// One pinned `ibv_reg_mr` too large for the loop (`Configuration.offloadPinBytes`): pinning
/// costs what the range's size costs (25-100 ms per GB on hardware, about 650 ms per GiB under
/// soft-RoCE), and every other client and lease break would wait it out. A registration's
/// (`startRegistration`) or a restoration's (the engine's own, taken with `takeStartedPins`).
///
/// The engine makes it on its thread with everything decided: the lease is held (a pinned
/// region is guarded), the window is mapped and counted once more for the job, and the file
/// counts the pin as under way, so it stays tracked. The worker calls `run()` and touches
/// nothing else (but the file's fd, for a restoration's extents); the engine reads `made` only after the job came back through whatever hands
/// jobs between the threads (a lock, in the daemon): hence `@unchecked Sendable`.
public final class PinJob: @unchecked Sendable {
    enum Purpose {
        /// A new region: the plan in the order its attempts are tried, the one running, and
        /// the trials before it.
        case registration(owner: OwnerID, uid: UInt32, plan: RegistrationPlan, attempt: Int, trials: [Trial])
        /// A revoked region's MR made again, for the file's restoration in progress.
        case restoration(RegionID, Restoration)
    }

    let purpose: Purpose
    public let length: UInt64
    let file: TrackedFile
    let window: MappedWindow
    let address: UnsafeMutableRawPointer
    let flags: AccessFlags
    /// MRs the range is pinned as, in parallel (1: one MR).
    let slices: Int
    /// The file's lease epoch when the pin began: a break (or a layout change) in between
    /// releases the lease and takes it again, so the pin may hold pages of the old layout.
    let leaseEpoch: UInt64
    let registrar: any Registrar
    /// The MR, or the kernel's refusal; nil until the job ran.
    private(set) var made: Result<any RegisteredMemory, VerbsError>?
    /// How long the registration took (ns).
    public private(set) var nanos: UInt64 = 0
    /// A restoration's first job reads the file's extents (synced) before its pin, here rather
    /// than on the loop; what it read.
    var readExtents: (reader: ExtentReader, fd: FileDescriptor, backing: Backing)?
    private(set) var extentsRead: Result<ExtentMap?, Errno>?

    init(_ purpose: Purpose, file: TrackedFile, window: MappedWindow, offset: UInt64, length: UInt64, flags: AccessFlags,
         slices: Int, registrar: any Registrar) {
        self.purpose = purpose
        self.slices = slices
        self.file = file
        self.window = window
        self.address = window.address(of: offset)
        self.length = length
        self.flags = flags
        self.leaseEpoch = file.leaseEpoch
        self.registrar = registrar
    }

    /// The client a registration's job is for; nil for a restoration's (the engine's own).
    public var owner: OwnerID? {
        if case .registration(let owner, _, _, _, _) = purpose { owner } else { nil }
    }

    /// Whether `run()` has been called.
    public var hasRun: Bool { made != nil }

    /// The `ibv_reg_mr`, on whichever thread runs the job: the registrar's `register` is
    /// thread-safe (see `Registrar`).
    public func run() {
        let start = Engine.now()
        if let (reader, fd, backing) = readExtents {
            do throws(Errno) { extentsRead = .success(try reader.read(fd, backing)) } catch { extentsRead = .failure(error) }
        }
        do throws(VerbsError) {
            made = .success(try registrar.register(address: address, length: Int(length), flags: flags, slices: slices))
        } catch {
            made = .failure(error)
        }
        nanos = Engine.now() - start
    }
}

extension Engine {
    /// Registers a planned range of the file behind `fd`, owned by `owner` (running as `uid`):
    /// everything on the calling thread. `startRegistration` is the same with large pins left
    /// to a worker.
    ///
    /// `fd` stays the caller's; the engine keeps its own duplicate. `facts` are the fd's, as
    /// the plan was made from them. The plan's checks are not repeated here: what is left is
    /// the file's state (its lease, a revocation in progress) and the kernel's answers.
    public func register(owner: OwnerID, uid: UInt32, fd: FileDescriptor, facts: FileFacts,
                         plan: RegistrationPlan) throws(EngineError) -> RegionInfo {
        switch try startRegistration(owner: owner, uid: uid, fd: fd, facts: facts, plan: plan, offload: false) {
        case .registered(let info): return info
        case .pinning: throw .bug("a registration without offloading left its pin to a worker")
        }
    }

    /// `register`, except that a pinned attempt of at least `Configuration.offloadPinBytes`
    /// (when `offload` and the threshold is set) comes back as a `PinJob` instead of running
    /// here. Until the job is finished or abandoned, the file stays tracked and its lease held.
    public func startRegistration(owner: OwnerID, uid: UInt32, fd: FileDescriptor, facts: FileFacts,
                                  plan: RegistrationPlan, offload: Bool = true) throws(EngineError) -> RegistrationStep {
        try exclusive { () throws(EngineError) -> RegistrationStep in
            let key = FileKey(device: facts.device, inode: facts.inode)
            // The lease follows the fd's open mode, not the access: a read lease on an O_RDWR fd
            // is refused (EAGAIN), so an O_RDWR fd always gets a write lease.
            let file: TrackedFile
            if let last = lastFile, last.key == key {
                file = last
            } else if let tracked = files[key] {
                file = tracked
            } else {
                file = try track(key: key, fd: fd, facts: facts, writable: plan.writableFD)
            }
            lastFile = file
            if plan.access.isWritable && !file.writable {
                throw .fileBusy(leaseType: "write: mrleased holds this file read-only for other regions; a writable region needs them gone")
            }
            guard file.lifecycle.phase == .leased else {
                throw .fileBusy(leaseType: "\(file.leaseType): the file is being revoked or restored; retry after its regions are restored")
            }
            do throws(EngineError) {
                let window = try self.window(file, offset: plan.offset, length: plan.length)
                let attempted: Attempted
                do throws(EngineError) {
                    attempted = try makeRegistration(file: file, plan: plan, at: window.address(of: plan.offset),
                                                     offloadAbove: offload ? configuration.offloadPinBytes : nil)
                } catch {
                    release(window, of: file)
                    throw error
                }
                switch attempted {
                case .registered(let made):
                    return .registered(admit(made, owner: owner, uid: uid, plan: plan, window: window, file: file))
                case .offloaded(let attempt, let ordered, let flags, let trials):
                    return .pinning(pinJob(.registration(owner: owner, uid: uid, plan: ordered, attempt: attempt, trials: trials),
                                           file: file, window: window, plan: ordered, flags: flags, holding: false))
                }
            } catch {
                settleOrUntrack(file)
                throw error
            }
        }.0
    }

    /// Completes a registration whose pin ran on a worker: the region, as `register` would
    /// have made it; or `interrupted` when the file's lease broke (or its layout changed)
    /// while its pages were pinned (the MR is deregistered: nobody had its keys); or, when the
    /// kernel refused the pin in a way that falls through, the plan's next attempt.
    public func finishRegistration(_ job: PinJob) throws(EngineError) -> RegistrationStep {
        try exclusive { () throws(EngineError) -> RegistrationStep in
            let file = job.file
            file.pinEnded(job.window)
            guard case .registration(let owner, let uid, let plan, let index, let before) = job.purpose else {
                throw .bug("a restoration's pin was handed to finishRegistration")
            }
            do throws(EngineError) {
                let attempt = plan.attempts[index]
                switch job.made {
                case nil:
                    throw .bug("a pin job was finished before it ran")
                case .success(let mr):
                    let current = files[file.key] === file && file.lifecycle.phase == .leased
                    guard current, plan.layoutPolicy(for: attempt.strategy) == .follow || (file.leaseHeld && file.leaseEpoch == job.leaseEpoch) else {
                        deregister(mr)
                        throw .interrupted("the file's lease broke, or its layout changed, while mrleased pinned the range's \(job.length) bytes; nothing was registered. Register it again")
                    }
                    let made = registered(mr, attempt: attempt, flags: job.flags, file: file, plan: plan, trials: before)
                    let info = admit(made, owner: owner, uid: uid, plan: plan, window: job.window, file: file)
                    lookAgainIfTouched(file)
                    return .registered(info)
                case .failure(let error):
                    var trials = before
                    trials.append(Trial(kind: attempt.kind, flags: job.flags, outcome: .failed(op: error.op, errno: error.errno)))
                    guard RegistrationPlan.fallsThrough(error.errno) else { throw .system(op: error.op, errno: error.errno) }
                    guard files[file.key] === file, file.lifecycle.phase == .leased else {
                        throw .interrupted("the file's lease broke while mrleased pinned the range, and the pin failed (\(error.op): \(error.errno.symbolicName)); register it again")
                    }
                    switch try makeRegistration(file: file, plan: plan, at: job.address, from: index + 1, trials: trials,
                                                offloadAbove: configuration.offloadPinBytes) {
                    case .registered(let made):
                        let info = admit(made, owner: owner, uid: uid, plan: plan, window: job.window, file: file)
                        lookAgainIfTouched(file)
                        return .registered(info)
                    case .offloaded(let next, let ordered, let flags, let trials):
                        return .pinning(pinJob(.registration(owner: owner, uid: uid, plan: ordered, attempt: next, trials: trials),
                                               file: file, window: job.window, plan: ordered, flags: flags, holding: false))
                    }
                }
            } catch {
                release(job.window, of: file)
                if files[file.key] === file { settleOrUntrack(file) }
                throw error
            }
        }.0
    }

    /// A job for a pin of `plan`'s range in `window`, counted as under way in its file.
    /// `holding`: the job takes a user of the window of its own (a restoration's: the region
    /// keeps its own); a registration's job carries the user `window(_:offset:length:)` counted.
    func pinJob(_ purpose: PinJob.Purpose, file: TrackedFile, window: MappedWindow, plan: RegistrationPlan, flags: AccessFlags,
                holding: Bool) -> PinJob {
        if holding { window.users += 1 }
        file.pinWindows.append(window)
        let sliced = configuration.parallelPinBytes.map { plan.length >= $0 } ?? false
        return PinJob(purpose, file: file, window: window, offset: plan.offset, length: plan.length, flags: flags,
                      slices: sliced ? configuration.pinSlices : 1, registrar: registrar)
    }

    /// A layout change seen while pins were under way (IN_MODIFY through the leased fd, which
    /// breaks no lease) is compared once the last of them is in: what it changed may be
    /// what they pinned. At the next timer pass, not in this call: a registration's caller
    /// routes no events, and the comparison may revoke.
    func lookAgainIfTouched(_ file: TrackedFile) {
        guard file.touchedWhilePinning, file.pinWindows.isEmpty, files[file.key] === file else { return }
        file.touchedWhilePinning = false
        guard file.layoutTimer == nil else { return }
        let now = clock()
        file.layoutTimer = now
        timers.schedule(file.key, at: now)
    }

    /// A pin job nobody waits for (its client left, the daemon stops): its MR, if it made
    /// one, is deregistered, and the file may go.
    public func abandon(_ job: PinJob) {
        exclusive {
            if case .restoration = job.purpose { return restorationPinned(job, abandoned: true) }
            let file = job.file
            file.pinEnded(job.window)
            if case .success(let mr) = job.made { deregister(mr) }
            release(job.window, of: file)
            if files[file.key] === file { settleOrUntrack(file) }
        }
    }

    /// A file with no region and no pin under way goes; one with some keeps its lease only if
    /// a region or a pin still needs it.
    func settleOrUntrack(_ file: TrackedFile) {
        if file.isIdle { untrack(file) } else { settleLease(file) }
    }

    /// Deregisters an MR that never became a region's (logging a failure): no live bytes
    /// were counted for it.
    func deregister(_ mr: any RegisteredMemory) {
        do throws(VerbsError) { try mr.deregister() } catch {
            logger.error("deregistration failed", metadata: ["op": "\(error.op)", "errno": "\(error.errno.symbolicName)"])
        }
    }

    /// Makes the region of a registration that worked, and indexes it.
    func admit(_ made: Registration, owner: OwnerID, uid: UInt32, plan: RegistrationPlan, window: MappedWindow,
               file: TrackedFile) -> RegionInfo {
        let id = RegionID(nextRegion)
        let region = Region(id: id, owner: owner, uid: uid, plan: plan, strategy: made.strategy,
                            strategyReason: made.reason, window: window, mr: made.mr, flags: made.flags)
        nextRegion += 1
        file.regions[id] = region
        if region.isGuarded { file.lifecycle.add(id) }
        // A lease taken for a guarded attempt that failed, before a following one worked.
        settleLease(file)
        regions[id] = file.key
        regionsPeak = Swift.max(regionsPeak, regions.count)
        // Classes in the dictionaries, changed in place; the last ones used are at hand, as
        // most registrations follow one by the same owner.
        if let index = lastOwner, index.owner == owner {
            index.add(id)
        } else if let index = regionsByOwner[owner] {
            index.add(id)
            lastOwner = index
        } else {
            let index = OwnerIndex(owner, first: id)
            regionsByOwner[owner] = index
            lastOwner = index
        }
        if let record = lastUsage, record.uid == uid {
            record.usage.add(region.length)
        } else if let record = usageByUID[uid] {
            record.usage.add(region.length)
            lastUsage = record
        } else {
            let record = UsageRecord(uid, bytes: region.length)
            usageByUID[uid] = record
            lastUsage = record
        }
        stats.registrations += 1
        // No log line per region: the daemon logs each request's regions in one line.
        return info(region, file)
    }

    /// What a registration made: the MR, and the strategy that worked and why.
    struct Registration {
        var mr: any RegisteredMemory
        /// The flags the MR was registered with.
        var flags: AccessFlags
        var strategy: Strategy
        var reason: String
    }

    /// What `makeRegistration` got to: an MR, or a pin for a worker to make.
    enum Attempted {
        case registered(Registration)
        /// The plan's attempt `attempt` (of `plan`, in the order tried) is a pin for a worker,
        /// with these flags, after these trials.
        case offloaded(attempt: Int, plan: RegistrationPlan, flags: AccessFlags, trials: [Trial])
    }

    /// Registers the plan's range at `address` (its place in the file's window), trying the
    /// plan's attempts in order from `first` (the file's last working strategy first); a
    /// kernel refusal of one kind (EOPNOTSUPP, EFAULT, EINVAL) falls through to the next. The
    /// plan decides from the kernel's answers. Counts the MR's bytes as live. A pinned attempt
    /// of at least `offloadAbove` bytes is not made here: it comes back `offloaded`, with the
    /// lease it needs taken.
    func makeRegistration(file: TrackedFile, plan: RegistrationPlan, at address: UnsafeMutableRawPointer,
                          from first: Int = 0, trials before: [Trial] = [], offloadAbove: UInt64? = nil) throws(EngineError) -> Attempted {
        var ordered = plan
        if first == 0, plan.preference == nil, let cached = file.strategyCache[plan.access.isWritable], plan.attempts.first?.strategy != cached {
            ordered = plan.trying(first: cached)
        }
        var trials = before
        for index in ordered.attempts.indices.dropFirst(first) {
            let attempt = ordered.attempts[index]
            let flags = attempt.strategy.flags(for: plan.access)
            // A guarded MR is made under the lease: taken first, so no layout change can slip
            // in between the pin and the lease.
            if plan.layoutPolicy(for: attempt.strategy) == .revoke { try takeLease(file) }
            switch attempt.strategy {
            case .pinned:
                if let offloadAbove, plan.length >= offloadAbove {
                    return .offloaded(attempt: index, plan: ordered, flags: flags, trials: trials)
                }
            case .odp:
                break  // no page is pinned: as cheap at 1 GiB as at 4 KiB
            }
            do {
                let mr = try registrar.register(address: address, length: Int(plan.length), flags: flags)
                return .registered(registered(mr, attempt: attempt, flags: flags, file: file, plan: ordered, trials: trials))
            } catch {
                trials.append(Trial(kind: attempt.kind, flags: flags, outcome: .failed(op: error.op, errno: error.errno)))
                guard RegistrationPlan.fallsThrough(error.errno) else { throw .system(op: error.op, errno: error.errno) }
            }
        }
        switch ordered.decide(trials: trials) {
        case .failure(let refusal): throw .refused(refusal)
        case .success(let decision):
            // decide() says "use" only for a trial that registered, and those returned above.
            throw .bug("the registration plan decided \(decision.0) without a registration")
        }
    }

    /// The bookkeeping of an attempt that registered: the file's strategy cache, the reason
    /// (made once per access and preference, with its trial's words), the live bytes and the
    /// ODP prefetch.
    func registered(_ mr: any RegisteredMemory, attempt: RegistrationPlan.Attempt, flags: AccessFlags, file: TrackedFile,
                    plan: RegistrationPlan, trials before: [Trial]) -> Registration {
        file.strategyCache[plan.access.isWritable] = attempt.strategy
        // The first attempt worked: the reason is the one given before for the same access and
        // preference, made (with its trial's words) only the first time.
        let key = ReasonKey(access: plan.access, preference: plan.preference, strategy: attempt.strategy, skipped: plan.skipped.count)
        let reason: String
        if before.isEmpty, let known = file.reason(for: key) {
            reason = known
        } else {
            let trials = before + [Trial(kind: attempt.kind, flags: flags, outcome: .registered)]
            reason = switch plan.decide(trials: trials) {
            case .success(let decision): decision.reason
            case .failure: attempt.reason
            }
            if trials.count == 1 { file.remember(reason, for: key) }
        }
        liveBytes[attempt.strategy] += plan.length
        switch attempt.strategy {
        case .odp: if configuration.odpPrefetch { prefetch(mr, writable: plan.access.isWritable) }
        case .pinned: break  // its pages are in already
        }
        return Registration(mr: mr, flags: flags, strategy: attempt.strategy, reason: reason)
    }

    /// Starts the prefetch of a new ODP MR's pages; a failure (a device without the verb:
    /// EOPNOTSUPP) costs only the speed-up, so it is logged, once per engine.
    func prefetch(_ mr: any RegisteredMemory, writable: Bool) {
        do throws(VerbsError) { try mr.prefetch(forWriting: writable, synchronous: false) } catch {
            guard !prefetchFailureLogged else { return }
            prefetchFailureLogged = true
            logger.warning("ibv_advise_mr prefetch failed: ODP regions fault their pages at first access instead (further failures are not logged)",
                           metadata: ["op": "\(error.op)", "errno": "\(error.errno.symbolicName)"])
        }
    }
}
