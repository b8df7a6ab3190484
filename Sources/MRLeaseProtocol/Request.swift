/// The `type` of a request, and of the reply that answers it.
public enum RequestType: String, Sendable, Hashable, CaseIterable {
    case hello, register
    case registerBatch = "register-batch"
    case deregister, list, stats, ack, verify
    case grant
    case revokeGrant = "revoke-grant"

    /// How many fds a request of this type carries: one (the file) for `register` and
    /// `register-batch`, none for the rest.
    public var descriptorCount: Int {
        self == .register || self == .registerBatch ? 1 : 0
    }
}

/// A client's request. Its fields sit beside `v`, `type` and `id` in the message object.
public enum Request: Sendable, Equatable {
    case hello(Hello)
    /// Comes with exactly one fd (`SCM_RIGHTS`): the file to register.
    case register(Register)
    /// Several ranges of one file (its fd comes once), registered all or none: 1 to
    /// `Codec.maxBatchRanges` of them, answered in order.
    case registerBatch([Register])
    case deregister(region: UInt64)
    /// Regions in ascending id order, starting after region `after`: this connection's, or
    /// with `all` every connection's of the caller's uid (of every uid when the caller is root).
    /// At most `limit` of them (1 to `Codec.maxListLimit`; nil: `Codec.defaultListLimit`), and
    /// fewer when they would not fit in one message; the reply's `next` says where to go on.
    case list(after: UInt64?, all: Bool = false, limit: UInt64? = nil)
    case stats
    /// The client has stopped issuing RDMA to a `revoking` region.
    case ack(region: UInt64)
    /// `ack` for several regions at once (`"regions": [...]`, 1 to `Codec.maxAckRegions`): a
    /// client with thousands of regions on a broken file answers in one message.
    case ackRegions([UInt64])
    /// `ack` of every region of this connection on a file that is revoking (`"file":
    /// "major:minor:inode"`): the answer to a `revoking-file` event.
    case ackFile(String)
    /// Compare the file's extent map now with the one recorded at registration.
    case verify(region: UInt64)
    /// Make a region reachable by remote peers; answered with a descriptor.
    case grant(Grant)
    /// End a grant: its peers are disconnected and its descriptor stops working.
    case revokeGrant(grant: UInt64)

    public struct Hello: Sendable, Equatable {
        /// For the daemon's logs ("fio", "my-app 2.1").
        public var clientName: String?
        /// The protocol versions the client speaks.
        public var versions: [UInt64]
        /// One `revoking-file` per file and revocation instead of one `revoking` per region.
        public var revokingPerFile: Bool

        public init(clientName: String? = nil, versions: [UInt64] = [Codec.version], revokingPerFile: Bool = false) {
            self.clientName = clientName
            self.versions = versions
            self.revokingPerFile = revokingPerFile
        }

        /// How many of the client's versions an `unsupported-version` reply repeats.
        static let echoedVersions = 16

        /// The highest version both sides speak, or `unsupported-version`.
        public func negotiatedVersion(supported: [UInt64] = [Codec.version]) throws(ProtocolError) -> UInt64 {
            guard let version = versions.filter(supported.contains).max() else {
                // The client's list is echoed only in part: a reply must fit in one message.
                let shown = Self.echoedVersions
                var theirs = versions.prefix(shown).map(String.init).joined(separator: ", ")
                if versions.count > shown { theirs += ", … (\(versions.count) in all)" }
                let ours = supported.map(String.init).joined(separator: ", ")
                throw ProtocolError(.unsupportedVersion, "client speaks versions [\(theirs)], daemon speaks [\(ours)]")
            }
            return version
        }
    }

    public struct Register: Sendable, Equatable {
        /// Byte offset of the region in the file: a multiple of the page size.
        public var offset: UInt64
        /// Bytes from `offset`: more than 0, and offset + length within the file.
        public var length: UInt64
        /// Not empty.
        public var access: Set<Access>
        public var strategy: StrategyPreference
        /// The layout policy asked for; nil: the daemon's `layout-policy`. Applies to an ODP
        /// registration; a pinned one is always `revoke`.
        public var layoutPolicy: RegionLayoutPolicy?
        /// The client's label, echoed by `list` (at most `Codec.maxTagBytes` bytes of UTF-8).
        public var tag: String?

        public init(offset: UInt64, length: UInt64, access: Set<Access>,
                    strategy: StrategyPreference = .any, layoutPolicy: RegionLayoutPolicy? = nil, tag: String? = nil) {
            self.layoutPolicy = layoutPolicy
            self.offset = offset
            self.length = length
            self.access = access
            self.strategy = strategy
            self.tag = tag
        }
    }

    public var type: RequestType {
        switch self {
        case .hello: .hello
        case .register: .register
        case .registerBatch: .registerBatch
        case .deregister: .deregister
        case .list: .list
        case .stats: .stats
        case .ack, .ackRegions, .ackFile: .ack
        case .verify: .verify
        case .grant: .grant
        case .revokeGrant: .revokeGrant
        }
    }

    /// How many fds must come with this request: 1 for `register` and `register-batch`, 0
    /// for the rest.
    public var descriptorCount: Int { type.descriptorCount }
}

// MARK: Wire form

extension Request {
    /// Reads the payload of a request whose `type` is `type`.
    init(type: RequestType, _ fields: Fields) throws(ProtocolError) {
        switch type {
        case .hello:
            let versions = try fields.array("versions") { (item, path) throws(ProtocolError) in
                try Fields.unsigned(item, path(), as: UInt64.self)
            }
            guard !versions.isEmpty else { throw .invalid("versions", "must list at least one version") }
            self = .hello(Hello(clientName: try fields.stringIfPresent("clientName", maxBytes: Codec.maxTagBytes),
                                versions: versions, revokingPerFile: try fields.boolIfPresent("revokingPerFile") ?? false))
        case .register:
            self = .register(try Register(fields))
        case .registerBatch:
            let ranges = try fields.objects("ranges")
            guard (1...Codec.maxBatchRanges).contains(ranges.count) else {
                throw .invalid("ranges", "must hold 1 to \(Codec.maxBatchRanges) ranges, not \(ranges.count); send several requests")
            }
            var registers: [Register] = []
            for range in ranges { registers.append(try Register(range)) }
            self = .registerBatch(registers)
        case .deregister: self = .deregister(region: try fields.uint64("region"))
        case .list:
            let limit = try fields.uint64IfPresent("limit")
            if let limit, !(1...Codec.maxListLimit).contains(limit) {
                throw .invalid("limit", "must be 1 to \(Codec.maxListLimit), not \(limit); follow \"next\" for more")
            }
            self = .list(after: try fields.uint64IfPresent("after"), all: try fields.boolIfPresent("all") ?? false, limit: limit)
        case .stats: self = .stats
        case .ack:
            // One region, several, or a file's: exactly one of the three fields.
            if let file = try fields.stringIfPresent("file", maxBytes: 64) {
                guard try fields.uint64IfPresent("region") == nil, try fields.uint64ArrayIfPresent("regions") == nil else {
                    throw .invalid("file", "must not come with \"region\" or \"regions\": name a file, a region, or a list of regions")
                }
                guard FileName.isValid(file) else { throw .invalid("file", "must be major:minor:inode in decimal, as list shows it, not \"\(file)\"") }
                self = .ackFile(file)
                break
            }
            guard let regions = try fields.uint64ArrayIfPresent("regions") else {
                self = .ack(region: try fields.uint64("region"))
                break
            }
            guard try fields.uint64IfPresent("region") == nil else {
                throw .invalid("region", "must not come with \"regions\": name one region, or a list of them")
            }
            guard (1...Codec.maxAckRegions).contains(regions.count) else {
                throw .invalid("regions", "must hold 1 to \(Codec.maxAckRegions) regions, not \(regions.count); send several requests")
            }
            self = .ackRegions(regions)
        case .verify: self = .verify(region: try fields.uint64("region"))
        case .grant: self = .grant(try Grant(fields))
        case .revokeGrant: self = .revokeGrant(grant: try fields.uint64("grant"))
        }
    }

    /// The payload fields, appended to an object that already holds `v`, `type` and `id`.
    func write(to object: inout ObjectWriter) {
        switch self {
        case .hello(let hello):
            object.set("clientName", hello.clientName.map(JSONValue.string))
            object.set("versions", .array(hello.versions.map(JSONValue.integer)))
            object.set("revokingPerFile", hello.revokingPerFile ? .bool(true) : nil)
        case .register(let register):
            register.write(to: &object)
        case .registerBatch(let registers):
            object.set("ranges", .array(registers.map { register in
                var range = ObjectWriter()
                register.write(to: &range)
                return range.value
            }))
        case .deregister(let region), .ack(let region), .verify(let region):
            object.set("region", .integer(region))
        case .ackRegions(let regions):
            object.set("regions", .array(regions.map(JSONValue.integer)))
        case .ackFile(let file):
            object.set("file", .string(file))
        case .list(let after, let all, let limit):
            object.set("after", after.map(JSONValue.integer))
            object.set("all", all ? .bool(true) : nil)
            object.set("limit", limit.map(JSONValue.integer))
        case .stats:
            break
        case .grant(let grant):
            grant.write(to: &object)
        case .revokeGrant(let grant):
            object.set("grant", .integer(grant))
        }
    }
}

extension Request.Register {
    init(_ fields: Fields) throws(ProtocolError) {
        offset = try fields.uint64("offset")
        length = try fields.uint64("length")
        guard length > 0 else { throw .invalid(fields.path("length"), "must be greater than 0") }
        // An end past 2^64 - 1 is well-formed: no file is that long, so the registration plan
        // answers it `range-out-of-file` (docs/protocol.md), with a batch's index.
        access = try fields.accessList("access")
        guard !access.isEmpty else { throw .invalid(fields.path("access"), "must list at least one of read, write, atomic") }
        strategy = try fields.enumIfPresent("strategy") ?? .any
        layoutPolicy = try fields.enumIfPresent("layoutPolicy")
        tag = try fields.stringIfPresent("tag", maxBytes: Codec.maxTagBytes)
    }

    func write(to object: inout ObjectWriter) {
        object.set("offset", .integer(offset))
        object.set("length", .integer(length))
        object.set("access", access.wire)
        object.set("strategy", .string(strategy.rawValue))
        object.set("layoutPolicy", layoutPolicy.map { .string($0.rawValue) })
        object.set("tag", tag.map(JSONValue.string))
    }
}
