import CRDMA
import Glibc
import SystemPackage

/// An rdma_cm event channel: the fd an event loop waits on for connection events (address and
/// route resolved, connect requests, established, rejected, disconnected …) of every `CMID`
/// made on it.
///
/// Owns its `rdma_event_channel`; every `CMID` on it keeps it alive (an id must be destroyed
/// before its channel: librdmacm's `rdma_destroy_event_channel` fails with EBUSY otherwise).
/// The fd is non-blocking, so `nextEvent()` answers nil instead of waiting.
public final class CMEventChannel {
    let pointer: UnsafeMutablePointer<rdma_event_channel>
    /// The ids made on this channel, by their `rdma_cm_id`, so an event names the `CMID` it is
    /// for. Weak: an id goes when its owners let it go, and `rdma_destroy_id` discards its
    /// pending events, so an event never names an id that is gone.
    private var ids: [UnsafeMutablePointer<rdma_cm_id>: WeakID] = [:]

    private struct WeakID {
        weak var id: CMID?
    }

    /// Opens a channel. Fails when the `rdma_ucm` module is not loaded (no
    /// `/dev/infiniband/rdma_cm`), naming the call and errno.
    ///
    /// The corresponding C function is `rdma_create_event_channel`.
    public init() throws(VerbsError) {
        guard let channel = rdma_create_event_channel() else {
            throw VerbsError(op: "rdma_create_event_channel", errno: currentErrno(),
                             detail: "is the rdma_ucm module loaded (/dev/infiniband/rdma_cm)?")
        }
        let flags = fcntl(channel.pointee.fd, F_GETFL)
        guard flags >= 0, fcntl(channel.pointee.fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
            let error = VerbsError(op: "fcntl", errno: currentErrno(), detail: "O_NONBLOCK on the rdma_cm event channel")
            rdma_destroy_event_channel(channel)
            throw error
        }
        pointer = channel
    }

    deinit {
        // Every CMID holds this channel, so none is left and the channel has no ids.
        rdma_destroy_event_channel(pointer)
    }

    /// The fd to wait on for readability (non-blocking).
    public var descriptor: FileDescriptor { FileDescriptor(rawValue: pointer.pointee.fd) }

    /// Creates a reliable-connected (`RDMA_PS_TCP`) id whose events arrive on this channel.
    ///
    /// The corresponding C function is `rdma_create_id`.
    public func createID() throws(VerbsError) -> CMID {
        var created: UnsafeMutablePointer<rdma_cm_id>?
        try check("rdma_create_id", rdma_create_id(pointer, &created, nil, RDMA_PS_TCP), detail: "RC (RDMA_PS_TCP)")
        guard let created else { throw VerbsError(op: "rdma_create_id", errno: .ioError, detail: "no id returned") }
        return adopt(created)
    }

    /// Wraps an id librdmacm made on this channel (a connect request's new id) and records it.
    private func adopt(_ id: UnsafeMutablePointer<rdma_cm_id>) -> CMID {
        let owner = CMID(channel: self, pointer: id)
        ids = ids.filter { $0.value.id != nil }
        ids[id] = WeakID(id: owner)
        return owner
    }

    /// Called by a CMID as it destroys its `rdma_cm_id`.
    func forget(_ id: UnsafeMutablePointer<rdma_cm_id>) {
        ids[id] = nil
    }

    /// The next event, or nil when none is pending. Copies what the event carries (private
    /// data included) and acknowledges it at once, so no event is ever held: `rdma_destroy_id`
    /// waits for every event reported on its id to be acknowledged. A connect request's new
    /// id becomes a `CMID` owned by the returned event: dropping it without `accept` destroys
    /// the id, which the kernel answers with a reject.
    ///
    /// The corresponding C functions are `rdma_get_cm_event` and `rdma_ack_cm_event`.
    public func nextEvent() throws(VerbsError) -> CMEvent? {
        var raw: UnsafeMutablePointer<rdma_cm_event>?
        while rdma_get_cm_event(pointer, &raw) != 0 {
            let code = currentErrno()
            switch code {
            case .interrupted: continue
            case .resourceTemporarilyUnavailable: return nil
            default: throw VerbsError(op: "rdma_get_cm_event", errno: code)
            }
        }
        guard let raw else { throw VerbsError(op: "rdma_get_cm_event", errno: .ioError, detail: "no event returned") }
        let event = raw.pointee
        let kind = CMEvent.Kind(event.event)
        let parameters = kind.carriesConnectionParameters ? CMEvent.ConnectionParameters(event.param.conn) : nil
        let privateData = kind.carriesConnectionParameters ? CMEvent.copy(event.param.conn) : []
        let id: CMID
        if kind == .connectRequest {
            id = adopt(event.id)
        } else if let known = ids[event.id]?.id {
            id = known
        } else {
            // Only possible for an id destroyed while its event was already queued in
            // librdmacm's hands; the kernel discards the events of destroyed ids.
            let name = "\(kind) for an rdma_cm_id this channel does not know"
            try check("rdma_ack_cm_event", rdma_ack_cm_event(raw))
            throw VerbsError(op: "rdma_get_cm_event", errno: .noSuchFileOrDirectory, detail: name)
        }
        let listenID = event.listen_id.flatMap { ids[$0]?.id }
        try check("rdma_ack_cm_event", rdma_ack_cm_event(raw), detail: "\(kind)")
        return CMEvent(kind: kind, status: event.status, id: id, listenID: listenID,
                       privateData: privateData, connection: parameters)
    }
}
