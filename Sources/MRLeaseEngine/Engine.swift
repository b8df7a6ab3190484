import CLinux
import Glibc
import LinuxFile
import Logging
import MRLeasePolicy
import SystemPackage
import Verbs

/// Owns every file-backed MR on the host: registers regions over file ranges, holds a lease on
/// each file with live regions, revokes when a lease breaks and restores afterwards.
///
/// One thread owns an engine: the thread that created it. Lease-break signals are aimed at that
/// thread and read from its signalfd, and nothing here takes a lock. Drive it with `poll(timeout:)`
/// or from an event loop: wait for `descriptors` to become readable or `nextDeadline` to pass,
/// then call `process(now:)`.
///
/// Every call that changes state returns the events it produced, for the caller to route after
/// the call has returned: the engine never calls out mid-transition, and no engine method is
/// entered while another is on the stack (checked: `exclusive`).
///
/// The stored properties a registration and a deregistration touch (here, in `TrackedFile` and
/// in `MappedWindow`) are `@exclusivity(unchecked)`: Swift's dynamic exclusivity checks on them
/// were 18% of a registration's instructions (callgrind), and under TCG each goes through
/// `__tls_get_addr`. What the checks would catch cannot happen to them: one thread, one engine
/// call at a time, and none of them is passed `inout` to code that reaches the engine.
public final class Engine {
    public struct Configuration: Sendable {
        public var timing: FileLifecycle.Timing
        public var extentReader: ExtentReader
        /// The least time between two layout comparisons of one file (monotonic ns): each
        /// costs a synced FIEMAP, and a client writing through its fd raises IN_MODIFY per
        /// write. The first IN_MODIFY after a quiet spell is compared at once.
        public var layoutCheckInterval: UInt64
        /// Whether an ODP MR's pages are prefetched (`ibv_advise_mr`, asynchronous) after
        /// registration and after restoration, so a peer's first access does not take the page
        /// faults. Off by default: docs/benchmarks.md measures what it saves and costs.
        public var odpPrefetch: Bool
        /// Pinned registrations of at least this many bytes are left to a worker
        /// (`startRegistration` returns a `PinJob`); nil: every one runs on the caller's thread.
        public var offloadPinBytes: UInt64?
        /// Pins left to a worker of at least this many bytes are made as `pinSlices` MRs of
        /// slices, in parallel (`SlicedMemory`); nil: one MR always.
        public var parallelPinBytes: UInt64?
        public var pinSlices: Int
        /// The engine's time (monotonic ns): `Engine.now` (CLOCK_MONOTONIC), or a test's, which
        /// advances deadlines and intervals without sleeping.
        public var clock: @Sendable () -> UInt64
        public init(timing: FileLifecycle.Timing = .init(), extentReader: ExtentReader = .fiemap,
                    layoutCheckInterval: UInt64 = 20_000_000, odpPrefetch: Bool = false, offloadPinBytes: UInt64? = nil,
                    parallelPinBytes: UInt64? = nil, pinSlices: Int = 1,
                    clock: @escaping @Sendable () -> UInt64 = Engine.now) {
            self.timing = timing
            self.extentReader = extentReader
            self.layoutCheckInterval = layoutCheckInterval
            self.odpPrefetch = odpPrefetch
            self.offloadPinBytes = offloadPinBytes
            self.parallelPinBytes = parallelPinBytes
            self.pinSlices = pinSlices
            self.clock = clock
        }
    }

    public let registrar: any Registrar
    /// The registrar's device as the registration policy sees it.
    public let device: DeviceCapabilities
    public let configuration: Configuration
    let signals: SignalFD
    let inotify: Inotify
    let logger: Logger
    @exclusivity(unchecked) var files: [FileKey: TrackedFile] = [:]
    /// The file the last registration went to: most registrations follow one of the same
    /// file, and this spares them hashing the key. Cleared when that file is untracked.
    @exclusivity(unchecked) var lastFile: TrackedFile?
    var filesByFD: [Int32: FileKey] = [:]
    var filesByWatch: [Int32: FileKey] = [:]
    /// Each region's file (`IDTable`: no SipHash on the registration path).
    @exclusivity(unchecked) var regions = IDTable<FileKey>()
    /// The most regions held since the registrar last dropped its records of gone MRs.
    @exclusivity(unchecked) var regionsPeak = 0
    /// Each owner's regions, so releasing or listing one owner does not walk everyone's.
    @exclusivity(unchecked) var regionsByOwner: [OwnerID: OwnerIndex] = [:]
    /// What each uid holds, kept as regions come and go: quotas ask here.
    @exclusivity(unchecked) var usageByUID: [UInt32: UsageRecord] = [:]
    /// The entries of the two dictionaries above the last registration used: cleared when
    /// they leave their dictionary.
    @exclusivity(unchecked) var lastOwner: OwnerIndex?
    @exclusivity(unchecked) var lastUsage: UsageRecord?
    /// Files' timers by deadline; a file's own `timer` says which entry is current.
    var timers = DeadlineHeap<FileKey>()
    @exclusivity(unchecked) var nextRegion: UInt64 = 1
    @exclusivity(unchecked) var stats = EngineStatistics()
    /// Bytes under live MRs per strategy, and leases held: kept as they change, so
    /// `statistics()` costs the same with 100 000 regions as with none.
    @exclusivity(unchecked) var liveBytes = BytesByStrategy()
    var leaseCount = 0
    var prefetchFailureLogged = false
    /// Plans for `register(owner:fd:offset:…)`, which plans each range it is given.
    lazy var planCache = PlanCache(device: device, pageSize: UInt64(SharedMapping.pageSize))
    /// Restorations' pins left to a worker, until the caller takes them (`takeStartedPins`).
    var startedPins: [PinJob] = []
    /// Events produced by the call in progress, returned when it returns.
    @exclusivity(unchecked) var outbox: [EngineNotice] = []
    @exclusivity(unchecked) var busy = false

    /// Blocks the lease-break signal (and SIGIO, its overflow fallback) in the calling thread.
    public init(registrar: any Registrar, configuration: Configuration = .init(),
                logger: Logger = Logger(label: "mrleased.engine")) throws(EngineError) {
        self.registrar = registrar
        self.device = DeviceCapabilities(name: registrar.deviceName, odp: registrar.odp)
        self.configuration = configuration
        self.logger = logger
        do {
            signals = try SignalFD(signals: [FileLease.breakSignal, SIGIO])
            inotify = try Inotify()
        } catch {
            throw .system(op: "signalfd/inotify_init1", errno: error)
        }
    }

    deinit {
        for file in files.values { untrack(file) }
        // Closing our own signalfd and inotify fd can only fail with EBADF: nothing to report.
        try? signals.close()
        try? inotify.close()
    }

    /// The fds to wait on for readability: the signalfd and the inotify fd.
    public var descriptors: [FileDescriptor] { [signals.descriptor, inotify.descriptor] }

    /// The earliest timer (monotonic ns), if any. May be a cancelled one's: `processTimers`
    /// then fires nothing.
    public var nextDeadline: UInt64? { timers.earliest }

    /// Runs `body` as the only engine call on the stack and returns the events it produced.
    func exclusive<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> (T, [EngineNotice]) {
        precondition(!busy, "an Engine method was entered while another was on the stack")
        busy = true
        defer {
            busy = false
            outbox = []
        }
        let result = try body()
        return (result, outbox)
    }

    func emit(_ owner: OwnerID, _ event: EngineEvent) {
        outbox.append(EngineNotice(owner: owner, event: event))
    }

    // MARK: Registration

    /// Plans and registers `[offset, offset+length)` of the file behind `fd`: inspects the fd,
    /// then `register(owner:uid:fd:facts:plan:)`. For callers without a plan of their own
    /// (tests, the benchmark), who act for themselves: `lessee` defaults to one that may lease
    /// any file, as this process can when it has CAP_LEASE (the daemon passes its client's).
    /// `layoutPolicy` is `revoke` unless asked: the lease protocol for every region (the
    /// daemon passes its client's choice, or its configured `layout-policy`).
    public func register(owner: OwnerID, uid: UInt32 = 0, fd: FileDescriptor, offset: UInt64, length: UInt64,
                         access: RegionAccess, preference: Strategy? = nil, layoutPolicy: LayoutPolicy = .revoke,
                         lessee: Lessee = .privileged) throws(EngineError) -> RegionInfo {
        let facts: FileFacts
        do { facts = try FileFacts.inspect(fd, mount: false) } catch { throw .system(op: "statx", errno: error) }
        let mode = try Self.openMode(fd)
        let plan = planCache.plan(file: PlannedFile(facts), mode: mode, offset: offset, length: length,
                                  access: access, preference: preference, layoutPolicy: layoutPolicy, lessee: lessee)
        switch plan {
        case .success(let plan): return try register(owner: owner, uid: uid, fd: fd, facts: facts, plan: plan)
        case .failure(let refusal): throw .refused(refusal)
        }
    }

    /// Deregisters a region: its MR and mapping go at once; the file's lease goes with its
    /// last region. Returns the events this caused (a revocation that was waiting only for
    /// this region completes).
    public func deregister(_ id: RegionID, owner: OwnerID? = nil) throws(EngineError) -> [EngineNotice] {
        try exclusive { () throws(EngineError) in emit(try remove(id, owner: owner), .deregistered(id)) }.1
    }

    /// Removes a region (its exposures, MR and mapping) and returns its owner.
    @discardableResult
    func remove(_ id: RegionID, owner: OwnerID?) throws(EngineError) -> OwnerID {
        guard let key = regions[id], let file = files[key], let region = file.regions[id],
              owner == nil || region.owner == owner else { throw .unknownRegion(id) }
        discard(region, of: file)
        file.regions[id] = nil
        forget(region)
        let actions = file.lifecycle.remove(id, awaited: region.awaitingAck, now: clock())
        region.awaitingAck = false
        perform(actions, on: file)
        settleOrUntrack(file)
        return region.owner
    }

    /// Deregisters every region of an owner (a client that disconnected or died). Emits no
    /// `deregistered`: whoever ends the owner's connection has ended what hangs on it.
    public func release(owner: OwnerID) -> [EngineNotice] {
        let (_, notices) = exclusive {
            for id in regionIDs(owner: owner) {
                do { try remove(id, owner: owner) } catch {
                    // Only unknownRegion, and the ids come from the owner's own index: a bug if seen.
                    logger.error("release: region vanished", metadata: ["region": "\(id)", "error": "\(error)"])
                }
            }
            compactIndexes()
        }
        return notices
    }

    /// After most regions went (100 000 released), the registrar's records of their MRs are
    /// dropped: its PD sweeps them only when they double, and they would keep their heap
    /// pages from being given back. The indexes shrink by themselves (`IDTable`).
    func compactIndexes() {
        guard regionsPeak > 4 * Swift.max(regions.count, 1024) else { return }
        regionsPeak = regions.count
        registrar.forgetGone()
    }

    /// Drops a region that is gone (deregistered or lost) from the engine's indexes.
    func forget(_ region: Region) {
        regions[region.id] = nil
        if let index = regionsByOwner[region.owner] {
            index.removed { regions.contains($0) }
            if index.count == 0 {
                regionsByOwner[region.owner] = nil
                if lastOwner === index { lastOwner = nil }
            }
        }
        if let record = usageByUID[region.uid] {
            record.usage.remove(region.length)
            if record.usage.regions == 0 {
                usageByUID[region.uid] = nil
                if lastUsage === record { lastUsage = nil }
            }
        }
    }

    /// An owner's quiesce acknowledgement for a revoking region.
    public func acknowledge(_ id: RegionID, owner: OwnerID? = nil) throws(EngineError) -> [EngineNotice] {
        try exclusive { () throws(EngineError) in
            guard let key = regions[id], let file = files[key], let region = file.regions[id],
                  owner == nil || region.owner == owner else { throw .unknownRegion(id) }
            guard region.awaitingAck else { return }
            region.awaitingAck = false
            apply(.acknowledged(count: 1, now: clock()), to: file)
        }.1
    }

    /// Acknowledgements for several regions in one call, all or none: every id must be a
    /// region (the owner's, with `owner`), else nothing is acknowledged and the first unknown
    /// one is named. The revocation runs at the last region a file was waiting for.
    public func acknowledge(_ ids: [RegionID], owner: OwnerID? = nil) throws(EngineError) -> [EngineNotice] {
        try exclusive { () throws(EngineError) in
            // Every id checked before any is acknowledged; the regions found are kept in order.
            var found: [(file: TrackedFile, region: Region)] = []
            found.reserveCapacity(ids.count)
            var current: (key: FileKey, file: TrackedFile)?
            for id in ids {
                guard let key = regions[id] else { throw .unknownRegion(id) }
                if current?.key != key {
                    guard let file = files[key] else { throw .unknownRegion(id) }
                    current = (key, file)
                }
                guard let region = current!.file.regions[id], owner == nil || region.owner == owner else { throw .unknownRegion(id) }
                found.append((current!.file, region))
            }
            // Counted per file (a client's ids mostly name one file): one lifecycle event each.
            // A region named twice is counted once: its flag is cleared at the first.
            var counts: [(file: TrackedFile, count: Int)] = []
            for (file, region) in found where region.awaitingAck {
                region.awaitingAck = false
                if let last = counts.indices.last, counts[last].file === file {
                    counts[last].count += 1
                } else if let at = counts.firstIndex(where: { $0.file === file }) {
                    counts[at].count += 1
                } else {
                    counts.append((file, 1))
                }
            }
            let now = clock()
            for (file, count) in counts where files[file.key] === file { apply(.acknowledged(count: count, now: now), to: file) }
        }.1
    }

    /// An owner's acknowledgement of every one of its regions of a file that a revocation in
    /// progress waits for (`ack` of `file`). Nothing to acknowledge (none of the owner's, the
    /// deadline passed, an unknown file) is not an error: a late ack changes nothing.
    public func acknowledge(file key: FileKey, owner: OwnerID) -> [EngineNotice] {
        exclusive {
            guard let file = files[key], case .revoking(_, let awaiting) = file.lifecycle.phase else { return }
            // The owner that was told alone: every ack still awaited is its own, so it ends the
            // wait without a walk (the revocation, in this call, clears the flags).
            if file.revokingOwners == [owner] { return apply(.acknowledged(count: awaiting, now: clock()), to: file) }
            var count = 0
            for region in file.regions.values where region.awaitingAck && region.owner == owner {
                region.awaitingAck = false
                count += 1
            }
            apply(.acknowledged(count: count, now: clock()), to: file)
        }.1
    }

    /// Revokes a region for good (an operator's kill switch): its MR goes now and its owner is
    /// told it is lost, with reason `revoked`.
    public func revoke(_ id: RegionID) throws(EngineError) -> [EngineNotice] {
        try exclusive { () throws(EngineError) in try revokeForGood(id) }.1
    }

    /// Revokes every region of a file.
    public func revoke(file key: FileKey) -> [EngineNotice] {
        let (_, notices) = exclusive {
            for id in files[key]?.regions.keys ?? [] {
                // The ids were read from the file just now; nothing else runs in between.
                try? revokeForGood(id)
            }
        }
        return notices
    }

    func revokeForGood(_ id: RegionID) throws(EngineError) {
        guard let key = regions[id], let region = files[key]?.regions[id] else { throw .unknownRegion(id) }
        try remove(id, owner: nil)
        stats.regionsLost += 1
        emit(region.owner, .lost(id, reason: .revoked, message: "revoked by an operator"))
    }

    /// Re-reads the file's extents (synced) and says whether the region's part changed since
    /// it was registered or last restored (a following region: since its owner was last told,
    /// by `layout`); `unknown` when either read failed.
    public func verify(_ id: RegionID, owner: OwnerID? = nil) throws(EngineError) -> ExtentDrift {
        try exclusive { () throws(EngineError) in
            guard let key = regions[id], let file = files[key], let region = file.regions[id],
                  owner == nil || region.owner == owner else { throw .unknownRegion(id) }
            let now = readExtents(file, op: "verify")
            let baseline = region.isGuarded ? file.extents : file.followExtents
            return ExtentDrift(region: id, layout: baseline.change(to: now, offset: region.offset, length: region.length),
                               extentsBefore: baseline.count(offset: region.offset, length: region.length),
                               extentsAfter: now.count(offset: region.offset, length: region.length))
        }.0
    }

    /// FIEMAP through the configured reader; a failure is logged and becomes `unknown`.
    func readExtents(_ file: TrackedFile, op: String) -> Extents {
        do {
            return .known(try configuration.extentReader.read(file.fd, file.backing))
        } catch {
            logger.error("FS_IOC_FIEMAP failed: layout unknown", metadata: ["file": "\(file.key)", "during": "\(op)", "errno": "\(error.symbolicName)"])
            return .unknown(error)
        }
    }

    // MARK: Helpers

    func info(_ region: Region, _ file: TrackedFile) -> RegionInfo {
        RegionInfo(id: region.id, owner: region.owner, file: file.key, offset: region.offset, length: region.length,
                   access: region.access, strategy: region.strategy, strategyReason: region.strategyReason,
                   layoutPolicy: region.policy, backing: file.backing, device: registrar.deviceName, state: region.state, keys: region.keys,
                   generation: region.generation)
    }

    /// How `fd` was opened, as the registration plan asks it.
    public static func openMode(_ fd: FileDescriptor) throws(EngineError) -> OpenMode {
        let flags = fcntl(fd.rawValue, F_GETFL)
        guard flags >= 0 else { throw .system(op: "fcntl(F_GETFL)", errno: Errno(rawValue: errno)) }
        if flags & MRL_O_PATH != 0 { return .path }
        switch flags & O_ACCMODE {
        case O_RDWR: return .readWrite
        case O_WRONLY: return .writeOnly
        default: return .readOnly
        }
    }

    /// The engine's time now (its configuration's clock): what its deadlines, intervals and
    /// measurements are taken on.
    public func clock() -> UInt64 { configuration.clock() }

    /// CLOCK_MONOTONIC in nanoseconds: the default clock, and the daemon's.
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// Bytes per strategy, one field each: counted on every registration, so no hashing.
extension Usage {
    mutating func add(_ length: UInt64) {
        regions += 1
        bytes += length
    }

    mutating func remove(_ length: UInt64) {
        regions -= 1
        bytes -= length
    }
}

/// What `verify` found.
public struct ExtentDrift: Sendable, Equatable {
    public var region: RegionID
    public var layout: LayoutChange
    public var extentsBefore: Int
    public var extentsAfter: Int
}
