// The words of the protocol: each a string on the wire, spelled as in docs/protocol.md. Type
// names differ from MRLeaseEngine's (Strategy, RegionState, Backing) so a daemon file can import
// both modules without qualifying every use.

/// What a region lets a peer do over RDMA: remote read, remote write, remote atomics. `write`
/// and `atomic` change the file's memory, so both need an fd opened for writing.
public enum Access: String, Sendable, Hashable, CaseIterable {
    case read, write, atomic
}

/// How the daemon registered an MR: on-demand paging, or pinned pages under a lease.
public enum RegionStrategy: String, Sendable, Hashable, CaseIterable {
    case odp, pinned
}

/// The strategy a `register` asks for; `any` lets the daemon choose (ODP when the device
/// supports it for the requested access, pinned otherwise).
public enum StrategyPreference: String, Sendable, Hashable, CaseIterable {
    case odp, pinned, any
}

/// What a region does when its file's layout changes (a truncate, a hole punched, a reflink or
/// copy onto its range) or another process opens the file (docs/protocol.md §5).
public enum RegionLayoutPolicy: String, Sendable, Hashable, CaseIterable {
    /// The MR stays and follows the file (ODP only): no revocation, keys and generation kept;
    /// the owner hears `layout` after a change that moved its range.
    case follow
    /// Revoked before the change, registered again after it with new keys: every pinned
    /// region, and ODP regions that ask for it.
    case revoke
}

/// What backs the file's pages.
public enum FileBacking: String, Sendable, Hashable, CaseIterable {
    case fsDAX = "fs-dax"
    case pageCache = "page-cache"
    case shmem
}

/// A region's state as `list` reports it.
public enum RegionStatus: String, Sendable, Hashable, CaseIterable {
    /// The MR is valid; RDMA may use its keys.
    case registered
    /// A revocation is under way: stop issuing RDMA to the region and send `ack`.
    case revoking
    /// The MR is deregistered; the daemon restores it once the file allows.
    case revoked
    /// The region is gone for good (see the `lost` event's reason). The daemon forgets a region
    /// when it sends `lost` (its quota is free; `deregister` of it is `unknown-region`).
    case lost
}

/// Why a revocation started.
public enum RevocationReason: String, Sendable, Hashable, CaseIterable {
    /// Another process wants the file (truncate, write open, …) and the kernel broke our lease.
    case leaseBreak = "lease-break"
    /// The file's size or extents under the region changed with no lease break: a truncate
    /// or fallocate through the very open file description the lease is on (the client's own
    /// fd, a child's copy, one passed over SCM_RIGHTS). The MR is deregistered at once; the
    /// event's deadline is 0 and no `ack` is waited for.
    case layoutChanged = "layout-changed"
    /// An operator or the daemon asked for it.
    case explicit
    /// The daemon is stopping.
    case shutdown
}

/// How the daemon notices a layout change made through a client's own fd (docs/protocol.md §5).
public enum LayoutProtection: String, Sendable, Hashable, CaseIterable {
    /// Detected after the fact (inotify, then size and FIEMAP): revoked and restored with
    /// reason `layout-changed`; WRITEs to a pinned region in between can be lost.
    case inotifyDetect = "inotify-detect"
    case none
}

/// What the daemon's ODP integrity self-test found on a device (docs/protocol.md, `hello`).
public enum ODPIntegrityStatus: String, Sendable, Hashable, CaseIterable {
    /// Unaligned multi-packet RDMA WRITE and READ on an ODP MR landed every byte.
    case intact
    /// They completed successfully but moved wrong bytes (rxe's ODP, docs/kernel-matrix.md):
    /// keep transfers to the device's `transferAlignment`.
    case corruptsUnaligned = "corrupts-unaligned"
    /// The device has no RC ODP WRITE and READ: regions are pinned, which this does not affect.
    case notApplicable = "not-applicable"
    /// The self-test could not run; treated as corrupting.
    case failed
}

/// Why a region was lost instead of restored.
public enum LossReason: String, Sendable, Hashable, CaseIterable {
    /// The file shrank below the region's end.
    case rangeTruncated = "range-truncated"
    /// The file was unlinked.
    case unlinked
    /// Registering the MR again failed; the event's message says how.
    case restoreFailed = "restore-failed"
    /// An operator revoked the region; it will not come back.
    case revoked
}

/// Whether a region's extents moved while it was revoked (`restored`), or since it was
/// registered (`verify`). `unknown`: the daemon could not read the layout (FIEMAP failed), so
/// it does not claim "unchanged".
public enum LayoutStatus: String, Sendable, Hashable, CaseIterable {
    case changed, unchanged, unknown

    /// The boolean `layoutChanged` every message also carries: true unless the layout is
    /// known to be unchanged, so a client that reads only the boolean stays safe.
    public var mayHaveChanged: Bool { self != .unchanged }
}

extension Set where Element == Access {
    /// The set in the fixed order `read, write, atomic`, as the wire writes it.
    var wire: JSONValue { .array(Access.allCases.filter(contains).map { .string($0.rawValue) }) }
}
