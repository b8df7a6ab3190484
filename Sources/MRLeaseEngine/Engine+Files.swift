import Glibc
import LinuxFile
import MRLeasePolicy
import SystemPackage
import Verbs

extension Engine {
    /// Starts tracking a file: our own fd for it and its extent map. The lease is taken before
    /// the first guarded registration (`takeLease`): a file whose regions all follow it holds
    /// none.
    func track(key: FileKey, fd clientFD: FileDescriptor, facts: FileFacts, writable: Bool) throws(EngineError) -> TrackedFile {
        let raw = fcntl(clientFD.rawValue, F_DUPFD_CLOEXEC, 0)
        guard raw >= 0 else { throw .system(op: "fcntl(F_DUPFD_CLOEXEC)", errno: Errno(rawValue: errno)) }
        let fd = FileDescriptor(rawValue: raw)
        let extents: ExtentMap?
        do {
            extents = try configuration.extentReader.read(fd, facts.backing)
        } catch {
            // The refusal names the mount's filesystem, read now that it is needed (the
            // registration path reads no mountinfo; f_type alone calls a 9p file ext4), and
            // read through our fd before it is closed.
            let refusal = PlanRefusal.noExtentMap(filesystem: mountedFilesystem(fd) ?? facts.filesystem, errno: error)
            closeOwn(fd)
            if let refusal { throw .refused(refusal) }
            throw .system(op: "FS_IOC_FIEMAP", errno: error)
        }
        let file = TrackedFile(key: key, fd: fd, writable: writable, backing: facts.backing,
                               size: facts.size, extents: .known(extents), timing: configuration.timing)
        files[key] = file
        filesByFD[fd.rawValue] = key
        watch(file, closes: false)
        return file
    }

    /// The type of the mount `fd` is on, from /proc/self/mountinfo; nil (logged) when it
    /// cannot be read, and the caller falls back to statfs's word.
    func mountedFilesystem(_ fd: FileDescriptor) -> String? {
        do { return try FileFacts.inspect(fd, mount: true).filesystem } catch {
            logger.debug("statx/mountinfo failed naming a refused file's filesystem", metadata: ["errno": "\(error.symbolicName)"])
            return nil
        }
    }

    /// Takes the file's lease for a guarded registration about to be made, if it is not held.
    /// The kernel refuses it (EAGAIN) while another process has the file open in a way the
    /// lease forbids: the registration is then `fileBusy`.
    func takeLease(_ file: TrackedFile) throws(EngineError) {
        guard !file.leaseHeld else { return }
        do {
            try file.lease.acquire(file.leaseType)
        } catch {
            if error == .resourceTemporarilyUnavailable { throw .fileBusy(leaseType: "\(file.leaseType)") }
            throw .system(op: "fcntl(F_SETLEASE, \(file.leaseType))", errno: error)
        }
        setLease(file, held: true)
        if file.writable && !file.watchingCloses { watch(file, closes: true) }
    }

    /// Gives the lease back when no region needs it any more (the last guarded region went,
    /// and following ones remain): holding it would make every other opener of the file wait
    /// for nothing.
    func settleLease(_ file: TrackedFile) {
        guard file.leaseHeld, !file.hasGuardedRegions, file.pinWindows.isEmpty, file.lifecycle.phase == .leased else { return }
        do { try file.lease.release() } catch {
            logger.warning("lease release failed", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
            return
        }
        setLease(file, held: false)
        if file.watchingCloses { watch(file, closes: false) }
    }

    /// Stops tracking: every MR goes, then the lease, then the mappings and our fd.
    func untrack(_ file: TrackedFile) {
        for region in file.regions.values { deregister(region) }
        if file.leaseHeld {
            do { try file.lease.release() } catch {
                // Our fd closes next, which drops the lease anyway.
                logger.warning("lease release failed", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
            }
        }
        setLease(file, held: false)
        for region in file.regions.values { giveBack(region, of: file) }
        file.regions.removeAll()
        unwatch(file)
        filesByFD[file.fd.rawValue] = nil
        files[file.key] = nil
        if lastFile === file { lastFile = nil }
        closeOwn(file.fd)
    }

    /// Withdraws the region's exposures and deregisters its MR (logging a failure), keeping
    /// the live-bytes counter. The mapping stays.
    func deregister(_ region: Region) {
        guard region.mr != nil || !region.exposures.isEmpty else { return }
        if region.mr != nil { liveBytes[region.strategy] -= region.length }
        if let failure = region.deregister() {
            logger.error("deregistration failed", metadata: ["region": "\(region.id)", "op": "\(failure.op)", "errno": "\(failure.errno.symbolicName)"])
        }
    }

    /// A region that is going for good: its MR (if still there), then its hold on the window,
    /// which is unmapped when no region of the file uses it any more.
    func discard(_ region: Region, of file: TrackedFile) {
        deregister(region)
        giveBack(region, of: file)
    }

    func giveBack(_ region: Region, of file: TrackedFile) {
        guard let window = region.window else { return }
        region.window = nil
        release(window, of: file)
    }

    /// One user fewer; the last one unmaps the window.
    func release(_ window: MappedWindow, of file: TrackedFile) {
        window.users -= 1
        guard window.users == 0 else { return }
        file.windows[window.span] = nil
        if file.lastWindow === window { file.lastWindow = nil }
        unmap(window.mapping)
    }

    /// Records whether the engine holds the file's lease, keeping the leases counter.
    func setLease(_ file: TrackedFile, held: Bool) {
        guard file.leaseHeld != held else { return }
        file.leaseHeld = held
        if held { file.leaseEpoch += 1 }
        leaseCount += held ? 1 : -1
    }

    /// Closes an fd the engine duplicated; close(2) on it fails only with EBADF (a bug) or EIO
    /// from a filesystem's flush, and either way the fd is gone.
    func closeOwn(_ fd: FileDescriptor) {
        do { try fd.close() } catch {
            logger.warning("close failed", metadata: ["fd": "\(fd.rawValue)", "error": "\(error)"])
        }
    }

    func unmap(_ mapping: SharedMapping) {
        // munmap fails only for a range that is not a mapping (EINVAL): nothing left to undo.
        try? mapping.unmap()
    }

    /// The window of the file covering `[offset, offset+length)`, mapped on first use, with one
    /// more user counted: the caller gives it back (`giveBack`) when the region goes, or at
    /// once if the registration fails. Windows are per file: revoking or restoring one file
    /// never touches another file's mappings.
    func window(_ file: TrackedFile, offset: UInt64, length: UInt64) throws(EngineError) -> MappedWindow {
        let span = WindowSpan(covering: offset, length: length)
        if let window = file.lastWindow, window.span == span, window.users > 0 {
            window.users += 1
            return window
        }
        if let window = file.windows[span] {
            window.users += 1
            file.lastWindow = window
            return window
        }
        // MAP_SYNC where stores reach media directly (FS-DAX) and may be written.
        let sync = file.backing == .fsDAX && file.writable
        let mapping: SharedMapping
        do {
            mapping = try SharedMapping(fd: file.fd, offset: span.start, length: Int(span.end - span.start),
                                        protection: .forRegions(writableFD: file.writable), sync: sync)
        } catch {
            throw .system(op: sync ? "mmap(MAP_SHARED_VALIDATE|MAP_SYNC)" : "mmap(MAP_SHARED)", errno: error)
        }
        let window = MappedWindow(span: span, mapping: mapping)
        window.users = 1
        file.windows[span] = window
        file.lastWindow = window
        return window
    }

    /// Points the file's inotify watch at what it needs now. Always IN_MODIFY: a write,
    /// truncate or fallocate through the open file description our lease is on (the owner's
    /// own fd, a child's copy, one passed over SCM_RIGHTS) breaks no lease, and this event is
    /// the only word of it; and IN_ATTRIB: an unlink drops nlink. With `closes` (the file is
    /// released) also closes, the cue to restore. One watch per inode carries one mask, and
    /// inotify_add_watch replaces it. Without the watch, layout changes go unseen and the
    /// backoff timer alone restores: logged, not fatal.
    ///
    /// A file under a write lease watches closes all along: no other open of it can last
    /// without breaking the lease, so its closes are breakers' (none is spurious), and the
    /// revocation then has no inotify_add_watch (a path walk through /proc) between the break
    /// and the unlock. A read lease lets other readers come and go: its file watches closes only
    /// from the revocation on.
    func watch(_ file: TrackedFile, closes: Bool) {
        let closes = closes || (file.writable && file.leaseHeld)
        var mask: Inotify.Mask = [.modify, .attrib]
        if closes { mask.formUnion([.closeWrite, .closeNoWrite, .deleteSelf]) }
        // /proc/self/fd/N resolves to the inode itself: no path of the client's is needed.
        do {
            let wd = try inotify.addWatch(path: "/proc/self/fd/\(file.fd.rawValue)", mask: mask)
            if let old = file.watch, old != wd { filesByWatch[old] = nil }
            file.watch = wd
            file.watchingCloses = closes
            filesByWatch[wd] = file.key
        } catch {
            logger.warning("inotify_add_watch failed: layout changes through the leased fd go unseen; restoring on the backoff timer only",
                           metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
        }
    }

    func unwatch(_ file: TrackedFile) {
        guard let wd = file.watch else { return }
        do { try inotify.removeWatch(wd) } catch {
            // EINVAL: the kernel already dropped the watch (the inode went, IN_IGNORED).
            logger.debug("inotify_rm_watch failed", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
        }
        filesByWatch[wd] = nil
        file.watch = nil
        file.watchingCloses = false
    }

    /// An IN_MODIFY on a tracked file: compare now, or once the debounce interval has passed
    /// since the last comparison. Only while there is something to compare: guarded MRs
    /// registered (leased, or quiescing for a break; a released file's restore re-reads the
    /// layout anyway), or following regions, whatever the lifecycle's phase.
    func layoutTouched(_ file: TrackedFile, now: UInt64) {
        if !file.pinWindows.isEmpty { file.touchedWhilePinning = true }
        guard file.hasFollowingRegions || file.mrsRegistered else { return }
        if let last = file.layoutCheckedAt, now < last + configuration.layoutCheckInterval {
            if file.layoutTimer == nil {
                let at = last + configuration.layoutCheckInterval
                file.layoutTimer = at
                timers.schedule(file.key, at: at)
            }
            return
        }
        checkLayout(file, now: now)
    }

    /// Compares the file's size and extents (synced FIEMAP; for shmem, which has no block
    /// map, the residency of each pinned region's pages) with what the regions were
    /// registered against. A guarded range that changed revokes and restores the file's
    /// guarded regions with cause `layout-changed`; a following one is reported to its owner
    /// (`layout`), or lost when the file no longer covers it. A FIEMAP failure revokes
    /// nothing (readExtents logs it: the daemon could not look, and the next IN_MODIFY looks
    /// again) and tells following regions' owners `unknown`.
    func checkLayout(_ file: TrackedFile, now: UInt64) {
        file.layoutCheckedAt = now
        let guarded = file.mrsRegistered && file.hasGuardedRegions
        guard guarded || file.hasFollowingRegions else { return }
        stats.layoutChecks += 1
        let size: UInt64
        do { size = try FileFacts.inspect(file.fd, mount: false).size } catch {
            logger.error("statx failed in a layout check", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
            return
        }
        var extents: Extents?
        if guarded { checkGuardedLayout(file, size: size, extents: &extents, now: now) }
        // The revocation may have ended the file (every region lost).
        guard files[file.key] === file, file.hasFollowingRegions else { return }
        followLayout(file, size: size, extents: extents ?? readExtents(file, op: "layout check"))
    }

    /// The guarded regions' part of a layout check: revokes them when one changed. Reads the
    /// extents into `extents` when it needs them (the following regions' part reuses them).
    func checkGuardedLayout(_ file: TrackedFile, size: UInt64, extents: inout Extents?, now: UInt64) {
        // The cheap looks first: the size, and whether a pinned region's pages are still the
        // file's (mincore). Either one seen changed revokes at once, without the synced FIEMAP,
        // which writes dirty pages back first and so kept pinned MRs alive for tens of ms
        // while peers' WRITEs into dropped pages completed with success (docs/reliability.md).
        // The lifecycle's regions are the file's guarded ones, already in id order in the table.
        let regions = file.regions.values.filter(\.isGuarded)
        var changed = regions.filter { $0.offset + $0.length > size || lostPages($0, file) }.map(\.id)
        if changed.isEmpty {
            let read = readExtents(file, op: "layout check")
            extents = read
            changed = regions.filter { file.extents.change(to: read, offset: $0.offset, length: $0.length) == .changed }.map(\.id)
        }
        guard !changed.isEmpty else { return }
        logger.warning("layout changed under registered regions without a lease break: revoking",
                       metadata: ["file": "\(file.key)", "regions": "\(changed)", "size": "\(size)"])
        stats.layoutChangesHandled += 1
        file.layoutChanged = Set(changed)
        apply(.layoutChanged(now: now), to: file)
    }

    /// The following regions' part of a layout check: each range that moved is reported to its
    /// owner (`layout`: its MR, keys and peers stay); each the file no longer covers is lost
    /// (`range-truncated`): its MR goes, so a peer's access past the end fails instead of
    /// faulting pages the file may grow back later under other data. The baseline becomes what
    /// was read, so each change is told once.
    func followLayout(_ file: TrackedFile, size: UInt64, extents: Extents) {
        let following = file.regions.values.filter { !$0.isGuarded }
        var lost: [Region] = [], told: [RegionID] = []
        for region in following {
            if region.offset + region.length > size {
                lost.append(region)
                continue
            }
            let change = file.followExtents.change(to: extents, offset: region.offset, length: region.length)
            if change != .unchanged {
                stats.layoutChangesFollowed += 1
                told.append(region.id)
                emit(region.owner, .layout(region.id, layout: change, size: size))
            }
        }
        // What each comparison found, for an operator (or a test) asking why a change was or
        // was not told: the extents before and after, over the whole file.
        logger.debug("layout compared for following regions", metadata: [
            "file": "\(file.key)", "size": "\(size)", "told": "\(told)", "lost": "\(lost.map(\.id))",
            "before": "\(file.followExtents)", "after": "\(extents)"])
        file.followExtents = extents
        for region in lost {
            lose(region, of: file, reason: .rangeTruncated, message: "file is now \(size) bytes; the region ends at \(region.offset + region.length)")
        }
        if !lost.isEmpty {
            logger.info("file shrank below following regions: lost", metadata: ["file": "\(file.key)", "regions": "\(lost.map(\.id))", "size": "\(size)"])
            settleOrUntrack(file)
        }
    }

    /// Whether a pinned region holds pages the file no longer has. A pinned page stays in the
    /// page cache (or shmem) for as long as it is the file's: truncate, PUNCH_HOLE, ZERO_RANGE,
    /// COLLAPSE_RANGE and reflink drop the range's pages from the cache and unmap them, while
    /// the MR keeps them, so mincore on the daemon's own mapping then reports them absent.
    /// FIEMAP cannot show a hole punched in tmpfs at all. (FS-DAX is never pinned.)
    func lostPages(_ region: Region, _ file: TrackedFile) -> Bool {
        guard file.backing != .fsDAX, region.strategy == .pinned, let window = region.window else { return false }
        let page = UInt64(SharedMapping.pageSize)
        let pages = (region.length + page - 1) / page
        do {
            return try window.mapping.residentPages(offset: Int(region.offset - window.span.start), length: Int(pages * page)) < pages
        } catch {
            logger.error("mincore failed in a layout check", metadata: ["region": "\(region.id)", "errno": "\(error.symbolicName)"])
            return false
        }
    }
}
