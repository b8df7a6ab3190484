import LinuxFile
import MRLeasePolicy
import SystemPackage
import Verbs

/// A file's restoration waiting for pins on a worker (its regions of at least
/// `offloadPinBytes`): what the restore found, kept until the last pin is in. The file's
/// lifecycle stays `released` meanwhile; the lease is held again, and a break of it ends the
/// restoration at once (`abortRestoration`).
final class Restoration {
    /// Pins not yet in.
    var outstanding = 0
    var lost: [RegionID: RegionLoss] = [:]
    /// The file's extents under the re-taken lease: read on the loop, or by the first pin's job
    /// (a synced FIEMAP writes the file's dirty pages back first, and a revoked writable pin
    /// leaves every page it held dirty: 0.4 s for 256 MiB in the guests).
    var extents: Extents?
    let size: UInt64

    init(size: UInt64) {
        self.size = size
    }
}

extension Engine {
    /// Re-takes the lease, re-reads the extents, re-maps and re-registers every guarded region
    /// that still fits in the file. A FIEMAP failure leaves the regions' layout `unknown`, never
    /// `unchanged`: the daemon could not look. With no guarded region left (they were
    /// deregistered while revoked) there is nothing to lease or restore.
    ///
    /// A pinned region of at least `offloadPinBytes` is pinned on a worker (`takeStartedPins`):
    /// the restoration then waits for it, and nil is returned; `finishRestoration` completes it.
    func restore(_ file: TrackedFile) -> FileLifecycle.Event? {
        guard file.hasGuardedRegions else { return .restored(lost: [:]) }
        let facts: FileFacts
        do { facts = try FileFacts.inspect(file.fd, mount: false) } catch {
            logger.error("statx failed at restore", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
            for id in file.lifecycle.regions { file.lossMessages[id] = "statx on the file failed at restore: \(error.symbolicName)" }
            return .gone(reason: .restoreFailed)
        }
        if facts.nlink == 0 { return .gone(reason: .unlinked) }
        do {
            try file.lease.acquire(file.leaseType)
        } catch {
            if error == .resourceTemporarilyUnavailable { return .restoreBusy(now: clock()) }
            logger.error("lease re-take failed", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
            for id in file.lifecycle.regions { file.lossMessages[id] = "F_SETLEASE \(file.leaseType) failed at restore: \(error.symbolicName)" }
            return .gone(reason: .restoreFailed)
        }
        setLease(file, held: true)
        watch(file, closes: false)
        let restoration = Restoration(size: facts.size)
        // The lifecycle's regions are the file's guarded ones (`indexProblems` checks it), in id
        // order in the table: no sort of the set, no lookup per id.
        let guarded = file.regions.values.filter(\.isGuarded)
        // With a pin for the worker, the extents are its to read too.
        let offloads = configuration.offloadPinBytes.map { limit in guarded.contains { $0.strategy == .pinned && $0.length >= limit } } ?? false
        if !offloads { restoration.extents = readExtents(file, op: "restore") }
        for region in guarded {
            guard region.offset + region.length <= facts.size else {
                restoration.lost[region.id] = .rangeTruncated
                file.lossMessages[region.id] = "file is now \(facts.size) bytes; the region ends at \(region.offset + region.length)"
                continue
            }
            do {
                // The window stayed mapped through the revocation: the same address again.
                guard let window = region.window else {
                    throw EngineError.bug("restore of region \(region.id): its mapping is gone, though a revocation keeps it")
                }
                let plan = region.plan.only(region.strategy)
                switch try makeRegistration(file: file, plan: plan, at: window.address(of: region.offset), offloadAbove: configuration.offloadPinBytes) {
                case .registered(let made):
                    region.mr = made.mr
                    region.flags = made.flags
                case .offloaded(_, _, let flags, _):
                    let job = pinJob(.restoration(region.id, restoration), file: file, window: window, plan: plan, flags: flags, holding: true)
                    if restoration.outstanding == 0 { job.readExtents = (configuration.extentReader, file.fd, file.backing) }
                    restoration.outstanding += 1
                    startedPins.append(job)
                }
            } catch {
                logger.error("re-registration failed", metadata: ["region": "\(region.id)", "error": "\(error)"])
                restoration.lost[region.id] = .restoreFailed
                file.lossMessages[region.id] = "re-registration failed: \(error)"
            }
        }
        if restoration.outstanding == 0 { return complete(restoration, of: file) }
        file.restoration = restoration
        logger.debug("restoration waits for pins", metadata: ["file": "\(file.key)", "pins": "\(restoration.outstanding)"])
        return nil
    }

    /// The restoration's end: every region with a new MR counts a generation more and is
    /// registered again; the file's baseline is what the restore read.
    func complete(_ restoration: Restoration, of file: TrackedFile) -> FileLifecycle.Event {
        file.restoration = nil
        let extents = restoration.extents ?? readExtents(file, op: "restore")
        for region in file.regions.values where region.isGuarded && region.state == .revoked && region.mr != nil {
            region.layout = file.layoutChanged.contains(region.id) ? .changed
                : file.extents.change(to: extents, offset: region.offset, length: region.length)
            region.generation += 1
            region.state = .registered
            stats.restorations += 1
        }
        file.extents = extents
        file.size = restoration.size
        file.layoutChanged = []
        return .restored(lost: restoration.lost)
    }

    /// The pins the engine's restorations left to a worker since the last call: the caller
    /// runs each (`PinJob.run`) and hands it back to `finishRestoration` (or `abandon`).
    public func takeStartedPins() -> [PinJob] {
        defer { startedPins = [] }
        return startedPins
    }

    /// A restoration's pin is in: its MR becomes the region's, or the region is lost
    /// (`restore-failed`) when the kernel refused it. The last one completes the restoration
    /// (owners hear `restored`). A pin of a restoration a lease break ended, or of a region
    /// that went meanwhile, is deregistered.
    public func finishRestoration(_ job: PinJob) -> [EngineNotice] {
        exclusive { restorationPinned(job, abandoned: false) }.1
    }

    func restorationPinned(_ job: PinJob, abandoned: Bool) {
        guard case .restoration(let id, let restoration) = job.purpose else {
            return logger.error("a registration's pin was handed to finishRestoration: abandoned", metadata: ["bytes": "\(job.length)"])
        }
        let file = job.file
        file.pinEnded(job.window)
        release(job.window, of: file)
        let current = files[file.key] === file && file.restoration === restoration
        let region = current && file.leaseHeld && file.leaseEpoch == job.leaseEpoch ? file.regions[id] : nil
        if current, let read = job.extentsRead {
            switch read {
            case .success(let map): restoration.extents = .known(map)
            case .failure(let error):
                logger.error("FS_IOC_FIEMAP failed: layout unknown", metadata: ["file": "\(file.key)", "during": "restore", "errno": "\(error.symbolicName)"])
                restoration.extents = .unknown(error)
            }
        }
        switch job.made {
        case .success(let mr)?:
            if let region, !abandoned, region.state == .revoked, region.mr == nil {
                region.mr = mr
                region.flags = job.flags
                liveBytes[region.strategy] += region.length
            } else {
                deregister(mr)
                if region != nil { lostAtRestore(id, restoration, file, "the daemon is stopping") }
            }
        case .failure(let error)?:
            logger.error("re-registration failed", metadata: ["region": "\(id)", "op": "\(error.op)", "errno": "\(error.errno.symbolicName)"])
            if region != nil { lostAtRestore(id, restoration, file, "re-registration failed: \(error)") }
        case nil:
            if region != nil { lostAtRestore(id, restoration, file, abandoned ? "the daemon is stopping" : "its pin never ran") }
        }
        guard files[file.key] === file else { return }
        if current {
            restoration.outstanding -= 1
            guard restoration.outstanding == 0 else { return }
            apply(complete(restoration, of: file), to: file)
            lookAgainIfTouched(file)
        }
        if files[file.key] === file, file.isIdle { untrack(file) }
    }

    func lostAtRestore(_ id: RegionID, _ restoration: Restoration, _ file: TrackedFile, _ message: String) {
        restoration.lost[id] = .restoreFailed
        file.lossMessages[id] = message
    }

    /// A lease break (or a layout change) while the restoration waits for pins: what it
    /// registered so far goes, the lease is let go at once, and the file is released again
    /// (the next close or the backoff timer tries anew). Its pins are deregistered as they
    /// come in. Nobody was told of the new MRs, so nobody hears anything.
    func abortRestoration(_ file: TrackedFile, now: UInt64) {
        guard let restoration = file.restoration else { return }
        file.restoration = nil
        for region in file.regions.values where region.isGuarded && region.state == .revoked && region.mr != nil { deregister(region) }
        do { try file.lease.release() } catch {
            logger.error("lease release failed", metadata: ["file": "\(file.key)", "errno": "\(error.symbolicName)"])
        }
        setLease(file, held: false)
        stats.breakToUnlock.record(nanoseconds: clock() - now)
        for id in restoration.lost.keys { file.lossMessages[id] = nil }
        logger.info("lease broke during a restoration: released again", metadata: ["file": "\(file.key)", "pins": "\(restoration.outstanding)"])
        apply(.restoreBusy(now: now), to: file)
    }
}
