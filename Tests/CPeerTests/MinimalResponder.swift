import Foundation
import Glibc
import MRLeaseGrant
import TestSupport
import Verbs

/// What the C peer connects to. The tests reach it only through this, so the real daemon (a
/// client's registered file and a grant on it) can take the minimal responder's place.
protocol PeerCounterpart: AnyObject {
    /// The descriptor the peer is given (a credential: never printed).
    var descriptor: String { get }
    /// The region's bytes now.
    func contents() -> [UInt8]
    /// Puts `bytes` at the start of the region, as a local write would.
    func store(_ bytes: [UInt8])
    /// One turn: answers the rdma_cm events that are pending, without blocking.
    func serve() throws
    /// Ends every connection and the listener.
    func close() throws
}

/// A stand-in for mrleased's listener, written with the Verbs CM wrappers: a CMID listening on
/// the guest's rdma_cm address that answers each connect request for its grant with `answer`,
/// an accept (a client domain per connection, with a pinned MR over the responder's own buffer)
/// or a reject. It checks what the peer sends: the connect request must decode and carry the
/// descriptor's grant id and secret, or the request is rejected and `problems` says why.
final class MinimalResponder: PeerCounterpart {
    enum Answer {
        case accept(access: GrantAccess, alignment: UInt32, generation: UInt64)
        case reject(RejectPrivateData)
        /// An accept whose private data is whatever `bytes` makes of the real one (a peer-side
        /// check no daemon can be made to trigger: another grant, bad padding, a bad header).
        case tampered(access: GrantAccess, alignment: UInt32, bytes: ([UInt8]) -> [UInt8])
    }

    private struct Connection {
        let id: CMID
        let domain: ClientDomain
        let cq: CompletionQueue
        let qp: QueuePair
        let mr: MemoryRegion
    }

    let descriptor: String
    private let grant: GrantDescriptor
    private let answer: Answer
    private let channel: CMEventChannel
    private let listener: CMID
    private let buffer: UnsafeMutableRawBufferPointer
    private var connections: [Connection] = []
    /// Every event, as "kind(status)", for failure messages.
    private(set) var log: [String] = []
    /// The connect requests that decoded, in order.
    private(set) var requests: [ConnectPrivateData] = []
    /// What the peer sent wrong (empty when it spoke the protocol).
    private(set) var problems: [String] = []

    init(address: String, length: Int, answer: Answer) throws {
        self.answer = answer
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        channel = try CMEventChannel()
        listener = try channel.createID()
        try listener.bind(address: address, port: 0)
        try listener.listen()
        grant = GrantDescriptor(endpoint: GrantEndpoint(address: try Self.endpointAddress(address), port: try listener.localPort()),
                                grantID: UInt64.random(in: 1...UInt64.max), secret: try GrantSecret.random())
        descriptor = grant.text
    }

    deinit { buffer.deallocate() }

    static func endpointAddress(_ text: String) throws -> GrantEndpoint.Address {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return .ipv4(UInt32(bigEndian: v4.s_addr)) }
        guard inet_pton(AF_INET6, text, &v6) == 1 else { throw TestFailure("\(text) is not an IPv4 or IPv6 address") }
        let bytes = withUnsafeBytes(of: v6) { Array($0) }
        let high = bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let low = bytes[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return .ipv6(high: high, low: low)
    }

    func contents() -> [UInt8] { Array(buffer) }

    func store(_ bytes: [UInt8]) {
        precondition(bytes.count <= buffer.count)
        buffer.copyBytes(from: bytes)
    }

    func serve() throws {
        while let event = try channel.nextEvent() {
            log.append("\(event.kind)(\(event.status))")
            switch event.kind {
            case .connectRequest: try answer(event)
            case .established: break
            case .disconnected:
                // Answer the peer's DREQ (its DISCONNECTED waits for our DREP), then tear down.
                try event.id.disconnect()
                guard let index = connections.firstIndex(where: { $0.id === event.id }) else { break }
                try connections.remove(at: index).domain.close()
            default: problems.append("unexpected rdma_cm event \(event.kind) status \(event.status)")
            }
        }
    }

    private func answer(_ event: CMEvent) throws {
        let request: ConnectPrivateData
        do { request = try ConnectPrivateData(decoding: event.privateData) } catch {
            problems.append("the connect request does not decode: \(error)")
            return try event.id.reject(privateData: RejectPrivateData(reason: .malformed).encoded())
        }
        requests.append(request)
        guard request.grantID == grant.grantID, request.secret == grant.secret else {
            problems.append("the connect request names grant \(request.grantID), not \(grant.grantID), or another secret")
            return try event.id.reject(privateData: RejectPrivateData(reason: .badSecret).encoded())
        }
        switch answer {
        case .reject(let reject):
            try event.id.reject(privateData: reject.encoded())
        case .accept(let access, let alignment, let generation):
            try accept(event, access: access, alignment: alignment, generation: generation) { $0 }
        case .tampered(let access, let alignment, let bytes):
            try accept(event, access: access, alignment: alignment, generation: 1, bytes: bytes)
        }
    }

    private func accept(_ event: CMEvent, access: GrantAccess, alignment: UInt32, generation: UInt64,
                        bytes: ([UInt8]) -> [UInt8]) throws {
        guard let context = try event.id.context() else { throw TestFailure("a connect request's id has no device") }
        let domain = try ClientDomain(context: context)
        let cq = try context.createCompletionQueue(entries: 4)
        let qp = try domain.createQueuePair(on: event.id, sendQueue: cq, receiveQueue: cq)
        let mr = try domain.register(address: buffer.baseAddress!, length: buffer.count,
                                     access: [.localWrite, .remoteWrite, .remoteRead])
        connections.append(Connection(id: event.id, domain: domain, cq: cq, qp: qp, mr: mr))
        let accept = try AcceptPrivateData(access: access, remoteAddress: mr.address, length: UInt64(buffer.count), rkey: mr.rkey,
                                           transferAlignment: alignment, generation: generation, grantID: grant.grantID)
        try event.id.accept(privateData: bytes(accept.encoded()))
    }

    func close() throws {
        for connection in connections { try connection.domain.close() }
        connections = []
        try listener.destroy()
    }
}
