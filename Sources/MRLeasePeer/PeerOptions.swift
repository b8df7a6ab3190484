/// How a `Peer` connects, moves data and recovers. The defaults suit rxe in the test guests.
public struct PeerOptions: Sendable, Hashable {
    /// Bytes of the local staging buffer, registered once per connection; transfers larger
    /// than it go in several rounds. A multiple of 4096, at least the grant's alignment.
    public var stagingBytes = 1 << 20
    /// Largest single RDMA WRITE/READ posted; a multiple of 4096 (so of every alignment
    /// a grant carries). 64 KiB keeps several requests in flight within the staging buffer.
    public var workRequestBytes = 1 << 16
    /// Work requests in flight at most (the QP's send queue is this deep).
    public var queueDepth = 32
    /// Give up reconnecting (and the first connect's retries) after this many seconds.
    public var reconnectTimeout = 30.0
    /// The first backoff delay between attempts and its cap; doubled after each failure.
    public var initialBackoff = 0.010
    public var maxBackoff = 1.0
    /// Seconds one attempt (resolve address, route, connect) may take.
    public var attemptTimeout = 5.0
    /// Seconds without any completion before posted work counts as lost (the connection is
    /// then torn down and the operation retried, as for a revocation).
    public var completionTimeout = 10.0

    public init() {}

    /// Checks the options, naming the one that is wrong.
    func validate() throws(PeerError) {
        if stagingBytes < 4096 || stagingBytes % 4096 != 0 {
            throw .badOption("staging buffer of \(stagingBytes) bytes: use a multiple of 4096 (at least 4096)")
        }
        if workRequestBytes < 4096 || workRequestBytes % 4096 != 0 || workRequestBytes > stagingBytes {
            throw .badOption("work requests of \(workRequestBytes) bytes: use a multiple of 4096, at most the staging buffer (\(stagingBytes))")
        }
        if queueDepth < 1 || queueDepth > 1024 {
            throw .badOption("queue depth \(queueDepth): use 1 to 1024")
        }
        if !(reconnectTimeout >= 0) || !(attemptTimeout > 0) || !(completionTimeout > 0) {
            throw .badOption("timeouts must be positive (reconnect \(reconnectTimeout), attempt \(attemptTimeout), completion \(completionTimeout))")
        }
    }
}
