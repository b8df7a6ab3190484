import LinuxFile
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How the daemon's connection ended, and what the client did about the leases on the files
/// it keeps for its regions.
///
/// The daemon's lease belongs to the open file description the client passed, not to the
/// daemon's process: when mrleased dies (`kill -9`, a crash), the lease stays as long as the
/// client holds that file, its break signal goes to a dead process, and the next truncate or
/// conflicting open of the file blocks for `lease-break-time` (45 s). So when the connection
/// ends, the client looks at each kept file's lease and releases it (`F_SETLEASE F_UNLCK`
/// through its own fd, which works on any fd of that description) when the process that took
/// it has exited. A lease whose holder still runs is left alone: a daemon that dropped this
/// client (it stopped reading) still guards other connections' regions of the same open file
/// with it, and releases it itself when they go.
///
/// The kept fds stay open after the end (until `deregister` or `close`): `file(region:)`
/// returns them, to register again with a restarted daemon through the same open file (a new
/// open of the path would be refused a write lease while this one is open).
public struct ConnectionEnd: Sendable, Equatable, CustomStringConvertible {
    /// A `revoking` with reason `shutdown` came first: the daemon said it is stopping (and it
    /// releases its leases itself).
    public var shutdownAnnounced: Bool
    /// One entry per file the client kept, in region order.
    public var leases: [LeaseCleanup]

    public init(shutdownAnnounced: Bool, leases: [LeaseCleanup]) {
        self.shutdownAnnounced = shutdownAnnounced
        self.leases = leases
    }

    /// The leases the client released: left by a daemon that died.
    public var released: [LeaseCleanup] { leases.filter { if case .released = $0.outcome { true } else { false } } }

    public var description: String {
        var text = shutdownAnnounced
            ? "mrleased closed the connection: it is shutting down; its regions are gone"
            : "mrleased closed the connection without a shutdown notice (it died, or dropped this client); its regions are gone"
        for lease in leases where lease.outcome != .noLease { text += "; \(lease)" }
        return text
    }
}

/// What the client did about the lease on one file it kept.
public struct LeaseCleanup: Sendable, Equatable, CustomStringConvertible {
    /// The regions the file was kept for.
    public var regions: [UInt64]
    public var outcome: Outcome

    public enum Outcome: Sendable, Equatable {
        /// No lease on the file: the daemon had released it.
        case noLease
        /// The process that took the lease (`holder`) has exited; the client released it.
        case released(holder: pid_t)
        /// The process that took the lease still runs (a daemon that dropped this client, or
        /// one shutting down): left for it to release.
        case heldByRunningProcess(pid_t)
        /// The holder is in a pid namespace this process cannot see into, so whether it
        /// still runs is unknown: left alone, as releasing a live daemon's lease would leave
        /// other connections' regions unguarded. A writer may wait `lease-break-time`.
        case holderNotVisible
        /// Reading or releasing the lease failed: `op` and its errno (`EACCES`: this user
        /// does not own the file and has no CAP_LEASE). A writer may wait `lease-break-time`.
        case failed(op: String, Errno)
    }

    public init(regions: [UInt64], outcome: Outcome) {
        self.regions = regions
        self.outcome = outcome
    }

    public var description: String {
        let which = "the file of region\(regions.count == 1 ? "" : "s") \(regions.map(String.init).joined(separator: ", "))"
        switch outcome {
        case .noLease:
            return "\(which): no lease left"
        case .released(let holder):
            return "released the lease mrleased (pid \(holder), exited) left on \(which)"
        case .heldByRunningProcess(let pid):
            return "left the lease on \(which) to pid \(pid), which still runs"
        case .holderNotVisible:
            return "left the lease on \(which): its holder is outside this pid namespace, so whether it still runs is unknown; a truncate or open of the file may wait lease-break-time (/proc/sys/fs/lease-break-time)"
        case .failed(let op, let errno):
            let advice = errno == .permissionDenied ? " — only the file's owner or a CAP_LEASE holder may release it" : ""
            return "could not release the lease on \(which): \(op): \(errno.symbolicName)\(advice); a truncate or open of the file may wait lease-break-time"
        }
    }
}

extension MRLeaseClient {
    /// The error for a connection that has ended: the first time, releases the leases a dead
    /// daemon left on the kept files and records what it did in `connectionEnd`.
    func connectionEnded(op: String) -> ClientError {
        if let end = connectionEnd { return .disconnected(op: op, end) }
        var regionsByFile: [Int32: [UInt64]] = [:]
        for (region, fd) in heldFiles { regionsByFile[fd.rawValue, default: []].append(region) }
        let leases = regionsByFile.map { raw, regions in
            LeaseCleanup(regions: regions.sorted(), outcome: Self.releaseOrphanedLease(FileLease(fd: FileDescriptor(rawValue: raw))))
        }.sorted { $0.regions[0] < $1.regions[0] }
        let end = ConnectionEnd(shutdownAnnounced: shutdownAnnounced, leases: leases)
        connectionEnd = end
        return .disconnected(op: op, end)
    }

    /// Releases `lease` when the process that took it has exited.
    static func releaseOrphanedLease(_ lease: FileLease) -> LeaseCleanup.Outcome {
        let holder: LeaseHolder?
        do { holder = try lease.holder() } catch { return .failed(op: "read /proc/self/fdinfo/\(lease.fd.rawValue)", error) }
        guard let holder else { return .noLease }
        guard holder.pid > 0 else { return .holderNotVisible }
        do {
            guard try ProcessState.of(pid: holder.pid) == .exited else { return .heldByRunningProcess(holder.pid) }
        } catch {
            return .failed(op: "read /proc/\(holder.pid)/stat", error)
        }
        do { try lease.release() } catch {
            // EAGAIN: no lease any more on this description (released meanwhile): nothing left.
            if error == .resourceTemporarilyUnavailable { return .noLease }
            return .failed(op: "fcntl(F_SETLEASE, F_UNLCK)", error)
        }
        return .released(holder: holder.pid)
    }
}
