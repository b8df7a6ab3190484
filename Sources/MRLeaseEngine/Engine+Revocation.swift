import Glibc
import LinuxFile
import MRLeasePolicy
import SystemPackage
import Verbs

extension Engine {
    /// Waits up to `timeout` for a lease break, a close of a released file, or a timer, handles
    /// what arrived, and returns the events. For tests, benchmarks and simple loops; the daemon
    /// uses epoll.
    public func poll(timeout: Duration) -> [EngineNotice] {
        let now = clock()
        var waitNanos = UInt64(timeout.components.seconds) * 1_000_000_000 + UInt64(timeout.components.attoseconds / 1_000_000_000)
        if let deadline = nextDeadline { waitNanos = min(waitNanos, deadline > now ? deadline - now : 0) }
        var fds = descriptors.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
        let ready = Glibc.poll(&fds, nfds_t(fds.count), Int32(min(waitNanos / 1_000_000 + (waitNanos % 1_000_000 == 0 ? 0 : 1), UInt64(Int32.max))))
        // EINTR (or any failure) only ends the wait early: then everything is read. Otherwise
        // only what is readable, as the daemon's loop does: a read that would only say EAGAIN
        // is a syscall before a break's unlock.
        guard ready >= 0 else { return process(now: clock()) }
        let signalled = fds[0].revents != 0, inotified = fds[1].revents != 0
        return exclusive {
            if signalled { handleSignals() }
            if inotified { handleInotify() }
            fireTimers(now: clock())
        }.1
    }

    /// What keeps a layout change through the leased open file description from going
    /// unseen: every tracked file's inotify watch carries IN_MODIFY (`watch(_:closes:)`).
    /// fanotify's pre-content events could stop the change before it happens (Linux 6.14+,
    /// ext4/xfs only; docs/kernel-matrix.md) and are not used yet.
    public static let layoutProtection: LayoutProtection = .inotifyDetect
    public var layoutProtection: LayoutProtection { Self.layoutProtection }

    /// Handles everything pending: lease-break signals, inotify events, due timers.
    public func process(now: UInt64) -> [EngineNotice] {
        exclusive {
            handleSignals()
            handleInotify()
            fireTimers(now: now)
        }.1
    }

    /// Reads the signalfd only (it is readable): lease breaks.
    public func processSignals() -> [EngineNotice] {
        exclusive { handleSignals() }.1
    }

    /// Reads the inotify fd only (it is readable): closes of released files, layout changes
    /// through the leased open file description (IN_MODIFY), unlinks (IN_ATTRIB).
    public func processCloses() -> [EngineNotice] {
        exclusive { handleInotify() }.1
    }

    /// Fires the timers due at `now` (quiesce deadlines, re-lease retries) without reading
    /// the signalfd or inotify fd: for a loop that knows those are not ready.
    public func processTimers(now: UInt64) -> [EngineNotice] {
        exclusive { fireTimers(now: now) }.1
    }

    func fireTimers(now: UInt64) {
        for (deadline, key) in timers.popDue(now: now) {
            // A file's `timer` (lifecycle) and `layoutTimer` (debounce) are its current
            // deadlines; an entry for another one was cancelled. The layout check may end the
            // file (every region lost), so it is looked up again.
            if let file = files[key], file.layoutTimer == deadline {
                file.layoutTimer = nil
                checkLayout(file, now: now)
            }
            guard let file = files[key], file.timer == deadline else { continue }
            file.timer = nil
            apply(.timer(now: now), to: file)
        }
    }

    func arm(_ file: TrackedFile, at deadline: UInt64) {
        file.timer = deadline
        timers.schedule(file.key, at: deadline)
    }

    func handleSignals() {
        let infos: [SignalInfo]
        do { infos = try signals.read() } catch {
            logger.error("signalfd read failed", metadata: ["errno": "\(error.symbolicName)"])
            return
        }
        for info in infos {
            if info.signal == FileLease.breakSignal, let key = filesByFD[info.fd], let file = files[key] {
                leaseBroken(file)
            } else if info.signal == SIGIO {
                // The RT queue overflowed and the kernel fell back to SIGIO without si_fd:
                // any lease whose kernel-side target differs from what we hold is breaking.
                for file in files.values where file.leaseHeld {
                    let current: LeaseType?
                    do { current = try file.lease.current() } catch {
                        logger.error("F_GETLEASE failed: treating the lease as breaking", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
                        current = nil
                    }
                    if current != file.leaseType { leaseBroken(file) }
                }
            }
        }
    }

    func leaseBroken(_ file: TrackedFile) {
        if file.restoration != nil {
            stats.breaksHandled += 1
            return abortRestoration(file, now: clock())
        }
        guard file.lifecycle.phase == .leased else { return }
        let now = clock()
        file.breakStarted = now
        stats.breaksHandled += 1
        apply(.leaseBroken(now: now), to: file)
    }

    func handleInotify() {
        let events: [Inotify.Event]
        do { events = try inotify.read() } catch {
            logger.error("inotify read failed", metadata: ["errno": "\(error.symbolicName)"])
            return
        }
        for event in events {
            if event.mask.contains(.queueOverflow) {
                // Events were dropped: any file may have changed, closed or lost its name.
                logger.warning("inotify queue overflowed: checking every tracked file")
                for key in files.keys.sorted() {
                    if let file = files[key] { layoutTouched(file, now: clock()) }
                    if let file = files[key] { reportUnlink(file) }
                    if let file = files[key] { apply(.closed(now: clock()), to: file) }
                }
                continue
            }
            guard let key = filesByWatch[event.watch], let file = files[key] else { continue }
            if event.mask.contains(.modify) { layoutTouched(file, now: clock()) }
            if event.mask.contains(.attrib), files[key] === file { reportUnlink(file) }
            // Anything but a bare IN_MODIFY (a close, IN_ATTRIB, IN_IGNORED) may have freed the
            // lease: a released file tries to restore (the lifecycle ignores it otherwise).
            guard files[key] === file, event.mask != .modify else { continue }
            apply(.closed(now: clock()), to: file)
        }
    }

    /// IN_ATTRIB: if the file lost its last name, tells each region's owner once. Nothing is
    /// revoked (see `EngineEvent.unlinked`); a later restore finds nlink 0 and loses the
    /// regions with reason `unlinked`.
    func reportUnlink(_ file: TrackedFile) {
        guard !file.unlinkReported else { return }
        let facts: FileFacts
        do { facts = try FileFacts.inspect(file.fd, mount: false) } catch {
            logger.error("statx failed after IN_ATTRIB: an unlink may go unreported", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
            return
        }
        guard facts.nlink == 0 else { return }
        file.unlinkReported = true
        logger.info("registered file unlinked", metadata: ["file": "\(file.key)", "regions": "\(file.regions.count)"])
        for region in file.regions.values { emit(region.owner, .unlinked(region.id)) }
    }

    /// Feeds one event to a file's lifecycle and carries out what it returns.
    func apply(_ event: FileLifecycle.Event, to file: TrackedFile) {
        perform(file.lifecycle.handle(event), on: file)
        reopenIfOnlyFollowersLeft(file)
    }

    /// A region that cannot come back: it leaves its file and the indexes, its exposures and MR
    /// go, its mapping is given back, and its owner hears `lost`. The caller untracks the file
    /// when it was the last.
    func lose(_ region: Region, of file: TrackedFile, reason: RegionLoss, message: String?) {
        file.regions[region.id] = nil
        discard(region, of: file)
        forget(region)
        stats.regionsLost += 1
        emit(region.owner, .lost(region.id, reason: reason, message: message))
    }

    /// A lifecycle that ended (every guarded region lost) on a file whose following regions
    /// remain starts again, empty: the file goes on for them without a lease, and takes new
    /// registrations.
    func reopenIfOnlyFollowersLeft(_ file: TrackedFile) {
        guard file.lifecycle.phase == .lost, files[file.key] === file, !file.regions.isEmpty else { return }
        file.lifecycle = FileLifecycle(regions: [], timing: configuration.timing)
        file.timer = nil
        if file.watchingCloses { watch(file, closes: false) }
        // A restore that re-took the lease and then lost every guarded region.
        settleLease(file)
    }

    /// Carries out a file's lifecycle actions; what owners must hear goes to the outbox.
    func perform(_ actions: [FileLifecycle.Action], on file: TrackedFile) {
        for action in actions {
            switch action {
            case .notifyRevoking(_, let deadline, let cause):
                // The lifecycle's regions are the file's guarded ones: walked in id order, one
                // event per owner with all of its ids.
                var byOwner: [(owner: OwnerID, ids: [RegionID])] = []
                for region in file.regions.values where region.isGuarded {
                    region.state = .revoking
                    region.awaitingAck = true
                    // The region's exposures stop now, before its owner hears of the
                    // revocation, not at the unlock: peers must not write on while the owner
                    // drains. The one place they are withdrawn is here and `deregister`.
                    if !region.exposures.isEmpty, let failure = region.withdrawExposures() {
                        logger.error("withdrawing an exposure failed", metadata: ["region": "\(region.id)", "op": "\(failure.op)", "errno": "\(failure.errno.symbolicName)"])
                    }
                    if let last = byOwner.indices.last, byOwner[last].owner == region.owner {
                        byOwner[last].ids.append(region.id)
                    } else if let at = byOwner.firstIndex(where: { $0.owner == region.owner }) {
                        byOwner[at].ids.append(region.id)
                    } else {
                        byOwner.append((region.owner, [region.id]))
                    }
                }
                file.revokingOwners = byOwner.map(\.owner)
                for (owner, ids) in byOwner {
                    emit(owner, .revoking(Revocation(file: file.key, regions: ids, cause: cause, deadline: deadline)))
                }
            case .revoke:
                revokeNow(file)
            case .notifyRevoked:
                // The lifecycle's regions: the file's guarded ones, in id order.
                for region in file.regions.values where region.isGuarded { emit(region.owner, .revoked(region.id)) }
            case .armTimer(let at):
                arm(file, at: at)
            case .watchCloses:
                // A write-leased file watches them already (`watch(_:closes:)`).
                if !file.watchingCloses { watch(file, closes: true) }
            case .attemptRestore:
                // A close or a timer while a restoration waits for its pins: it is under way.
                guard file.restoration == nil else { continue }
                if let event = restore(file) { apply(event, to: file) }
            case .notifyRestored(let ids):
                for region in file.regions.values where region.isGuarded && ids.contains(region.id) {
                    guard let keys = region.keys else { continue }
                    emit(region.owner, .restored(region.id, keys: keys, layout: region.layout))
                }
            case .notifyLost(let lost):
                for (id, reason) in lost.sorted(by: { $0.key < $1.key }) {
                    guard let region = file.regions[id] else { continue }
                    lose(region, of: file, reason: reason, message: file.lossMessages.removeValue(forKey: id))
                }
                if file.isIdle { untrack(file) }
            }
        }
    }

    /// Deregisters every guarded MR of the file (its exposures first), then unlocks the lease: nothing
    /// else between the break and the unlock, since the breaker is blocked until it. Everything
    /// that need not come first comes after: the failures' log lines, the counters, the
    /// regions' states. The mappings stay: a mapping without an MR pins no page, so it holds
    /// up no layout change (docs/benchmarks.md, "Revocation order"), and the restoration
    /// registers into it again.
    func revokeNow(_ file: TrackedFile) {
        var failures: [(RegionID, VerbsError)] = []
        // The MR objects are freed after the unlock, and the bytes counted then too.
        var retired: [any RegisteredMemory] = []
        retired.reserveCapacity(file.lifecycle.regions.count)
        // Only the guarded ones: a following region's MR stays, and follows the file. In id
        // order, the order they were registered in.
        let all = file.regions.values
        for region in all where region.isGuarded {
            if let failure = region.deregister(retiring: &retired) { failures.append((region.id, failure)) }
        }
        let unlock: Errno?
        do { try file.lease.release(); unlock = nil } catch { unlock = error }
        let unlockedAt = clock()
        // After the unlock: the breaker is on its way. The break is logged here, not when it
        // came: a log line is a write(2) the breaker would wait for.
        if let started = file.breakStarted {
            stats.breakToUnlock.record(nanoseconds: unlockedAt - started)
            file.breakStarted = nil
            logger.info("lease break answered", metadata: ["file": "\(file.key)", "regions": "\(file.lifecycle.regions.count)",
                                                           "unlockedAfterMicros": "\((unlockedAt - started) / 1000)"])
        }
        retired = []
        setLease(file, held: false)
        for region in all where region.isGuarded {
            if region.state != .revoked { liveBytes[region.strategy] -= region.length }
            region.state = .revoked
            region.awaitingAck = false
        }
        if let unlock {
            logger.error("lease release failed", metadata: ["file": "\(file.key)", "errno": "\(unlock.symbolicName)"])
        }
        for (id, failure) in failures {
            logger.error("deregistration failed", metadata: ["region": "\(id)", "op": "\(failure.op)", "errno": "\(failure.errno.symbolicName)"])
        }
    }
}
