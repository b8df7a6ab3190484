import Glibc
import LinuxFile
import SystemPackage

extension Engine {
    /// Waits up to `timeout` for a lease break, a close of a released file, or a timer, and
    /// handles what arrived. For tests, benchmarks and simple loops; the daemon uses epoll.
    public func poll(timeout: Duration) {
        let now = Self.now()
        var waitNanos = UInt64(timeout.components.seconds) * 1_000_000_000 + UInt64(timeout.components.attoseconds / 1_000_000_000)
        if let deadline = nextDeadline { waitNanos = min(waitNanos, deadline > now ? deadline - now : 0) }
        var fds = descriptors.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
        _ = Glibc.poll(&fds, nfds_t(fds.count), Int32(min(waitNanos / 1_000_000 + (waitNanos % 1_000_000 == 0 ? 0 : 1), UInt64(Int32.max))))
        process(now: Self.now())
    }

    /// Handles everything pending: lease-break signals, inotify events, due timers.
    public func process(now: UInt64) {
        handleSignals()
        handleInotify()
        processTimers(now: now)
    }

    /// Fires the timers due at `now` (quiesce deadlines, re-lease retries) without reading
    /// the signalfd or inotify fd: for a loop that knows those are not ready.
    public func processTimers(now: UInt64) {
        for file in files.values {
            if let timer = file.timer, timer <= now {
                file.timer = nil
                apply(.timer(now: now), to: file)
            }
        }
    }

    func handleSignals() {
        guard let infos = try? signals.read() else { return }
        for info in infos {
            if info.signal == FileLease.breakSignal, let key = filesByFD[info.fd], let file = files[key] {
                leaseBroken(file)
            } else if info.signal == SIGIO {
                // The RT queue overflowed and the kernel fell back to SIGIO without si_fd:
                // any lease whose kernel-side target differs from what we hold is breaking.
                for file in files.values where file.leaseHeld {
                    if (try? file.lease.current()) != file.leaseType { leaseBroken(file) }
                }
            }
        }
    }

    func leaseBroken(_ file: TrackedFile) {
        guard file.lifecycle.phase == .leased else { return }
        let now = Self.now()
        file.breakStarted = now
        stats.breaksHandled += 1
        logger.info("lease break", metadata: ["file": "\(file.key)", "regions": "\(file.regions.count)"])
        apply(.leaseBroken(now: now), to: file)
    }

    func handleInotify() {
        guard let events = try? inotify.read() else { return }
        for event in events {
            guard let key = filesByWatch[event.watch], let file = files[key] else { continue }
            apply(.closed(now: Self.now()), to: file)
        }
    }

    /// Feeds one event to a file's lifecycle and carries out what it returns.
    func apply(_ event: FileLifecycle.Event, to file: TrackedFile) {
        perform(file.lifecycle.handle(event), on: file)
    }

    func perform(_ actions: [FileLifecycle.Action], on file: TrackedFile) {
        for action in actions {
            switch action {
            case .notifyRevoking(let ids, let deadline):
                for id in ids.sorted() {
                    guard let region = file.regions[id] else { continue }
                    region.state = .revoking
                    onEvent(region.owner, .revoking(id, reason: "lease-break", deadline: deadline))
                }
            case .revoke:
                revokeNow(file)
            case .notifyRevoked(let ids):
                for id in ids.sorted() {
                    if let region = file.regions[id] { onEvent(region.owner, .revoked(id)) }
                }
            case .armTimer(let at):
                file.timer = at
            case .watchCloses:
                watch(file)
            case .attemptRestore:
                apply(restore(file), to: file)
            case .notifyRestored(let ids):
                for id in ids.sorted() {
                    guard let region = file.regions[id], let keys = region.keys else { continue }
                    onEvent(region.owner, .restored(id, keys: keys, layoutChanged: region.layoutChanged))
                }
            case .notifyLost(let lost):
                for (id, reason) in lost.sorted(by: { $0.key < $1.key }) {
                    guard let region = file.regions.removeValue(forKey: id) else { continue }
                    region.tearDown()
                    forget(id, of: region.owner)
                    stats.regionsLost += 1
                    onEvent(region.owner, .lost(id, reason: reason))
                }
                if file.regions.isEmpty { untrack(file) }
            }
        }
    }

    /// Deregisters every MR of the file, unmaps, and unlocks the lease — in that order, and
    /// without waiting on anything: the breaker is blocked until the unlock.
    func revokeNow(_ file: TrackedFile) {
        for region in file.regions.values {
            if let failure = region.tearDown() {
                logger.error("deregistration failed", metadata: ["region": "\(region.id)", "op": "\(failure.op)", "errno": "\(failure.errno.symbolicName)"])
            }
            region.state = .revoked
        }
        do {
            try file.lease.release()
        } catch {
            logger.error("lease release failed", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
        }
        file.leaseHeld = false
        if let started = file.breakStarted {
            stats.breakToUnlock.record(nanoseconds: Self.now() - started)
            file.breakStarted = nil
        }
    }

    /// Re-takes the lease, re-reads the extents, re-maps and re-registers every region that
    /// still fits in the file.
    func restore(_ file: TrackedFile) -> FileLifecycle.Event {
        let facts: FileFacts
        do { facts = try FileFacts.inspect(file.fd, mount: false) } catch { return .gone(reason: "restore-failed") }
        if facts.nlink == 0 { return .gone(reason: "unlinked") }
        do {
            try file.lease.acquire(file.leaseType)
        } catch {
            if error == .resourceTemporarilyUnavailable { return .restoreBusy(now: Self.now()) }
            logger.error("lease re-take failed", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
            return .gone(reason: "restore-failed")
        }
        file.leaseHeld = true
        unwatch(file)
        let extents = try? TrackedFile.readExtents(file.fd, backing: file.backing)
        var lost: [RegionID: String] = [:]
        for region in file.regions.values.sorted(by: { $0.id < $1.id }) {
            guard region.offset + region.length <= facts.size else {
                lost[region.id] = "range-truncated"
                continue
            }
            region.layoutChanged = zip(file.extents.map { [$0] } ?? [], extents.map { [$0] } ?? []).contains {
                $0.differs(from: $1, offset: region.offset, length: region.length)
            }
            do {
                let fresh = try makeRegion(id: region.id, owner: region.owner, file: file, offset: region.offset,
                                           length: region.length, access: region.access, preference: region.strategy)
                region.mapping = fresh.mapping
                region.mr = fresh.mr
                region.state = .registered
                stats.restorations += 1
            } catch {
                logger.error("re-registration failed", metadata: ["region": "\(region.id)", "error": "\(error)"])
                lost[region.id] = "restore-failed"
            }
        }
        file.extents = extents
        file.size = facts.size
        return .restored(lost: lost)
    }
}
