// The JSON shape of each result, read and written side by side so the two cannot drift.

extension ReplyResult {
    init(type: RequestType, _ f: Fields) throws(ProtocolError) {
        switch type {
        case .hello: self = .hello(try HelloResult(f))
        case .register: self = .register(try Registration(f))
        case .registerBatch:
            var registrations: [Registration] = []
            for region in try f.objects("regions") { registrations.append(try Registration(region)) }
            self = .registerBatch(registrations)
        case .deregister: self = .deregister
        case .list: self = .list(try RegionList(f))
        case .stats: self = .stats(try Statistics(f))
        case .ack: self = .ack
        case .verify: self = .verify(try Verification(f))
        case .grant: self = .grant(try GrantResult(f))
        case .revokeGrant: self = .revokeGrant
        }
    }

    var json: JSONValue {
        switch self {
        case .hello(let result): return result.json
        case .register(let result): return result.json
        case .registerBatch(let results):
            var o = ObjectWriter()
            o.set("regions", .array(results.map(\.json)))
            return o.value
        case .list(let result): return result.json
        case .stats(let result): return result.json
        case .verify(let result): return result.json
        case .grant(let result): return result.json
        case .deregister, .ack, .revokeGrant: return ObjectWriter().value
        }
    }
}

extension HelloResult {
    init(_ f: Fields) throws(ProtocolError) {
        version = try f.uint64("version")
        daemon = try f.string("daemon")
        devices = []
        for device in try f.objects("devices") {
            let odp = try device.object("odp")
            // The integrity fields are absent from daemons older than the ODP self-test.
            devices.append(Device(name: try device.string("name"), odpSupported: try odp.bool("supported"),
                                  odpRC: try odp.strings("rc"), odpIntegrity: try device.enumIfPresent("odpIntegrity"),
                                  transferAlignment: try device.uint64IfPresent("transferAlignment"),
                                  odpIntegrityDetail: try device.stringIfPresent("odpIntegrityDetail", maxBytes: Codec.maxMessageBytes)))
        }
        strategies = try f.array("strategies") { (item, path) throws(ProtocolError) in
            try Fields.enumValue(item, path(), as: RegionStrategy.self)
        }
        let l = try f.object("limits")
        limits = Limits(maxMessageBytes: try l.uint64("maxMessageBytes"), maxRegionsPerUid: try l.uint64("maxRegionsPerUid"),
                        maxBytesPerUid: try l.uint64("maxBytesPerUid"), quiesceMillis: try l.uint64("quiesceMillis"),
                        // A daemon from before register-batch does not send it.
                        maxBatchRanges: try l.uint64IfPresent("maxBatchRanges") ?? 0,
                        // Absent from daemons older than the per-uid connection and byte bounds.
                        maxConnections: try l.uint64IfPresent("maxConnections"),
                        maxConnectionsPerUid: try l.uint64IfPresent("maxConnectionsPerUid"),
                        maxQueuedBytes: try l.uint64IfPresent("maxQueuedBytes"))
        // Absent from daemons older than list pages, grant limits and the stall bound.
        limits.maxListLimit = try l.uint64IfPresent("maxListLimit")
        limits.maxGrantsPerRegion = try l.uint64IfPresent("maxGrantsPerRegion")
        limits.maxGrantsPerUid = try l.uint64IfPresent("maxGrantsPerUid")
        limits.peerHandshakeMillis = try l.uint64IfPresent("peerHandshakeMillis")
        limits.clientStallMillis = try l.uint64IfPresent("clientStallMillis")
        layoutProtection = try f.enumIfPresent("layoutProtection")
        revokingPerFile = try f.boolIfPresent("revokingPerFile") ?? false
        layoutPolicy = try f.enumIfPresent("layoutPolicy")
        endpoints = f.object["endpoints"] == nil ? nil : try f.strings("endpoints")
    }

    var json: JSONValue {
        var o = ObjectWriter()
        o.set("version", .integer(version))
        o.set("daemon", .string(daemon))
        o.set("devices", .array(devices.map { device in
            var odp = ObjectWriter()
            odp.set("supported", .bool(device.odpSupported))
            odp.set("rc", .array(device.odpRC.map(JSONValue.string)))
            var d = ObjectWriter()
            d.set("name", .string(device.name))
            d.set("odp", odp.value)
            d.set("odpIntegrity", device.odpIntegrity.map { .string($0.rawValue) })
            d.set("transferAlignment", device.transferAlignment.map(JSONValue.integer))
            d.set("odpIntegrityDetail", device.odpIntegrityDetail.map(JSONValue.string))
            return d.value
        }))
        o.set("strategies", .array(strategies.map { .string($0.rawValue) }))
        var l = ObjectWriter()
        l.set("maxMessageBytes", .integer(limits.maxMessageBytes))
        l.set("maxRegionsPerUid", .integer(limits.maxRegionsPerUid))
        l.set("maxBytesPerUid", .integer(limits.maxBytesPerUid))
        l.set("quiesceMillis", .integer(limits.quiesceMillis))
        l.set("maxBatchRanges", .integer(limits.maxBatchRanges))
        if let value = limits.maxConnections { l.set("maxConnections", .integer(value)) }
        if let value = limits.maxConnectionsPerUid { l.set("maxConnectionsPerUid", .integer(value)) }
        if let value = limits.maxQueuedBytes { l.set("maxQueuedBytes", .integer(value)) }
        l.set("maxListLimit", limits.maxListLimit.map(JSONValue.integer))
        l.set("maxGrantsPerRegion", limits.maxGrantsPerRegion.map(JSONValue.integer))
        l.set("maxGrantsPerUid", limits.maxGrantsPerUid.map(JSONValue.integer))
        l.set("peerHandshakeMillis", limits.peerHandshakeMillis.map(JSONValue.integer))
        l.set("clientStallMillis", limits.clientStallMillis.map(JSONValue.integer))
        o.set("limits", l.value)
        o.set("layoutProtection", layoutProtection.map { .string($0.rawValue) })
        o.set("revokingPerFile", revokingPerFile ? .bool(true) : nil)
        o.set("layoutPolicy", layoutPolicy.map { .string($0.rawValue) })
        o.set("endpoints", endpoints.map { .array($0.map(JSONValue.string)) })
        return o.value
    }
}

extension Registration {
    init(_ f: Fields) throws(ProtocolError) {
        region = try f.uint64("region")
        lkey = try f.uint32("lkey")
        rkey = try f.uint32("rkey")
        address = try f.uint64("address")
        length = try f.uint64("length")
        strategy = try f.enumValue("strategy")
        strategyReason = try f.string("strategyReason")
        device = try f.string("device")
        backing = try f.enumValue("backing")
        layoutPolicy = try f.enumIfPresent("layoutPolicy")
    }

    var json: JSONValue {
        var o = ObjectWriter()
        o.set("region", .integer(region))
        o.set("lkey", .integer(lkey))
        o.set("rkey", .integer(rkey))
        o.set("address", .integer(address))
        o.set("length", .integer(length))
        o.set("strategy", .string(strategy.rawValue))
        o.set("strategyReason", .string(strategyReason))
        o.set("device", .string(device))
        o.set("backing", .string(backing.rawValue))
        o.set("layoutPolicy", layoutPolicy.map { .string($0.rawValue) })
        return o.value
    }
}

extension RegionList {
    init(_ f: Fields) throws(ProtocolError) {
        regions = []
        for r in try f.objects("regions") { regions.append(try Region(r)) }
        next = try f.uint64IfPresent("next")
    }

    var json: JSONValue { Self.json(regions: regions.map(\.json), next: next) }

    /// A page from regions already encoded (`Codec.encodeList` encodes each region once).
    static func json(regions: [JSONValue], next: UInt64?) -> JSONValue {
        var o = ObjectWriter()
        o.set("regions", .array(regions))
        o.set("next", next.map(JSONValue.integer))
        return o.value
    }
}

extension RegionList.Region {
    init(_ f: Fields) throws(ProtocolError) {
        region = try f.uint64("region")
        file = try f.string("file")
        offset = try f.uint64("offset")
        length = try f.uint64("length")
        access = try f.accessSet("access")
        strategy = try f.enumValue("strategy")
        state = try f.enumValue("state")
        rkey = try f.uint32IfPresent("rkey")
        lkey = try f.uint32IfPresent("lkey")
        address = try f.uint64IfPresent("address")
        tag = try f.stringIfPresent("tag")
        pid = try f.uint32IfPresent("pid")
        generation = try f.uint64IfPresent("generation")
        layoutPolicy = try f.enumIfPresent("layoutPolicy")
        if f.object["grants"] != nil {
            var grants: [RegionList.Grant] = []
            for g in try f.objects("grants") { grants.append(try RegionList.Grant(g)) }
            self.grants = grants
        } else {
            grants = nil
        }
    }

    var json: JSONValue {
        // Typed setters: a `list` page writes this up to 256 times.
        var o = ObjectWriter()
        o.set("region", unsigned: region)
        o.set("file", string: file)
        o.set("offset", unsigned: offset)
        o.set("length", unsigned: length)
        o.set("access", access.wire)
        o.set("strategy", string: strategy.rawValue)
        o.set("state", string: state.rawValue)
        o.set("rkey", unsigned: rkey.map(UInt64.init))
        o.set("lkey", unsigned: lkey.map(UInt64.init))
        o.set("address", unsigned: address)
        o.set("tag", string: tag)
        o.set("pid", unsigned: pid.map(UInt64.init))
        o.set("generation", unsigned: generation)
        o.set("layoutPolicy", string: layoutPolicy?.rawValue)
        o.set("grants", grants.map { .array($0.map(\.json)) })
        return o.value
    }
}

extension Statistics {
    init(_ f: Fields) throws(ProtocolError) {
        files = try f.uint64("files")
        regions = try f.uint64("regions")
        let bytes = try f.object("bytesByStrategy")
        bytesODP = try bytes.uint64("odp")
        bytesPinned = try bytes.uint64("pinned")
        leasesHeld = try f.uint64("leasesHeld")
        breaksHandled = try f.uint64("breaksHandled")
        breakToUnlockMicros = try Latency(try f.object("breakToUnlockMicros"))
        clients = try f.uint64("clients")
        layoutChangesHandled = try f.uint64IfPresent("layoutChangesHandled")
        layoutChecks = try f.uint64IfPresent("layoutChecks")
        layoutChangesFollowed = try f.uint64IfPresent("layoutChangesFollowed")
        registrations = try f.uint64IfPresent("registrations")
        restorations = try f.uint64IfPresent("restorations")
        regionsLost = try f.uint64IfPresent("regionsLost")
        grants = try f.uint64IfPresent("grants")
        peers = try f.uint64IfPresent("peers")
        requestMicros = [:]
        if f.object["requestMicros"] != nil {
            let requests = try f.object("requestMicros")
            for type in RequestType.allCases where requests.object[type.rawValue] != nil {
                requestMicros[type] = try Latency(try requests.object(type.rawValue))
            }
        }
    }

    var json: JSONValue {
        var o = ObjectWriter()
        write(to: &o)
        return o.value
    }

    /// Writes the fields straight into the reply's bytes: a `stats` reply is asked for every
    /// few milliseconds by monitors, and building it as nested values cost 40 000
    /// instructions for 500 bytes (callgrind, docs/benchmarks.md).
    func write(to o: inout ObjectWriter) {
        o.set("files", unsigned: files)
        o.set("regions", unsigned: regions)
        o.object("bytesByStrategy") { bytes in
            bytes.set("odp", unsigned: bytesODP)
            bytes.set("pinned", unsigned: bytesPinned)
        }
        o.set("leasesHeld", unsigned: leasesHeld)
        o.set("breaksHandled", unsigned: breaksHandled)
        o.object("breakToUnlockMicros") { breakToUnlockMicros.write(to: &$0) }
        o.set("clients", unsigned: clients)
        o.set("layoutChangesHandled", unsigned: layoutChangesHandled)
        o.set("layoutChecks", unsigned: layoutChecks)
        o.set("layoutChangesFollowed", unsigned: layoutChangesFollowed)
        o.set("registrations", unsigned: registrations)
        o.set("restorations", unsigned: restorations)
        o.set("regionsLost", unsigned: regionsLost)
        o.set("grants", unsigned: grants)
        o.set("peers", unsigned: peers)
        guard !requestMicros.isEmpty else { return }
        // The types present, in the protocol's order: no lookup of each type that is not.
        let present = requestMicros.map { (order: RequestType.allCases.firstIndex(of: $0.key) ?? 0, type: $0.key, latency: $0.value) }
            .sorted { $0.order < $1.order }
        o.object("requestMicros") { requests in
            for entry in present { requests.object(entry.type.rawValue) { entry.latency.write(to: &$0) } }
        }
    }
}

extension Statistics.Latency {
    init(_ f: Fields) throws(ProtocolError) {
        self.init(p50: try f.uint64("p50"), p99: try f.uint64("p99"), max: try f.uint64("max"), count: try f.uint64("count"),
                  sum: try f.uint64IfPresent("sum"))
        guard f.object["buckets"] != nil else { return }
        let counts = try f.array("buckets") { (item, path) throws(ProtocolError) in try Fields.unsigned(item, path(), as: UInt64.self) }
        // A histogram that does not add up would be rendered as a confident wrong answer.
        guard counts.count <= Self.maxBuckets else { throw .invalid(f.path("buckets"), "has at most \(Self.maxBuckets) entries") }
        var total: UInt64 = 0
        for n in counts {
            let (next, overflow) = total.addingReportingOverflow(n)
            guard !overflow else { throw .invalid(f.path("buckets"), "must add up to count (\(count))") }
            total = next
        }
        guard total == count else { throw .invalid(f.path("buckets"), "must add up to count (\(count)), got \(total)") }
        guard counts.last != 0 else { throw .invalid(f.path("buckets"), "must not end with an empty bucket") }
        buckets = counts
    }

    var json: JSONValue {
        var o = ObjectWriter()
        write(to: &o)
        return o.value
    }

    func write(to o: inout ObjectWriter) {
        o.set("p50", unsigned: p50)
        o.set("p99", unsigned: p99)
        o.set("max", unsigned: max)
        o.set("count", unsigned: count)
        o.set("sum", unsigned: sum)
        o.set("buckets", unsignedArray: buckets)
    }
}

extension Verification {
    init(_ f: Fields) throws(ProtocolError) {
        layout = try f.layout()
        extentsBefore = try f.uint64("extentsBefore")
        extentsAfter = try f.uint64("extentsAfter")
    }

    var json: JSONValue {
        var o = ObjectWriter()
        o.set("layoutChanged", .bool(layoutChanged))
        o.set("layout", .string(layout.rawValue))
        o.set("extentsBefore", .integer(extentsBefore))
        o.set("extentsAfter", .integer(extentsAfter))
        return o.value
    }
}

extension Fields {
    /// `layout`, or from `layoutChanged` where it is missing: `layout` is newer, and a daemon
    /// without it knew only the boolean.
    func layout() throws(ProtocolError) -> LayoutStatus {
        if let layout: LayoutStatus = try enumIfPresent("layout") { return layout }
        return try bool("layoutChanged") ? .changed : .unchanged
    }
}
