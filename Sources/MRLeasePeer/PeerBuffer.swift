/// Memory of the application's that a `Peer` reads into and writes from directly, with no copy
/// through its staging buffer: each transfer is work requests posted straight from this memory
/// and their completions. Made by `Peer.register(_:)`; the peer registers the memory
/// (`ibv_reg_mr`, local write) in each connection's protection domain the first time a transfer
/// there uses it, so a reconnect (a revocation, a new PD) registers it again once, not per
/// transfer.
///
/// The application owns the memory: it stays allocated until `Peer.release(_:)` or
/// `Peer.close()`, and the application does not change bytes a write is sending, nor look at
/// bytes a read is filling, until that call returns. A buffer belongs to the peer that
/// registered it.
public final class PeerBuffer {
    /// The memory, as the application passed it.
    public let memory: UnsafeMutableRawBufferPointer
    /// The peer it was registered with (transfers with another peer's buffer are refused).
    let owner: ObjectIdentifier
    /// Still registered (false once released or its peer closed).
    public internal(set) var isRegistered = true

    init(memory: UnsafeMutableRawBufferPointer, owner: ObjectIdentifier) {
        self.memory = memory
        self.owner = owner
    }

    /// The buffer's key in a connection's table of registrations.
    var key: ObjectIdentifier { ObjectIdentifier(self) }
}
