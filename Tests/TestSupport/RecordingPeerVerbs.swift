import CLinux
import Glibc
import MRLeaseDaemon
import MRLeaseGrant
import SystemPackage
import Verbs

/// A stand-in for rdma_cm and verbs under the peer service: no device here, so listeners,
/// connections, PDs, MRs and QPs are records, and the test (or fuzzer) plays the peers by
/// queueing CM events (`connect`, `queue`). It checks what the daemon does with a connection
/// (accepted, rejected, disconnected, destroyed; private data within rdma_cm's limits); it
/// never stands for RDMA working (the guest tests do).
public final class RecordingPeerVerbs: PeerVerbs {
    /// Every teardown call, in order ("disconnect 3", "destroy 3", "dereg 0x101", "close pd 0"),
    /// for tests of what happens before a lease goes and what after.
    public final class Journal {
        public internal(set) var calls: [String] = []
        /// Appended to each call when set (" lease=true": what held at that moment).
        public var annotate: (() -> String)?
        public func clear() { calls = [] }
        func record(_ call: String) { calls.append(call + (annotate?() ?? "")) }
    }

    /// A recorded rdma_cm id. Calls on a destroyed id fail as `CMID`'s do (EBADF).
    public final class ID: PeerCMID {
        public let number: Int
        public let address: String
        let journal: Journal
        /// What the daemon answered: the private data of its accept or reject.
        public private(set) var accepted: [UInt8]?
        public private(set) var rejected: [UInt8]?
        public private(set) var disconnects = 0
        public private(set) var isDestroyed = false

        init(number: Int, address: String, journal: Journal) {
            self.number = number
            self.address = address
            self.journal = journal
        }

        public func peerAddress() -> String { address }

        public func accept(privateData: [UInt8], responderResources: UInt8, initiatorDepth: UInt8) throws(VerbsError) {
            try live("rdma_accept")
            guard privateData.count <= CMID.maxAcceptPrivateData else { throw VerbsError(op: "rdma_accept", errno: .invalidArgument) }
            accepted = privateData
        }

        public func reject(privateData: [UInt8]) throws(VerbsError) {
            try live("rdma_reject")
            guard privateData.count <= CMID.maxRejectPrivateData else { throw VerbsError(op: "rdma_reject", errno: .invalidArgument) }
            rejected = privateData
        }

        /// EINVAL before an accept, as rdma_disconnect answers on a connection not established.
        public func disconnect() throws(VerbsError) {
            try live("rdma_disconnect")
            guard accepted != nil else { throw VerbsError(op: "rdma_disconnect", errno: .invalidArgument) }
            disconnects += 1
            journal.record("disconnect \(number)")
        }

        public func destroy() throws(VerbsError) {
            if !isDestroyed { journal.record("destroy \(number)") }
            isDestroyed = true
        }

        private func live(_ op: String) throws(VerbsError) {
            if isDestroyed { throw VerbsError(op: op, errno: .badFileDescriptor, detail: "the rdma_cm id was destroyed") }
        }
    }

    public final class PD: PeerPD {
        public let number: Int
        public private(set) var isClosed = false
        public private(set) var memory: [MR] = []
        let keys: () -> UInt32
        let refuse: () -> Errno?
        let journal: Journal

        init(number: Int, journal: Journal, keys: @escaping () -> UInt32, refuse: @escaping () -> Errno?) {
            self.number = number
            self.journal = journal
            self.keys = keys
            self.refuse = refuse
        }

        public func register(address: UnsafeMutableRawPointer, length: Int, access: AccessFlags) throws(VerbsError) -> any PeerMR {
            if isClosed { throw VerbsError(op: "ibv_reg_mr", errno: .badFileDescriptor) }
            if let errno = refuse() { throw VerbsError(op: "ibv_reg_mr", errno: errno, detail: "refused by the test") }
            let mr = MR(address: UInt64(UInt(bitPattern: address)), rkey: keys(), journal: journal)
            memory.append(mr)
            return mr
        }

        public func createQueuePair(on connection: any PeerCMID) throws(VerbsError) -> AnyObject {
            if isClosed || connection.isDestroyed { throw VerbsError(op: "rdma_create_qp", errno: .badFileDescriptor) }
            return connection
        }

        /// As ClientDomain's: the MRs still registered go with the PD.
        public func close() throws(VerbsError) {
            guard !isClosed else { return }
            for mr in memory { try mr.deregister() }
            isClosed = true
            journal.record("close pd \(number)")
        }
    }

    public final class MR: PeerMR {
        public let address: UInt64
        public let rkey: UInt32
        public private(set) var isDeregistered = false
        let journal: Journal
        init(address: UInt64, rkey: UInt32, journal: Journal) {
            self.address = address
            self.rkey = rkey
            self.journal = journal
        }

        public func deregister() throws(VerbsError) {
            guard !isDeregistered else { return }
            isDeregistered = true
            journal.record("dereg \(String(rkey, radix: 16))")
        }
    }

    public let journal = Journal()

    public let deviceName = "fake0"
    public let activeMTU: Int
    /// An eventfd: readable while events are queued, as the CM channel's fd is.
    public let descriptor: FileDescriptor
    public private(set) var listeners: [ID] = []
    /// Every connection a peer asked for, in order.
    public private(set) var connections: [ID] = []
    public private(set) var domains: [PD] = []
    /// The device a listener's address is on, when not this one's (`.some(nil)`: no RDMA device).
    public var listenerDevice: String??
    /// Grant MRs registered while this is set fail with it, as the kernel would refuse them.
    public var refuseRegistration: Errno?
    private var events: [PeerCMEvent] = []
    private var nextKey: UInt32 = 0x100

    public init(activeMTU: Int = 4096) {
        self.activeMTU = activeMTU
        let fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(fd >= 0, "eventfd: \(errno)")
        descriptor = FileDescriptor(rawValue: fd)
    }

    deinit { Glibc.close(descriptor.rawValue) }

    public func listen(on endpoint: GrantEndpoint) throws(VerbsError) -> (id: any PeerCMID, port: UInt16, device: String?) {
        let id = ID(number: listeners.count, address: "\(endpoint)", journal: journal)
        listeners.append(id)
        return (id, endpoint.port == 0 ? 7471 : endpoint.port, listenerDevice ?? deviceName)
    }

    public func nextEvent() throws(VerbsError) -> PeerCMEvent? {
        guard !events.isEmpty else {
            var count: UInt64 = 0
            _ = read(descriptor.rawValue, &count, 8)  // EAGAIN when already drained: nothing to clear
            return nil
        }
        return events.removeFirst()
    }

    public func makePD() throws(VerbsError) -> any PeerPD {
        let pd = PD(number: domains.count, journal: journal, keys: { [unowned self] in
            defer { nextKey &+= 1 }
            return nextKey
        }, refuse: { [unowned self] in refuseRegistration })
        domains.append(pd)
        return pd
    }

    /// A peer's connect request with `privateData`: a new id, and its CONNECT_REQUEST queued.
    @discardableResult
    public func connect(privateData: [UInt8], initiatorDepth: UInt8 = 1, from address: String = "192.0.2.9:41234") -> ID {
        let id = ID(number: connections.count, address: address, journal: journal)
        connections.append(id)
        queue(PeerCMEvent(kind: .connectRequest, id: id, privateData: privateData, initiatorDepth: initiatorDepth))
        return id
    }

    /// Queues an event (ESTABLISHED, DISCONNECTED, ...) for the daemon to read.
    public func queue(_ event: PeerCMEvent) {
        events.append(event)
        var one: UInt64 = 1
        _ = write(descriptor.rawValue, &one, 8)  // an eventfd write fails only past 2^64-2
    }

    /// Forgets the connections, PDs and journal recorded so far (a fuzzer between inputs: kept,
    /// they grow by every input's calls, and a run of millions reads as a leak).
    public func forget() {
        events = []
        connections = []
        domains = []
        journal.clear()
        _ = try? nextEvent()  // clears the eventfd; never throws
    }
}
