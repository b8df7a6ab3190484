import Foundation
import MRLeaseGrant
import TestSupport
import Verbs

/// A remote peer made of bare rdma_cm and verbs calls, for tests that check what the daemon
/// does on the wire: it sends exactly the private data it is given, and reports what came
/// back, with no retry or reconnect of its own (the peer library's job).
final class RawPeer {
    enum Outcome {
        case accepted(AcceptPrivateData)
        /// The reject's mrleased private data, or nil when it is not mrleased's (the CM's).
        case rejected(RejectPrivateData?, status: Int32)
        case failed(CMEvent.Kind, status: Int32)
        /// Not waited for (`waitForAnswer: false`): the connect request is out, and the peer
        /// reads no rdma_cm event, so it never sends the RTU that completes a handshake.
        case pending
    }

    let channel: CMEventChannel
    let id: CMID
    let domain: ClientDomain
    let completions: CompletionQueue
    /// Held: the id holds its QP only weakly.
    let queuePair: QueuePair
    let buffer: UnsafeMutableRawPointer
    let bufferSize = 1 << 20
    let local: MemoryRegion
    private(set) var outcome: Outcome
    /// Every rdma_cm event seen, in order.
    private(set) var events: [CMEvent.Kind] = []

    /// Connects to `endpoint` sending `privateData` and waits for the answer (or, without
    /// `waitForAnswer`, leaves the handshake half-open, as an attacker's peer would).
    init(endpoint: GrantEndpoint, privateData: [UInt8], waitForAnswer: Bool = true) throws {
        channel = try CMEventChannel()
        id = try channel.createID()
        try id.resolveAddress(endpoint.host, port: endpoint.port)
        var placeholder: [CMEvent.Kind] = []
        _ = try Self.expect(.addressResolved, on: channel, log: &placeholder)
        try id.resolveRoute()
        _ = try Self.expect(.routeResolved, on: channel, log: &placeholder)
        guard let context = try id.context() else { throw TestFailure("a resolved id has no device") }
        domain = try ClientDomain(context: context)
        completions = try context.createCompletionQueue(entries: 16)
        queuePair = try domain.createQueuePair(on: id, sendQueue: completions, receiveQueue: completions)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: bufferSize)
        local = try domain.register(address: buffer, length: bufferSize, access: [.localWrite])
        try id.connect(privateData: privateData, responderResources: 1, initiatorDepth: 1)
        events = placeholder
        outcome = .pending
        guard waitForAnswer else { return }
        let answer = try Self.next(on: channel, log: &events)
        switch answer.kind {
        case .established:
            outcome = .accepted(try AcceptPrivateData(decoding: answer.privateData))
        case .rejected:
            outcome = .rejected(try? RejectPrivateData(decoding: answer.privateData), status: answer.status)
        default:
            outcome = .failed(answer.kind, status: answer.status)
        }
    }

    convenience init(descriptor: GrantDescriptor) throws {
        try self.init(endpoint: descriptor.endpoint, privateData: ConnectPrivateData(descriptor).encoded())
    }

    deinit {
        try? domain.close()
        buffer.deallocate()
    }

    var accept: AcceptPrivateData? {
        if case .accepted(let accept) = outcome { return accept }
        return nil
    }

    var rejection: RejectReason? {
        if case .rejected(let data, _) = outcome { return data?.reason }
        return nil
    }

    /// RDMA WRITE of `bytes` to `remoteAddress` with `rkey` (by default the accept's, at
    /// `offset` into the region); returns the completion.
    func write(_ bytes: [UInt8], at offset: UInt64, remoteAddress: UInt64? = nil, rkey: UInt32? = nil) throws -> WorkCompletion {
        precondition(bytes.count <= bufferSize)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        try queuePair.post(.write, local: local, localAddress: local.address, length: UInt32(bytes.count),
                               remoteAddress: (remoteAddress ?? accept!.remoteAddress) + offset, rkey: rkey ?? accept!.rkey, wrID: 1)
        return try completion()
    }

    /// RDMA READ of `count` bytes at `offset` into the region.
    func read(_ count: Int, at offset: UInt64) throws -> (bytes: [UInt8], completion: WorkCompletion) {
        try queuePair.post(.read, local: local, localAddress: local.address, length: UInt32(count),
                               remoteAddress: accept!.remoteAddress + offset, rkey: accept!.rkey, wrID: 2)
        let done = try completion()
        return (Array(UnsafeRawBufferPointer(start: buffer, count: count)), done)
    }

    func completion(within seconds: Double = 30) throws -> WorkCompletion {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let done = try completions.poll(max: 1).first { return done }
            usleep(200)
        }
        throw TestFailure("no completion within \(seconds) s")
    }

    /// The next rdma_cm event, which must be `kind`.
    @discardableResult
    func expect(_ kind: CMEvent.Kind, within seconds: Double = 20) throws -> CMEvent {
        try Self.expect(kind, on: channel, within: seconds, log: &events)
    }

    /// Disconnects and waits for the daemon's answer.
    func disconnect() throws {
        try id.disconnect()
        try expect(.disconnected)
    }

    static func expect(_ kind: CMEvent.Kind, on channel: CMEventChannel, within seconds: Double = 20,
                       log: inout [CMEvent.Kind]) throws -> CMEvent {
        let event = try next(on: channel, within: seconds, log: &log)
        guard event.kind == kind else { throw TestFailure("expected \(kind), got \(event.kind) status \(event.status); seen \(log)") }
        return event
    }

    static func next(on channel: CMEventChannel, within seconds: Double = 20, log: inout [CMEvent.Kind]) throws -> CMEvent {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let event = try channel.nextEvent() {
                log.append(event.kind)
                return event
            }
            usleep(1000)
        }
        throw TestFailure("no rdma_cm event within \(seconds) s; seen \(log)")
    }
}
