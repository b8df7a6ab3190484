import Glibc
import SystemPackage

/// Two RC queue pairs in one PD, connected to each other over the port's IPv4-mapped GID: a
/// peer and its target on one host, for one-sided RDMA without a second machine (the ODP
/// integrity self-test, and tests).
///
/// Owns its CQ and its two QPs; `close()` destroys both QPs (the PD's `close()` would too).
public struct Loopback {
    public let initiator: QueuePair
    public let target: QueuePair
    public let completions: CompletionQueue

    /// Creates the pair on port 1 and moves both QPs to RTS. The GID is `::ffff:127.0.0.1`
    /// when the port has it (rxe on `lo`), else the first IPv4-mapped one, else the first.
    public init(protectionDomain pd: ProtectionDomain, mtu: PathMTU = .bytes1024) throws(VerbsError) {
        let context = pd.context
        completions = try context.createCompletionQueue(entries: 16)
        let port = try context.queryPort(1)
        guard let gid = port.gids.first(where: { $0.description == "::ffff:127.0.0.1" })
            ?? port.gids.first(where: { $0.description.hasPrefix("::ffff:") }) ?? port.gids.first else {
            throw VerbsError(op: "ibv_query_gid", errno: .noSuchAddressOrDevice, detail: "\(context.device.name) port 1 has no GID")
        }
        initiator = try pd.createQueuePair(sendQueue: completions, receiveQueue: completions)
        target = try pd.createQueuePair(sendQueue: completions, receiveQueue: completions)
        let access: AccessFlags = [.localWrite, .remoteWrite, .remoteRead]
        try initiator.connect(port: 1, local: gid, to: QueuePairEndpoint(qpNumber: target.number, lid: port.lid, gid: gid), access: access, mtu: mtu)
        try target.connect(port: 1, local: gid, to: QueuePairEndpoint(qpNumber: initiator.number, lid: port.lid, gid: gid), access: access, mtu: mtu)
    }

    /// Posts an RDMA WRITE of `length` bytes from `source` to `(address, rkey)` and waits for
    /// its completion (`timeout` seconds at most).
    public func write(from source: MemoryRegion, at sourceAddress: UInt64? = nil, length: Int, to address: UInt64, rkey: UInt32,
                      wrID: UInt64 = 1, timeout: Double = 20) throws(VerbsError) -> WorkCompletion {
        try initiator.post(.write, local: source, localAddress: sourceAddress ?? source.address, length: UInt32(length),
                           remoteAddress: address, rkey: rkey, wrID: wrID)
        return try waitForCompletion(timeout: timeout)
    }

    /// Posts an RDMA READ of `length` bytes from `(address, rkey)` into `sink` and waits for
    /// its completion (`timeout` seconds at most).
    public func read(into sink: MemoryRegion, at sinkAddress: UInt64? = nil, length: Int, from address: UInt64, rkey: UInt32,
                     wrID: UInt64 = 2, timeout: Double = 20) throws(VerbsError) -> WorkCompletion {
        try initiator.post(.read, local: sink, localAddress: sinkAddress ?? sink.address, length: UInt32(length),
                           remoteAddress: address, rkey: rkey, wrID: wrID)
        return try waitForCompletion(timeout: timeout)
    }

    /// Polls the CQ until a completion arrives, or throws ETIMEDOUT after `timeout` seconds.
    ///
    /// The corresponding C function is `ibv_poll_cq`.
    public func waitForCompletion(timeout: Double = 20) throws(VerbsError) -> WorkCompletion {
        let deadline = Self.monotonicSeconds() + timeout
        repeat {
            if let completion = try completions.poll(max: 1).first { return completion }
            usleep(1000)
        } while Self.monotonicSeconds() < deadline
        throw VerbsError(op: "ibv_poll_cq", errno: .timedOut, detail: "no completion within \(timeout) s")
    }

    /// Destroys both QPs (the CQ goes when the last reference to it does). Every QP is tried;
    /// the first failure is thrown.
    ///
    /// The corresponding C function is `ibv_destroy_qp`.
    public func close() throws(VerbsError) {
        var failure: VerbsError?
        for qp in [initiator, target] {
            do throws(VerbsError) { try qp.destroy() } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
    }

    static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
