import Verbs

/// Transfers without a copy: the application's own memory, registered once per connection,
/// posted from and into directly (`PeerBuffer`).
extension Peer {
    /// Registers `memory` for transfers without a copy; it is registered in the current
    /// connection's PD at once (so a failure shows here), and again once in each new
    /// connection's PD after a reconnect. Keep the memory allocated until `release(_:)` or
    /// `close()`.
    ///
    /// The corresponding C function is `ibv_reg_mr`.
    public func register(_ memory: UnsafeMutableRawBufferPointer) throws(PeerError) -> PeerBuffer {
        guard !isClosed else { throw .closed(operation: "register") }
        guard memory.baseAddress != nil, memory.count > 0 else { throw .badOption("register: an empty buffer (give at least one byte)") }
        let buffer = PeerBuffer(memory: memory, owner: ObjectIdentifier(self))
        if let connection {
            do throws(VerbsError) { _ = try connection.memoryRegion(for: buffer) } catch {
                throw .verbs(operation: "register: ibv_reg_mr of \(memory.count) bytes at \(memory.baseAddress!)", error)
            }
        }
        buffers[buffer.key] = buffer
        return buffer
    }

    /// Deregisters `buffer`: later transfers with it are refused; the memory is the
    /// application's again.
    ///
    /// The corresponding C function is `ibv_dereg_mr`.
    public func release(_ buffer: PeerBuffer) throws(PeerError) {
        guard buffers.removeValue(forKey: buffer.key) != nil else { return }
        buffer.isRegistered = false
        do throws(VerbsError) { try connection?.forget(buffer) } catch {
            throw .verbs(operation: "release: ibv_dereg_mr of the buffer at \(buffer.memory.baseAddress!)", error)
        }
    }

    /// Writes `count` bytes (default: to the buffer's end) of `buffer` from `bufferOffset` at
    /// `offset` in the region: work requests of at most `workRequestBytes` posted straight from
    /// the buffer (up to the queue depth in flight), no copy.
    public func write(from buffer: PeerBuffer, bufferOffset: Int = 0, count: Int? = nil, at offset: UInt64,
                      workRequestBytes: Int? = nil) throws(PeerError) {
        let count = try span(of: buffer, .write, from: bufferOffset, count: count)
        try transfer(.write, offset: offset, count: count, workRequestBytes: workRequestBytes, local: (buffer, bufferOffset)) { _, _, _ in
        } after: { _, _, _ in }
        unpersistedEnd = max(unpersistedEnd ?? 0, offset + UInt64(count))
    }

    /// Reads `count` bytes (default: to the buffer's end) at `offset` in the region into
    /// `buffer` from `bufferOffset`, straight into its memory.
    public func read(into buffer: PeerBuffer, bufferOffset: Int = 0, count: Int? = nil, at offset: UInt64,
                     workRequestBytes: Int? = nil) throws(PeerError) {
        let count = try span(of: buffer, .read, from: bufferOffset, count: count)
        try transfer(.read, offset: offset, count: count, workRequestBytes: workRequestBytes, local: (buffer, bufferOffset)) { _, _, _ in
        } after: { _, _, _ in }
    }

    /// The transfer's length, checked to lie inside a buffer this peer still has registered.
    private func span(of buffer: PeerBuffer, _ operation: PeerOperation, from start: Int, count: Int?) throws(PeerError) -> Int {
        guard !isClosed else { throw .closed(operation: operation.rawValue) }
        guard buffer.owner == ObjectIdentifier(self), buffers[buffer.key] === buffer else {
            throw .badOption("\(operation.rawValue): the buffer is not registered with this peer (register it first; a released one is gone)")
        }
        let size = buffer.memory.count
        let count = count ?? (size - start)
        guard start >= 0, count >= 0, start <= size, count <= size - start else {
            throw .badOption("\(operation.rawValue): bytes [\(start), \(start) + \(count)) are outside the \(size)-byte buffer")
        }
        return count
    }
}
