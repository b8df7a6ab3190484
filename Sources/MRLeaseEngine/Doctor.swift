import Glibc
import LinuxFile
import MRLeasePolicy
import SystemPackage
import Verbs

/// Gathers the host's RDMA and lease facts and, for each path, what mrleased would do with it.
///
/// The doctor opens paths itself (the daemon never does: it only takes fds from clients). It
/// keeps one fd per file at a time, because a second fd of our own would make a write lease
/// fail with EAGAIN and misreport the file as busy.
public struct Doctor {
    public var access: RegionAccess
    /// How much of each file the trial registrations map (from offset 0).
    public var trialLength: Int

    public init(access: RegionAccess = [.read, .write], trialLength: Int = 1 << 20) {
        self.access = access
        self.trialLength = trialLength
    }

    public func run(paths: [String]) -> DoctorReport {
        let (host, probes) = hostReport()
        // The lease trial arms a lease-break signal aimed at this thread: block it here (and
        // SIGIO, the kernel's fallback when the RT queue is full) so a break during the trial
        // is queued instead of killing the process.
        // Without it (no fds left) a break during the trial would kill the doctor: the trial
        // then reports what it can, and the lease line shows the failure.
        let signals = try? SignalFD(signals: [FileLease.breakSignal, SIGIO])
        // Closing our own signalfd fails only with EBADF: nothing to report.
        defer { try? signals?.close() }
        let files = paths.map { fileReport(path: $0, probes: probes) }
        return DoctorReport(host: host, files: files)
    }

    // MARK: Host

    func hostReport() -> (HostReport, [RegistrationProbe]) {
        var host = HostReport(
            kernel: SystemFacts.kernelRelease, devices: [], rdmaProblem: nil,
            // Unreadable /proc values are shown as missing, which is what they are.
            memlockSoft: nil, memlockHard: nil, leaseBreakTimeSeconds: try? SystemFacts.leaseBreakTime(),
            leasesEnabled: SystemFacts.leasesEnabled(),
            capLease: SystemFacts.hasCapability(SystemFacts.capLease),
            capIPCLock: SystemFacts.hasCapability(SystemFacts.capIPCLock),
            layoutProtection: Engine.layoutProtection.rawValue)
        // As above: an unreadable limit is shown as missing.
        if let memlock = try? SystemFacts.memlockLimit() {
            host.memlockSoft = memlock.soft
            host.memlockHard = memlock.hard
        }
        var probes: [RegistrationProbe] = []
        let devices: [Device]
        do {
            devices = try Device.list()
        } catch {
            host.rdmaProblem = "cannot list RDMA devices: \(error)"
            return (host, [])
        }
        if devices.isEmpty {
            host.rdmaProblem = "no RDMA devices: ibv_get_device_list found none (this kernel has no RDMA"
                + " support loaded, or no provider matches). Registration trials are skipped;"
                + " on a host with RDMA hardware or soft-RoCE (Scripts/setup-rxe) they run."
        }
        for device in devices {
            var report = DeviceReport(
                name: device.name, guid: String(device.guid, radix: 16), firmware: nil, ports: [],
                odpSupported: false, odpImplicit: false, odpRC: [], odpUC: [], odpUD: [], error: nil)
            do {
                let context = try device.open()
                let attributes = try context.query()
                report.firmware = attributes.firmwareVersion
                report.odpSupported = attributes.odp.supported
                report.odpImplicit = attributes.odp.implicit
                report.odpRC = attributes.odp.rc.names
                report.odpUC = attributes.odp.uc.names
                report.odpUD = attributes.odp.ud.names
                if attributes.physicalPortCount > 0 {
                    for port in 1...attributes.physicalPortCount {
                        let attrs = try context.queryPort(port)
                        report.ports.append(PortReport(
                            port: Int(port), state: attrs.state.rawValue, linkLayer: attrs.linkLayer,
                            activeMTU: attrs.activeMTU, gids: attrs.gids.map { "\($0.index): \($0)" }))
                    }
                }
                // The daemon runs the same self-test at start-up and reports it in `hello`.
                let integrity = ODPIntegrityCheck().run(on: context)
                report.odpIntegrity = integrity.code
                report.transferAlignment = integrity.transferAlignment
                report.odpIntegrityDetail = "\(integrity)"
                probes.append(try RegistrationProbe(context: context))
            } catch {
                report.error = "\(error)"
            }
            host.devices.append(report)
        }
        return (host, probes)
    }

    // MARK: Files

    func fileReport(path: String, probes: [RegistrationProbe]) -> FileReport {
        var report = FileReport(path: path, access: access.description, trials: [])
        let opened: (fd: FileDescriptor, writable: Bool)
        do {
            opened = try Self.open(path: path, writable: access.isWritable)
        } catch {
            return report.failing("cannot open \(path): open(2) failed with \(error.symbolicName) (\(error))", errno: error)
        }
        // A read-only or unmodified fd: close(2) has nothing to flush that could fail.
        defer { try? opened.fd.close() }
        report.openedWritable = opened.writable

        let facts: FileFacts
        do {
            facts = try FileFacts.inspect(opened.fd)
        } catch {
            return report.failing("cannot inspect \(path): statx failed with \(error.symbolicName)", errno: error)
        }
        report.filesystem = facts.filesystem
        report.backing = facts.backing.rawValue
        report.dax = facts.isDAX
        report.mountDAX = facts.mountDAX
        report.size = facts.size
        report.device = "\(facts.device)"
        report.inode = facts.inode
        // The daemon's own rules first (RegistrationPlan): a path it would refuse whatever the
        // device is unusable; one it would refuse for the range or the access is a refusal.
        let length = min(UInt64(trialLength), facts.size)
        let mode: OpenMode = opened.writable ? .readWrite : .readOnly
        let pageSize = UInt64(SharedMapping.pageSize)
        // The doctor asks for itself: its own uid, and CAP_LEASE in place of the daemon's
        // lease-others lists (which it cannot read; the daemon also lets root).
        let lessee = Lessee(uid: geteuid(), mayLeaseOthers: geteuid() == 0 || SystemFacts.hasCapability(SystemFacts.capLease))
        if case .failure(let refusal) = RegistrationPlan.make(file: PlannedFile(facts), mode: mode, offset: 0, length: length,
                                                              access: access, device: nil, lessee: lessee, pageSize: pageSize) {
            report.refusalCode = refusal.code.rawValue
            guard refusal.code != .notRegularFile else { return report.failing("\(path): \(refusal.message)", errno: nil) }
            report.refusal = refusal.message
            return report
        }

        do {
            report.extentCount = try opened.fd.extents(sync: true).extents.count
        } catch {
            // shmem has no block layout to track: a lease alone guards it.
            if facts.backing == .shmem {
                report.extentNote = "FIEMAP unsupported on \(facts.filesystem) (\(error.symbolicName)); not needed: shmem has no block layout"
            } else if let refusal = PlanRefusal.noExtentMap(filesystem: facts.filesystem, errno: error) {
                // The daemon's own refusal of this file (the engine asks the same function).
                report.refusalCode = refusal.code.rawValue
                return report.failing(refusal.message, errno: error)
            } else {
                return report.failing("FS_IOC_FIEMAP on \(path) failed with \(error.symbolicName) (\(error)): mrleased could not read this file's extents", errno: error)
            }
        }

        report.lease = Self.leaseTrial(fd: opened.fd, writable: opened.writable)

        let devices: [(probe: RegistrationProbe?, device: DeviceCapabilities?)] = probes.isEmpty
            ? [(nil, nil)] : probes.map { ($0, DeviceCapabilities(name: $0.context.device.name, odp: $0.odp)) }
        // The plan on each device, as the daemon would make it; the first device with a
        // strategy wins, else the first refusal is reported.
        var decided: (device: String?, plan: RegistrationPlan?, decision: Result<(Strategy, reason: String), PlanRefusal>)?
        for (probe, device) in devices {
            // Asking `follow`: the report says whether the strategy can follow at all.
            let planned = RegistrationPlan.make(file: PlannedFile(facts), mode: mode, offset: 0, length: length,
                                                access: access, layoutPolicy: .follow, device: device, noDeviceReason: "no RDMA device on this host",
                                                lessee: lessee, pageSize: pageSize)
            let decision: Result<(Strategy, reason: String), PlanRefusal>
            var made: RegistrationPlan?
            switch planned {
            case .failure(let refusal):
                decision = .failure(refusal)
            case .success(let plan):
                made = plan
                var trials: [Trial] = []
                if let probe {
                    trials = probe.trials(fd: opened.fd, backing: facts.backing, offset: 0, length: Int(length),
                                          writable: opened.writable, access: access)
                    report.trials += trials.map { TrialReport(device: probe.context.device.name, $0) }
                }
                decision = plan.decide(trials: trials)
            }
            if decided == nil || (!decided!.decision.succeeded && decision.succeeded) {
                decided = (device?.name, made, decision)
            }
        }
        if let decided {
            report.strategyDevice = decided.device
            report.plan = decided.plan.map { plan in
                plan.attempts.enumerated().map { "\($0.offset + 1). \($0.element.strategy) (\($0.element.kind.rawValue)): \($0.element.reason)" }
                    + plan.skipped.compactMap { trial in
                        guard case .notTried(let why) = trial.outcome else { return nil }
                        return "not \(trial.kind.rawValue): \(why)"
                    }
            }
            switch decided.decision {
            case .success(let (strategy, reason)):
                report.strategy = strategy.rawValue
                report.strategyReason = reason
                if let plan = decided.plan {
                    let policy = plan.layoutPolicy(for: strategy)
                    report.layoutPolicies = policy == .follow ? ["follow", "revoke"] : ["revoke"]
                    report.layoutPolicyReason = policy == .follow
                        ? "an ODP MR can follow the file through truncate, hole punch and reflink, keys unchanged (register with layoutPolicy follow, or the daemon's layout-policy), or revoke"
                        : "a pinned MR keeps the pages the file drops: it is revoked before every layout change and registered again with new keys"
                }
            case .failure(let refusal):
                report.refusal = refusal.message
                report.refusalCode = refusal.code.rawValue
                report.refusalErrno = refusal.errno?.symbolicName
            }
        }
        return report
    }

    /// Opens for reading and writing when writable access is asked and allowed, else read-only.
    /// O_NONBLOCK so a FIFO opens at once (and is then rejected) instead of waiting for a writer.
    static func open(path: String, writable: Bool) throws(Errno) -> (fd: FileDescriptor, writable: Bool) {
        let options: FileDescriptor.OpenOptions = [.nonBlocking, .closeOnExec]
        if writable {
            do {
                return (try FileDescriptor.open(FilePath(path), .readWrite, options: options), true)
            } catch let error as Errno where [.permissionDenied, .readOnlyFileSystem, .isDirectory, .textFileBusy].contains(error) {
                // Fall through to a read-only open; the write trials say why they were skipped.
            } catch let error as Errno {
                throw error
            } catch {
                throw .ioError
            }
        }
        do {
            return (try FileDescriptor.open(FilePath(path), .readOnly, options: options), false)
        } catch let error as Errno {
            throw error
        } catch {
            throw .ioError
        }
    }

    /// Takes and at once releases the lease the engine would hold on this fd.
    static func leaseTrial(fd: FileDescriptor, writable: Bool) -> LeaseReport {
        // A read lease is refused while any writable fd exists, our own included: writable
        // regions need a write lease on the O_RDWR fd.
        let type: LeaseType = writable ? .write : .read
        let lease = FileLease(fd: fd)
        do {
            try lease.acquire(type)
            // Unlocking a lease we hold fails only with EBADF; the fd closes right after anyway.
            try? lease.release()
            return LeaseReport(type: "\(type)", granted: true, errno: nil, message: "\(type) lease granted")
        } catch {
            let message = error == .resourceTemporarilyUnavailable
                ? "file busy: another process has it open, so the kernel refuses a \(type) lease (EAGAIN)"
                : "F_SETLEASE \(type) failed (\(error.symbolicName)): \(error)"
            return LeaseReport(type: "\(type)", granted: false, errno: error.symbolicName, message: message)
        }
    }
}

extension FileReport {
    init(path: String, access: String, trials: [TrialReport]) {
        self.path = path
        self.access = access
        self.trials = trials
    }

    fileprivate func failing(_ message: String, errno: Errno?) -> FileReport {
        var copy = self
        copy.error = message
        copy.errno = errno?.symbolicName
        return copy
    }
}

extension TrialReport {
    init(device: String, _ trial: Trial) {
        self.device = device
        kind = trial.kind.rawValue
        flags = "\(trial.flags)"
        switch trial.outcome {
        case .registered:
            result = "registered"
        case .failed(let op, let errno):
            result = "failed"
            self.op = op
            self.errno = errno.symbolicName
            errnoValue = errno.rawValue
        case .notTried(let reason):
            result = "not-tried"
            note = reason
        }
    }
}

extension UInt64 {
    func roundedUp(to multiple: UInt64) -> UInt64 { (self + multiple - 1) / multiple * multiple }
}

extension Result {
    var succeeded: Bool {
        if case .success = self { return true }
        return false
    }
}
