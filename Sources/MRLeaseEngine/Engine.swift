import Glibc
import LinuxFile
import Logging
import SystemPackage
import Verbs

/// Owns every file-backed MR on the host: registers regions over file ranges, holds a lease on
/// each file with live regions, revokes when a lease breaks and restores afterwards.
///
/// One thread owns an engine: the thread that created it. Lease-break signals are aimed at that
/// thread and read from its signalfd, and nothing here takes a lock. Drive it with `poll(timeout:)`
/// or from an event loop: wait for `descriptors` to become readable or `nextDeadline` to pass,
/// then call `process(now:)`.
public final class Engine {
    public struct Configuration: Sendable {
        public var timing: FileLifecycle.Timing
        public init(timing: FileLifecycle.Timing = .init()) { self.timing = timing }
    }

    public let registrar: any Registrar
    public let configuration: Configuration
    let signals: SignalFD
    let inotify: Inotify
    let logger: Logger
    var files: [FileKey: TrackedFile] = [:]
    var filesByFD: [Int32: FileKey] = [:]
    var filesByWatch: [Int32: FileKey] = [:]
    var regions: [RegionID: FileKey] = [:]
    /// Each owner's regions, so releasing or listing one owner does not walk everyone's.
    var regionsByOwner: [OwnerID: Set<RegionID>] = [:]
    var nextRegion: UInt64 = 1
    var stats = EngineStatistics()
    var onEvent: (OwnerID, EngineEvent) -> Void

    /// Blocks the lease-break signal (and SIGIO, its overflow fallback) in the calling thread.
    public init(registrar: any Registrar, configuration: Configuration = .init(),
                logger: Logger = Logger(label: "mrleased.engine"),
                onEvent: @escaping (OwnerID, EngineEvent) -> Void) throws(EngineError) {
        self.registrar = registrar
        self.configuration = configuration
        self.logger = logger
        self.onEvent = onEvent
        do {
            signals = try SignalFD(signals: [FileLease.breakSignal, SIGIO])
            inotify = try Inotify()
        } catch {
            throw .system(op: "signalfd/inotify_init1", errno: error)
        }
    }

    deinit {
        for file in files.values { untrack(file) }
        try? signals.close()
        try? inotify.close()
    }

    /// The fds to wait on for readability: the signalfd and the inotify fd.
    public var descriptors: [FileDescriptor] { [signals.descriptor, inotify.descriptor] }

    /// The earliest timer (monotonic ns), if any.
    public var nextDeadline: UInt64? { files.values.compactMap(\.timer).min() }

    // MARK: Registration

    /// Registers `[offset, offset+length)` of the file behind `fd` for `access`, owned by `owner`.
    ///
    /// `fd` stays the caller's; the engine keeps its own duplicate. Its open mode must allow
    /// the access (O_RDONLY never yields a writable region). `offset` must be page-aligned and
    /// the range inside the file.
    /// `facts`: the caller's own fresh `FileFacts.inspect(fd)`, when it has one, saves a statx;
    /// `openForWrite`: whether the fd is O_RDWR, when the caller has read its flags, saves an
    /// fcntl (a batch of ranges of one fd needs each once).
    public func register(owner: OwnerID, fd: FileDescriptor, offset: UInt64, length: UInt64,
                         access: RegionAccess, preference: Strategy? = nil, facts known: FileFacts? = nil,
                         openForWrite knownMode: Bool? = nil) throws(EngineError) -> RegionInfo {
        let facts: FileFacts
        if let known { facts = known } else {
            do { facts = try FileFacts.inspect(fd, mount: false) } catch { throw .system(op: "statx", errno: error) }
        }
        guard facts.kind == .regular else { throw .notRegularFile(kind: facts.kind.rawValue) }
        let writable: Bool
        if let knownMode { writable = knownMode } else { writable = try Self.openForWrite(fd) }
        if access.isWritable && !writable {
            throw .accessDenied("\(access) access needs an fd opened O_RDWR; this fd is read-only")
        }
        let page = UInt64(SharedMapping.pageSize)
        guard offset % page == 0 else { throw .badAlignment(offset: offset, pageSize: Int(page)) }
        guard length > 0, offset < facts.size, length <= facts.size - offset else {
            throw .rangeOutOfFile(offset: offset, length: length, size: facts.size)
        }

        let key = FileKey(device: facts.device, inode: facts.inode)
        // The lease follows the fd's open mode, not the access: a read lease on an O_RDWR fd is
        // refused (EAGAIN), so an O_RDWR fd always gets a write lease.
        let file: TrackedFile
        if let tracked = files[key] { file = tracked } else { file = try track(key: key, fd: fd, facts: facts, writable: writable) }
        if access.isWritable && !file.writable {
            throw .fileBusy(leaseType: "write: mrleased holds this file read-only for other regions; a writable region needs them gone")
        }
        guard file.lifecycle.phase == .leased else {
            throw .fileBusy(leaseType: "\(file.leaseType): the file is being revoked or restored; retry after its regions are restored")
        }
        do {
            let id = RegionID(nextRegion)
            let region = try makeRegion(id: id, owner: owner, file: file, offset: offset, length: length,
                                        access: access, preference: preference)
            nextRegion += 1
            file.regions[id] = region
            file.lifecycle.add(id)
            regions[id] = key
            regionsByOwner[owner, default: []].insert(id)
            stats.registrations += 1
            logger.debug("registered", metadata: ["region": "\(id)", "file": "\(key)", "strategy": "\(region.strategy)"])
            return info(region, file)
        } catch {
            if file.regions.isEmpty { untrack(file) }
            throw error
        }
    }

    /// Deregisters a region: its MR and mapping go at once; the file's lease goes with its
    /// last region.
    public func deregister(_ id: RegionID, owner: OwnerID? = nil) throws(EngineError) {
        guard let key = regions[id], let file = files[key], let region = file.regions[id],
              owner == nil || region.owner == owner else { throw .unknownRegion(id) }
        region.tearDown()
        file.regions[id] = nil
        forget(id, of: region.owner)
        let actions = file.lifecycle.remove(id, now: Self.now())
        perform(actions, on: file)
        if file.regions.isEmpty { untrack(file) }
    }

    /// Deregisters every region of an owner (a client that disconnected or died).
    public func release(owner: OwnerID) {
        for id in regionsByOwner[owner] ?? [] {
            try? deregister(id)
        }
        registrar.release(owner: owner)
    }

    /// Drops a region that is gone (deregistered or lost) from the engine's indexes.
    func forget(_ id: RegionID, of owner: OwnerID) {
        regions[id] = nil
        regionsByOwner[owner]?.remove(id)
        if regionsByOwner[owner]?.isEmpty == true { regionsByOwner[owner] = nil }
    }

    /// An owner's quiesce acknowledgement for a revoking region.
    public func acknowledge(_ id: RegionID, owner: OwnerID? = nil) throws(EngineError) {
        guard let key = regions[id], let file = files[key], let region = file.regions[id],
              owner == nil || region.owner == owner else { throw .unknownRegion(id) }
        apply(.acknowledged(id, now: Self.now()), to: file)
    }

    /// Revokes a region for good (an operator's kill switch): its MR goes now and its owner is
    /// told it is lost.
    public func revoke(_ id: RegionID) throws(EngineError) {
        guard let key = regions[id], let region = files[key]?.regions[id] else { throw .unknownRegion(id) }
        let owner = region.owner
        try deregister(id)
        onEvent(owner, .lost(id, reason: "revoked"))
    }

    /// Revokes every region of a file.
    public func revoke(file key: FileKey) {
        for id in files[key]?.regions.keys.sorted() ?? [] { try? revoke(id) }
    }

    /// Re-reads the file's extents (synced) and reports whether the region's part changed
    /// since registration.
    public func verify(_ id: RegionID) throws(EngineError) -> ExtentDrift {
        guard let key = regions[id], let file = files[key], let region = file.regions[id] else { throw .unknownRegion(id) }
        let now: ExtentMap?
        do { now = try TrackedFile.readExtents(file.fd, backing: file.backing) } catch { throw .system(op: "FS_IOC_FIEMAP", errno: error) }
        let before = file.extents?.extents(overlapping: region.offset, length: region.length) ?? []
        let after = now?.extents(overlapping: region.offset, length: region.length) ?? []
        let changed = file.extents.map { old in now.map { old.differs(from: $0, offset: region.offset, length: region.length) } ?? true } ?? false
        return ExtentDrift(region: id, layoutChanged: changed, extentsBefore: before.count, extentsAfter: after.count)
    }

    public func list(owner: OwnerID? = nil) -> [RegionInfo] {
        guard let owner else {
            return files.values.flatMap { file in file.regions.values.map { info($0, file) } }.sorted { $0.id < $1.id }
        }
        return (regionsByOwner[owner] ?? []).compactMap { id in
            regions[id].flatMap { files[$0] }.flatMap { file in file.regions[id].map { info($0, file) } }
        }.sorted { $0.id < $1.id }
    }

    public func statistics() -> EngineStatistics {
        var snapshot = stats
        snapshot.files = files.count
        snapshot.regions = regions.count
        snapshot.leasesHeld = files.values.filter(\.leaseHeld).count
        snapshot.bytesByStrategy = [:]
        for file in files.values {
            for region in file.regions.values where region.mr != nil {
                snapshot.bytesByStrategy[region.strategy.rawValue, default: 0] += region.length
            }
        }
        return snapshot
    }

    // MARK: Helpers

    func info(_ region: Region, _ file: TrackedFile) -> RegionInfo {
        RegionInfo(id: region.id, owner: region.owner, file: file.key, offset: region.offset, length: region.length,
                   access: region.access, strategy: region.strategy, strategyReason: region.strategyReason,
                   backing: file.backing, device: registrar.deviceName, state: region.state, keys: region.keys)
    }

    static func openForWrite(_ fd: FileDescriptor) throws(EngineError) -> Bool {
        let flags = fcntl(fd.rawValue, F_GETFL)
        guard flags >= 0 else { throw .system(op: "fcntl(F_GETFL)", errno: Errno(rawValue: errno)) }
        return flags & O_ACCMODE == O_RDWR
    }

    /// CLOCK_MONOTONIC in nanoseconds: the engine's one clock.
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// What `verify` found.
public struct ExtentDrift: Sendable, Equatable {
    public var region: RegionID
    public var layoutChanged: Bool
    public var extentsBefore: Int
    public var extentsAfter: Int
}
