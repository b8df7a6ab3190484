import LinuxFile
import MRLeasePolicy
import SystemPackage
import Verbs

/// Trial registrations over a real mapping of a file, on one device: the kernel's own answer to
/// "can this file be registered this way", rather than a guess from the kernel version.
///
/// Each trial maps the range, registers in a fresh PD, and deregisters at once; nothing is
/// left behind. The engine probes once per (device, file) and the doctor shows the trials.
public struct RegistrationProbe {
    public let context: Context
    public let odp: ODPCaps

    public init(context: Context) throws(VerbsError) {
        self.context = context
        self.odp = try context.query().odp
    }

    /// Tries `kinds` over `[offset, offset+length)` of `fd`. `writable` says whether `fd` was
    /// opened for writing; trials that need a writable mapping are not tried otherwise.
    public func trials(
        fd: FileDescriptor, backing: Backing, offset: UInt64, length: Int, writable: Bool,
        access: RegionAccess, kinds: [TrialKind] = TrialKind.allCases
    ) -> [Trial] {
        kinds.map { kind in
            let flags = kind.flags(for: access)
            let needsWrite = flags.contains(.localWrite) || flags.contains(.remoteWrite)
            if needsWrite && !writable {
                return Trial(kind: kind, flags: flags, outcome: .notTried(reason: "the file is open read-only, so a writable mapping is impossible"))
            }
            return Trial(kind: kind, flags: flags, outcome: attempt(
                fd: fd, offset: offset, length: length, flags: flags,
                protection: SharedMapping.Protection.forRegions(writableFD: writable),
                // MAP_SYNC only where stores reach media directly (FS-DAX) and may be written.
                sync: backing == .fsDAX && writable))
        }
    }

    private func attempt(fd: FileDescriptor, offset: UInt64, length: Int, flags: AccessFlags,
                         protection: SharedMapping.Protection, sync: Bool) -> TrialOutcome {
        let mapping: SharedMapping
        do {
            mapping = try SharedMapping(fd: fd, offset: offset, length: length, protection: protection, sync: sync)
        } catch {
            return .failed(op: sync ? "mmap(MAP_SYNC)" : "mmap", errno: error)
        }
        // munmap of our own fresh mapping fails only with EINVAL: nothing to undo.
        defer { try? mapping.unmap() }
        do {
            let pd = try context.allocateProtectionDomain()
            let mr = try pd.register(address: mapping.base, length: length, access: flags)
            try mr.deregister()
            return .registered
        } catch {
            return .failed(op: error.op, errno: error.errno)
        }
    }
}

extension SharedMapping.Protection {
    /// Mappings are read-write whenever the fd allows it, whatever the region's access: the
    /// MR's access flags, not the mapping, decide what the NIC may do, and kernels before 6.2
    /// pin even read-only MRs with FOLL_FORCE|FOLL_WRITE, which a read-only shared mapping
    /// refuses with EFAULT (measured on 6.1).
    static func forRegions(writableFD: Bool) -> SharedMapping.Protection {
        writableFD ? .readWrite : .read
    }
}
