/// What a peer has been through, for applications and the benchmark. Times are
/// `MonotonicClock.now()` seconds.
public struct PeerStatistics: Sendable, Hashable {
    /// Connections made after the first (each after a broken one).
    public var reconnects = 0
    /// Connection attempts that failed, over the peer's life (retryable rejects, timeouts …).
    public var failedAttempts = 0
    /// When the peer noticed its last connection broke (a failed completion or DISCONNECTED),
    /// and why.
    public var lastBreak: Double?
    public var lastBreakCause: String?
    /// When the connection after the last break was established.
    public var lastReconnect: Double?
    /// When the first operation after the last reconnect succeeded: `firstSuccessAfterReconnect
    /// - lastBreak` is how long the application waited.
    public var firstSuccessAfterReconnect: Double?
    /// The generations the peer has been accepted with, in order.
    public var generations: [UInt64] = []

    public init() {}
}

/// How `persist()` makes earlier writes durable where the target memory is.
public enum PersistMethod: String, Sendable, Hashable {
    /// An RDMA READ on the same QP after the writes completed: RC executes requests in order at
    /// the responder, so when the READ's data returns every earlier WRITE has been placed in
    /// the region's memory (librpma's "appliance persistency method"). On FS-DAX that is the
    /// persistent memory (durable where the platform's ADR covers the memory controller); on
    /// a page-cache region it is the page cache, as durable as a local write() — fsync is the
    /// owner's business.
    case readAfterWrite = "read-after-write"
    /// IBV_WR_FLUSH (rdma-core ≥ 45, kernel ≥ 6.2 for rxe, ≥ 6.16 on ODP MRs). Not available:
    /// the userspace here is rdma-core 44, whose verbs.h has no ibv_wr_flush; when it is, this
    /// is the seam (`Peer.persistMethod`) and FLUSH would be used only on FS-DAX regions.
    case flush
}
