/// What the daemon pushes about a region without being asked: `"type": "event"`, no `id`.
///
/// A region's events come in this order: `revoking` → `revoked` → `restored` or `lost`
/// (a `lost` can also follow `revoking` directly, or come alone). `unlinked` may come once,
/// at any point: it is news about the file, not a step of a revocation. A `follow` region
/// hears none of the revocation steps: `layout` after a change that moved its range, or `lost`.
public enum Event: Sendable, Equatable {
    /// Stop issuing RDMA to the region and send `ack`; the MR is deregistered at `ack` or at
    /// the deadline, whichever comes first.
    case revoking(Revoking)
    /// `revoking` for every region of one file the revocation takes, in one event: to a
    /// connection that asked for it (`hello`'s `revokingPerFile`). Answered with `ack` of `file`.
    case revokingFile(RevokingFile)
    /// The MR is gone: its keys are invalid and RDMA to them fails.
    case revoked(region: UInt64)
    /// A new MR covers the region again, with new keys and address.
    case restored(Restored)
    /// The region cannot come back; `deregister` it to release its quota.
    case lost(Lost)
    /// The region's file lost its last name. Nothing is revoked (the data lives while an fd is
    /// open, the daemon's own included); the filesystem frees the space only after the region
    /// is deregistered and every fd is closed. Sent once per region.
    case unlinked(region: UInt64)
    /// A remote peer connected to one of the region's grants.
    case peerConnected(PeerConnected)
    /// A peer's connection ended, and why.
    case peerDisconnected(PeerDisconnected)
    /// A `follow` region's range moved in the file (or the daemon could not tell): nothing was
    /// revoked, the MR, its keys and its peers stay and reach the file's current pages.
    case layout(Layout)

    public struct Layout: Sendable, Equatable {
        public var region: UInt64
        /// `changed`, or `unknown` when the daemon could not read the extents (never
        /// `unchanged`: that is not news).
        public var layout: LayoutStatus
        /// The file's size when the daemon looked.
        public var size: UInt64
        /// `layout` as a boolean, as `restored` and `verify` carry it.
        public var layoutChanged: Bool { layout.mayHaveChanged }

        public init(region: UInt64, layout: LayoutStatus, size: UInt64) {
            self.region = region
            self.layout = layout
            self.size = size
        }
    }

    public struct Revoking: Sendable, Equatable {
        public var region: UInt64
        public var reason: RevocationReason
        /// Milliseconds from now until the daemon revokes without waiting for `ack`.
        public var deadlineMillis: UInt64
        /// The same deadline as Unix time in milliseconds, for logs.
        public var deadlineUnixMillis: UInt64?

        public init(region: UInt64, reason: RevocationReason, deadlineMillis: UInt64, deadlineUnixMillis: UInt64? = nil) {
            self.region = region
            self.reason = reason
            self.deadlineMillis = deadlineMillis
            self.deadlineUnixMillis = deadlineUnixMillis
        }
    }

    public struct Restored: Sendable, Equatable {
        public var region: UInt64
        public var lkey: UInt32
        public var rkey: UInt32
        public var address: UInt64
        /// Whether the file's extents moved while the region was revoked (the data is the
        /// file's, but anything cached about its physical layout is stale); `unknown` when the
        /// daemon could not read them.
        public var layout: LayoutStatus
        /// `layout` as a boolean: true unless known to be unchanged.
        public var layoutChanged: Bool { layout.mayHaveChanged }

        public init(region: UInt64, lkey: UInt32, rkey: UInt32, address: UInt64, layout: LayoutStatus) {
            self.region = region
            self.lkey = lkey
            self.rkey = rkey
            self.address = address
            self.layout = layout
        }

        public init(region: UInt64, lkey: UInt32, rkey: UInt32, address: UInt64, layoutChanged: Bool) {
            self.init(region: region, lkey: lkey, rkey: rkey, address: address, layout: layoutChanged ? .changed : .unchanged)
        }
    }

    public struct Lost: Sendable, Equatable {
        public var region: UInt64
        public var reason: LossReason
        public var message: String?

        public init(region: UInt64, reason: LossReason, message: String? = nil) {
            self.region = region
            self.reason = reason
            self.message = message
        }
    }

    /// The event's name on the wire.
    public enum Name: String, Sendable, CaseIterable {
        case revoking, revoked, restored, lost, unlinked
        case peerConnected = "peer-connected"
        case peerDisconnected = "peer-disconnected"
        case layout
        case revokingFile = "revoking-file"
    }

    public var name: Name {
        switch self {
        case .revoking: .revoking
        case .revoked: .revoked
        case .restored: .restored
        case .lost: .lost
        case .unlinked: .unlinked
        case .peerConnected: .peerConnected
        case .peerDisconnected: .peerDisconnected
        case .layout: .layout
        case .revokingFile: .revokingFile
        }
    }

    /// The one region the event is about; nil for `revoking-file`, which names several.
    public var region: UInt64? {
        switch self {
        case .revokingFile: nil
        case .revoking(let event): event.region
        case .revoked(let region): region
        case .restored(let event): event.region
        case .lost(let event): event.region
        case .unlinked(let region): region
        case .peerConnected(let event): event.region
        case .peerDisconnected(let event): event.region
        case .layout(let event): event.region
        }
    }
}

// MARK: Wire form

extension Event {
    init(_ f: Fields) throws(ProtocolError) {
        let name = try f.enumValue("event", as: Name.self)
        if name == .revokingFile {
            self = .revokingFile(try RevokingFile(f))
            return
        }
        let region = try f.uint64("region")
        switch name {
        case .revokingFile:
            preconditionFailure("decoded above")
        case .revoking:
            self = .revoking(Revoking(region: region, reason: try f.enumValue("reason"),
                                      deadlineMillis: try f.uint64("deadlineMillis"),
                                      deadlineUnixMillis: try f.uint64IfPresent("deadlineUnixMillis")))
        case .revoked:
            self = .revoked(region: region)
        case .restored:
            self = .restored(Restored(region: region, lkey: try f.uint32("lkey"), rkey: try f.uint32("rkey"),
                                      address: try f.uint64("address"), layout: try f.layout()))
        case .lost:
            self = .lost(Lost(region: region, reason: try f.enumValue("reason"), message: try f.stringIfPresent("message")))
        case .unlinked:
            self = .unlinked(region: region)
        case .peerConnected:
            self = .peerConnected(PeerConnected(region: region, grant: try f.uint64("grant"), peer: try f.uint64("peer"),
                                                address: try f.string("address"), generation: try f.uint64("generation")))
        case .peerDisconnected:
            self = .peerDisconnected(PeerDisconnected(region: region, grant: try f.uint64("grant"), peer: try f.uint64("peer"),
                                                      reason: try f.enumValue("reason")))
        case .layout:
            self = .layout(Layout(region: region, layout: try f.layout(), size: try f.uint64("size")))
        }
    }

    /// The event's fields, appended to an object that already holds `v` and `type`.
    func write(to o: inout ObjectWriter) {
        o.set("event", .string(name.rawValue))
        o.set("region", region.map(JSONValue.integer))
        switch self {
        case .revokingFile(let event):
            event.write(to: &o)
        case .revoking(let event):
            o.set("reason", .string(event.reason.rawValue))
            o.set("deadlineMillis", .integer(event.deadlineMillis))
            o.set("deadlineUnixMillis", event.deadlineUnixMillis.map(JSONValue.integer))
        case .revoked, .unlinked:
            break
        case .restored(let event):
            o.set("lkey", .integer(event.lkey))
            o.set("rkey", .integer(event.rkey))
            o.set("address", .integer(event.address))
            o.set("layoutChanged", .bool(event.layoutChanged))
            o.set("layout", .string(event.layout.rawValue))
        case .lost(let event):
            o.set("reason", .string(event.reason.rawValue))
            o.set("message", event.message.map(JSONValue.string))
        case .peerConnected(let event):
            o.set("grant", .integer(event.grant))
            o.set("peer", .integer(event.peer))
            o.set("address", .string(event.address))
            o.set("generation", .integer(event.generation))
        case .peerDisconnected(let event):
            o.set("grant", .integer(event.grant))
            o.set("peer", .integer(event.peer))
            o.set("reason", .string(event.reason.rawValue))
        case .layout(let event):
            o.set("layoutChanged", .bool(event.layoutChanged))
            o.set("layout", .string(event.layout.rawValue))
            o.set("size", .integer(event.size))
        }
    }
}
