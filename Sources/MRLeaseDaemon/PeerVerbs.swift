import MRLeaseGrant
import SystemPackage
import Verbs

/// What the peer service needs of rdma_cm and verbs, and nothing more: listeners, the CM
/// event channel, and per grant a PD with the grant's MR and its peers' QPs. The daemon's is
/// `DevicePeerVerbs` (the device's context); fuzzers and host tests use a recording one
/// (TestSupport's `RecordingPeerVerbs`), so the peer service runs without a device.
public protocol PeerVerbs: AnyObject {
    /// The device's name, for messages.
    var deviceName: String { get }
    /// The port's active MTU (bytes).
    var activeMTU: Int { get }
    /// The CM event channel's fd: readable when `nextEvent` has an event.
    var descriptor: FileDescriptor { get }
    /// A listener bound to `endpoint`, the port it has (port 0 resolved), and the RDMA device
    /// rdma_bind_addr bound it to (nil: none carries the address). Listening on another
    /// device's address is the caller's to refuse.
    func listen(on endpoint: GrantEndpoint) throws(VerbsError) -> (id: any PeerCMID, port: UInt16, device: String?)
    /// The next event of the channel, acknowledged; nil when none is pending.
    func nextEvent() throws(VerbsError) -> PeerCMEvent?
    /// A new PD for one grant.
    func makePD() throws(VerbsError) -> any PeerPD
}

/// One rdma_cm id: a listener or a peer's connection (`CMID`).
public protocol PeerCMID: AnyObject {
    var isDestroyed: Bool { get }
    /// The other side's address ("ADDR:PORT").
    func peerAddress() -> String
    func accept(privateData: [UInt8], responderResources: UInt8, initiatorDepth: UInt8) throws(VerbsError)
    func reject(privateData: [UInt8]) throws(VerbsError)
    func disconnect() throws(VerbsError)
    /// Destroys the id and its QP; again, nothing.
    func destroy() throws(VerbsError)
}

/// A grant's PD (`ClientDomain`): the grant's MR and its peers' QPs are made in it, and
/// closing it closes them first.
public protocol PeerPD: AnyObject {
    func register(address: UnsafeMutableRawPointer, length: Int, access: AccessFlags) throws(VerbsError) -> any PeerMR
    /// A peer's QP (and its CQ) on `connection`; what is returned must be held for as long as
    /// the peer is: the id holds its QP only weakly.
    func createQueuePair(on connection: any PeerCMID) throws(VerbsError) -> AnyObject
    func close() throws(VerbsError)
}

/// A grant's MR, as peers are told it.
public protocol PeerMR: AnyObject {
    var address: UInt64 { get }
    var rkey: UInt32 { get }
    /// `ibv_dereg_mr`; again, nothing (closing its PD later skips it).
    func deregister() throws(VerbsError)
}

/// One rdma_cm event, as the peer service reads it (`CMEvent`).
public struct PeerCMEvent {
    public var kind: CMEvent.Kind
    public var status: Int32
    public var id: any PeerCMID
    public var privateData: [UInt8]
    /// The connect request's initiator depth (the READs and atomics the peer keeps in flight).
    public var initiatorDepth: UInt8?

    public init(kind: CMEvent.Kind, status: Int32 = 0, id: any PeerCMID, privateData: [UInt8] = [], initiatorDepth: UInt8? = nil) {
        self.kind = kind
        self.status = status
        self.id = id
        self.privateData = privateData
        self.initiatorDepth = initiatorDepth
    }
}
