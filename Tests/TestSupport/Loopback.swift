import Foundation
import Verbs

/// Two RC queue pairs in one PD, connected to each other over the port's IPv4-mapped GID: a
/// peer and its target on one host, for tests that need real one-sided RDMA.
public struct Loopback {
    public let initiator: QueuePair
    public let target: QueuePair
    public let completions: CompletionQueue

    public init(protectionDomain pd: ProtectionDomain, mtu: PathMTU = .bytes1024) throws {
        let context = pd.context
        completions = try context.createCompletionQueue(entries: 16)
        let port = try context.queryPort(1)
        guard let gid = port.gids.first(where: { $0.description == "::ffff:127.0.0.1" }) ?? port.gids.first else {
            throw VerbsError(op: "ibv_query_gid", errno: .noSuchAddressOrDevice, detail: "port 1 has no GID")
        }
        initiator = try pd.createQueuePair(sendQueue: completions, receiveQueue: completions)
        target = try pd.createQueuePair(sendQueue: completions, receiveQueue: completions)
        let access: AccessFlags = [.localWrite, .remoteWrite, .remoteRead]
        try initiator.connect(port: 1, local: gid, to: QueuePairEndpoint(qpNumber: target.number, lid: port.lid, gid: gid), access: access, mtu: mtu)
        try target.connect(port: 1, local: gid, to: QueuePairEndpoint(qpNumber: initiator.number, lid: port.lid, gid: gid), access: access, mtu: mtu)
    }

    /// Posts an RDMA WRITE of `length` bytes from `source` to `(address, rkey)` and waits for
    /// its completion (20 s at most).
    public func write(from source: MemoryRegion, length: Int, to address: UInt64, rkey: UInt32, wrID: UInt64 = 1) throws -> WorkCompletion {
        try initiator.post(.write, local: source, localAddress: source.address, length: UInt32(length),
                           remoteAddress: address, rkey: rkey, wrID: wrID)
        return try waitForCompletion()
    }

    public func waitForCompletion(timeout: Double = 20) throws -> WorkCompletion {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let completion = try completions.poll(max: 1).first { return completion }
            usleep(1000)
        }
        throw VerbsError(op: "ibv_poll_cq", errno: .timedOut, detail: "no completion within \(timeout) s")
    }
}
