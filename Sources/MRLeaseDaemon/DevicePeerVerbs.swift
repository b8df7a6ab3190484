import MRLeaseGrant
import SystemPackage
import Verbs

/// The peer service's verbs on the daemon's device: its context and one CM event channel.
final class DevicePeerVerbs: PeerVerbs {
    let context: Context
    let channel: CMEventChannel
    let activeMTU: Int

    init(context: Context) throws(VerbsError) {
        self.context = context
        activeMTU = try context.queryPort(1).activeMTU
        channel = try CMEventChannel()
    }

    var deviceName: String { context.device.name }
    var descriptor: FileDescriptor { channel.descriptor }

    func listen(on endpoint: GrantEndpoint) throws(VerbsError) -> (id: any PeerCMID, port: UInt16, device: String?) {
        let id = try channel.createID()
        try id.bind(address: endpoint.host, port: endpoint.port)
        let device = try id.context()?.device.name
        try id.listen()
        return (id, try id.localPort(), device)
    }

    func nextEvent() throws(VerbsError) -> PeerCMEvent? {
        guard let event = try channel.nextEvent() else { return nil }
        return PeerCMEvent(kind: event.kind, status: event.status, id: event.id, privateData: event.privateData,
                           initiatorDepth: event.connection?.initiatorDepth)
    }

    func makePD() throws(VerbsError) -> any PeerPD { DevicePeerPD(domain: try ClientDomain(context: context)) }
}

/// A grant's `ClientDomain`.
final class DevicePeerPD: PeerPD {
    let domain: ClientDomain

    init(domain: ClientDomain) { self.domain = domain }

    func register(address: UnsafeMutableRawPointer, length: Int, access: AccessFlags) throws(VerbsError) -> any PeerMR {
        try domain.register(address: address, length: length, access: access)
    }

    /// A CQ of 4 entries and an RC QP of one send and one receive on it: the peer's one-sided
    /// operations need none of ours.
    func createQueuePair(on connection: any PeerCMID) throws(VerbsError) -> AnyObject {
        // The daemon hands back only ids this channel made (the seam's other side is the
        // recording stand-in, never mixed with this one): another type is a bug, not an errno.
        guard let id = connection as? CMID else { preconditionFailure("DevicePeerVerbs was handed \(type(of: connection)), not its own CMID") }
        let completions = try domain.context.createCompletionQueue(entries: 4)
        let queuePair = try domain.createQueuePair(on: id, sendQueue: completions, receiveQueue: completions, maxSend: 1, maxReceive: 1)
        return PeerQueuePair(queuePair: queuePair, completions: completions)
    }

    func close() throws(VerbsError) { try domain.close() }
}

/// A peer's QP and its CQ, held together for as long as the peer is.
final class PeerQueuePair {
    let queuePair: QueuePair
    let completions: CompletionQueue

    init(queuePair: QueuePair, completions: CompletionQueue) {
        self.queuePair = queuePair
        self.completions = completions
    }
}

extension CMID: PeerCMID {}
extension MemoryRegion: PeerMR {}
