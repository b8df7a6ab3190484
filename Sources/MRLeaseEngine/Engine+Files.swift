import Glibc
import LinuxFile
import SystemPackage
import Verbs

extension Engine {
    /// Starts tracking a file: our own fd for it, its lease, its extent map.
    func track(key: FileKey, fd clientFD: FileDescriptor, facts: FileFacts, writable: Bool) throws(EngineError) -> TrackedFile {
        let raw = fcntl(clientFD.rawValue, F_DUPFD_CLOEXEC, 0)
        guard raw >= 0 else { throw .system(op: "fcntl(F_DUPFD_CLOEXEC)", errno: Errno(rawValue: errno)) }
        let fd = FileDescriptor(rawValue: raw)
        let extents: ExtentMap?
        do {
            extents = try TrackedFile.readExtents(fd, backing: facts.backing)
        } catch {
            try? fd.close()
            throw .system(op: "FS_IOC_FIEMAP", errno: error)
        }
        let file = TrackedFile(key: key, fd: fd, writable: writable, backing: facts.backing,
                               size: facts.size, extents: extents, timing: configuration.timing)
        do {
            try file.lease.acquire(file.leaseType)
        } catch {
            try? fd.close()
            if error == .resourceTemporarilyUnavailable { throw .fileBusy(leaseType: "\(file.leaseType)") }
            throw .system(op: "fcntl(F_SETLEASE, \(file.leaseType))", errno: error)
        }
        file.leaseHeld = true
        files[key] = file
        filesByFD[fd.rawValue] = key
        return file
    }

    /// Stops tracking: every MR and mapping goes, then the lease, then our fd.
    func untrack(_ file: TrackedFile) {
        for region in file.regions.values { region.tearDown() }
        file.regions = [:]
        if file.leaseHeld { try? file.lease.release() }
        file.leaseHeld = false
        unwatch(file)
        filesByFD[file.fd.rawValue] = nil
        files[file.key] = nil
        try? file.fd.close()
    }

    /// Maps the range and registers it with the strategy that works: the file's cached one
    /// first, else ODP when the device's RC ODP covers the access, else pinned. Falls back on
    /// the errnos the kernel uses to refuse a kind of registration (EOPNOTSUPP, EFAULT, EINVAL).
    func makeRegion(id: RegionID, owner: OwnerID, file: TrackedFile, offset: UInt64, length: UInt64,
                    access: RegionAccess, preference: Strategy?) throws(EngineError) -> Region {
        let mapping = try map(file, offset: offset, length: length, access: access)
        var order: [Strategy] = preference.map { [$0] } ?? [.odp, .pinned]
        if preference == nil, let cached = file.strategyCache[access.isWritable], cached == .pinned { order = [.pinned, .odp] }
        var trials: [Trial] = []
        for strategy in order {
            let kind: TrialKind = strategy == .odp ? .odp : (access.isWritable ? .pinnedWrite : .pinnedReadOnly)
            let flags = strategy == .odp ? access.verbsFlags.union(.onDemand) : access.verbsFlags
            if strategy == .odp, let gap = StrategyChooser.odpGap(device: registrar.deviceName, odp: registrar.odp, access: access) {
                trials.append(Trial(kind: kind, flags: flags, outcome: .notTried(reason: gap)))
                continue
            }
            do {
                let mr = try registrar.register(owner: owner, address: mapping.base, length: Int(length), flags: flags)
                trials.append(Trial(kind: kind, flags: flags, outcome: .registered))
                file.strategyCache[access.isWritable] = strategy
                let decision = StrategyChooser.choose(device: registrar.deviceName, odp: registrar.odp, backing: file.backing,
                                                      access: access, trials: trials, preference: strategy)
                let reason: String
                if case .use(_, let why) = decision { reason = why } else { reason = "\(strategy) registration succeeded" }
                return Region(id: id, owner: owner, offset: offset, length: length, access: access,
                              strategy: strategy, strategyReason: reason, mapping: mapping, mr: mr)
            } catch {
                trials.append(Trial(kind: kind, flags: flags, outcome: .failed(op: error.op, errno: error.errno)))
                guard [.notSupported, .badAddress, .invalidArgument].contains(error.errno) else {
                    try? mapping.unmap()
                    throw .system(op: error.op, errno: error.errno)
                }
            }
        }
        try? mapping.unmap()
        let decision = StrategyChooser.choose(device: registrar.deviceName, odp: registrar.odp, backing: file.backing,
                                              access: access, trials: trials, preference: preference)
        if case .refuse(let refusal) = decision { throw .strategyUnavailable(refusal) }
        throw .strategyUnavailable(StrategyRefusal(errno: nil, message: "no registration strategy worked"))
    }

    /// One shared mapping per region: revoking or restoring a region never disturbs another's
    /// mapping, and a region's MR covers exactly its own pages.
    func map(_ file: TrackedFile, offset: UInt64, length: UInt64, access: RegionAccess) throws(EngineError) -> SharedMapping {
        let page = UInt64(SharedMapping.pageSize)
        let mapped = Int((length + page - 1) / page * page)
        // MAP_SYNC where stores reach media directly (FS-DAX) and may be written.
        let sync = file.backing == .fsDAX && file.writable
        do {
            return try SharedMapping(fd: file.fd, offset: offset, length: mapped,
                                     protection: .forRegions(writableFD: file.writable), sync: sync)
        } catch {
            throw .system(op: sync ? "mmap(MAP_SHARED_VALIDATE|MAP_SYNC)" : "mmap(MAP_SHARED)", errno: error)
        }
    }

    func watch(_ file: TrackedFile) {
        guard file.watch == nil else { return }
        // /proc/self/fd/N resolves to the inode itself: no path of the client's is needed.
        if let wd = try? inotify.addWatch(path: "/proc/self/fd/\(file.fd.rawValue)",
                                          mask: [.closeWrite, .closeNoWrite, .attrib, .deleteSelf]) {
            file.watch = wd
            filesByWatch[wd] = file.key
        }
    }

    func unwatch(_ file: TrackedFile) {
        guard let wd = file.watch else { return }
        try? inotify.removeWatch(wd)
        filesByWatch[wd] = nil
        file.watch = nil
    }
}
