// The words the engine reports in, one enum each. The protocol has its own spelling of each
// (MRLeaseProtocol's Vocabulary.swift); the daemon joins the two in one file of exhaustive
// switches (MRLeaseDaemon/WireVocabulary.swift), so a new case here fails to compile there
// instead of falling back to a default.

/// Why a region was lost for good instead of restored.
public enum RegionLoss: String, Sendable, Hashable, CaseIterable {
    /// The file shrank below the region's end.
    case rangeTruncated = "range-truncated"
    /// The file was unlinked.
    case unlinked
    /// Registering or leasing again failed.
    case restoreFailed = "restore-failed"
    /// An operator revoked the region (`Engine.revoke`).
    case revoked
}

/// Why a revocation started.
public enum RevocationCause: String, Sendable, Hashable, CaseIterable {
    /// Another process wants the file and the kernel broke our lease.
    case leaseBreak = "lease-break"
    /// A registered range's size or extents changed with no lease break: a truncate or
    /// fallocate through the open file description the lease is held on (the owner's own fd
    /// or a copy), seen through inotify and FIEMAP after the fact.
    case layoutChanged = "layout-changed"
}

/// How the engine keeps a layout change made through the leased open file description (which
/// breaks no lease) from going unnoticed.
public enum LayoutProtection: String, Sendable, Hashable, CaseIterable {
    /// inotify IN_MODIFY on every registered file, then size and FIEMAP compared: the change
    /// is caught and the regions revoked and restored after it happened; RDMA WRITEs to a
    /// pinned region in between are lost.
    case inotifyDetect = "inotify-detect"
    /// Nothing watches (no engine: the daemon runs without an RDMA device).
    case none
}

/// Whether a region's extents moved between two FIEMAP reads. `unknown` when either read
/// failed: the daemon could not look, so it must not say "unchanged".
public enum LayoutChange: String, Sendable, Hashable, CaseIterable {
    case changed, unchanged, unknown

    /// What a client that only knows a boolean should assume: anything but a confirmed
    /// `unchanged` may have moved.
    public var mayHaveChanged: Bool { self != .unchanged }
}

/// A region's state as owners and operators see it.
public enum RegionState: String, Sendable, Codable {
    case registered, revoking, revoked, lost
}

/// What a region does when its file's layout changes under it (a truncate, a hole punched, a
/// reflink or copy onto its range), or when another process opens the file.
public enum LayoutPolicy: String, Sendable, Hashable, CaseIterable {
    /// The MR stays and follows the file: an ODP MR has no pinned pages, the kernel invalidates
    /// its translations before a layout change unmaps or frees anything, and the NIC faults the
    /// file's current pages at its next access (docs/kernel-matrix.md). Keys and generation
    /// stay; the owner hears `layout` after a change. ODP regions only.
    case follow
    /// The MR is revoked before the change can proceed and registered again after it, with new
    /// keys (the lease protocol). Every pinned region; ODP regions that ask for it.
    case revoke
}
