import MRLeaseGrant
import TestSupport
import Verbs

@testable import LinuxFile
@testable import MRLeaseDaemon

/// Remote peers, played through the recording rdma_cm: connect requests whose private data
/// comes from a grant a reply made (right, one bit wrong, or cut short) or from the input,
/// ESTABLISHED or never (a handshake left hanging until a tick passes its bound), and the
/// events that end a connection. The daemon reads each through its own `handle` of the CM
/// channel's fd.
extension SequenceHarness {
    static let endings: [CMEvent.Kind] = [.disconnected, .disconnected, .rejected, .unreachable, .connectError, .timewaitExit, .deviceRemoval]
    static let initiatorDepths: [UInt8] = [1, 0, 16, 255]

    func peerConnect(_ input: inout FuzzInput) {
        let how = input.byte(), depth = input.pick(Self.initiatorDepths)
        var data: [UInt8]
        if how & 0x30 != 0x30, !descriptors.isEmpty,
           let descriptor = try? GrantDescriptor(text: descriptors[Int(how >> 6) % descriptors.count]) {  // a reply's own descriptor
            data = ConnectPrivateData(descriptor).encoded()
            let at = input.below(data.count)
            if how & 0x10 != 0 { data[at] ^= 1 << (how & 7) }
            if how & 0x20 != 0 { data = Array(data.prefix(at)) }
        } else {
            data = input.take(input.below(64))
        }
        peerVerbs.connect(privateData: data, initiatorDepth: depth)
        handlePeers()
    }

    /// ESTABLISHED for one of the connections, the latest first: also for one the daemon
    /// rejected or dropped, which it must ignore.
    func peerEstablished(_ input: inout FuzzInput) {
        guard let id = connection(&input) else { return }
        peerVerbs.queue(PeerCMEvent(kind: .established, id: id))
        handlePeers()
    }

    /// The end of one of the connections, as the CM reports it.
    func peerEnded(_ input: inout FuzzInput) {
        guard let id = connection(&input) else { return }
        peerVerbs.queue(PeerCMEvent(kind: input.pick(Self.endings), status: -110, id: id))
        handlePeers()
    }

    func connection(_ input: inout FuzzInput) -> RecordingPeerVerbs.ID? {
        let all = peerVerbs.connections, back = input.below(8)
        return all.isEmpty ? nil : all[all.count - 1 - back % all.count]
    }

    func handlePeers() {
        daemon.handle(Epoll.Ready(fd: peerVerbs.descriptor.rawValue, events: .readable))
    }

    /// After every step: a connection the daemon rejected is destroyed, and one it holds as a
    /// peer is live.
    func checkPeers() {
        for id in peerVerbs.connections where id.rejected != nil {
            precondition(id.isDestroyed, "connection \(id.number) was rejected but its rdma_cm id not destroyed")
        }
    }

    /// With every client gone: no grant, no peer, every connection's id destroyed and every
    /// grant's PD closed.
    func checkPeersGone() {
        let peers = daemon.peers!
        precondition(peers.book.grants.isEmpty && peers.peerCount == 0,
                     "left behind after every client went: \(peers.book.grants.count) grants, \(peers.peerCount) peers")
        for id in peerVerbs.connections { precondition(id.isDestroyed, "connection \(id.number) outlived every grant") }
        for (index, pd) in peerVerbs.domains.enumerated() { precondition(pd.isClosed, "grant PD \(index) outlived every grant") }
        peerVerbs.forget()
    }
}
