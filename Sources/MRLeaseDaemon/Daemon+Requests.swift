import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage

extension Daemon {
    /// The reply to one packet. Never throws and never touches another client's state: a bad
    /// request costs only its sender an error reply. nil when the reply comes later: a
    /// registration whose pin went to the worker (`pinsFinished` sends it).
    func answer(_ message: UnixSocket.Message, from session: ClientSession, received: UInt64 = Engine.now()) -> Reply? {
        if message.truncated { return Codec.errorReply(to: [], .messageTooLarge) }
        if message.fdsNotReceived {
            logger.warning("a client's fd was not received: out of file descriptors", metadata: ["client": "\(session.owner)", "op": "recvmsg"])
            return Codec.errorReply(to: message.bytes, ProtocolError(.fdNotReceived, "mrleased could not receive the fd you attached: it is out of file descriptors (recvmsg reported MSG_CTRUNC with none installed); nothing was done, retry later"))
        }
        if message.fdsDropped {
            return Codec.errorReply(to: message.bytes, ProtocolError(.tooManyFDs, "a request carries at most one fd (register); the extra fds were closed"))
        }
        do throws(ProtocolError) {
            let (id, request) = try Codec.decodeRequest(message.bytes)
            try Codec.checkDescriptors(message.fds.count, for: request.type)
            if stopping { throw ProtocolError(.shuttingDown, "mrleased is stopping; reconnect after it restarts") }
            guard let result = try perform(request, id: id, fds: message.fds, session: session, received: received) else { return nil }
            return Reply(id: id, result)
        } catch {
            return Codec.errorReply(to: message.bytes, error)
        }
    }

    /// The result of one request; nil when it comes later (see `answer`).
    func perform(_ request: Request, id: UInt64, fds: [FileDescriptor], session: ClientSession,
                 received: UInt64) throws(ProtocolError) -> ReplyResult? {
        switch request {
        case .hello(let hello):
            let version = try hello.negotiatedVersion()
            session.clientName = hello.clientName
            session.revokingPerFile = hello.revokingPerFile
            var result = helloResult(version: version, session: session)
            result.revokingPerFile = hello.revokingPerFile
            return .hello(result)

        case .register(let register):
            return try registerRegions([register], id: id, fd: fds[0], session: session, batch: false, started: received).map { .register($0[0]) }

        case .registerBatch(let ranges):
            return try registerRegions(ranges, id: id, fd: fds[0], session: session, batch: true, started: received).map { .registerBatch($0) }

        case .deregister(let region):
            // Without a device no region exists: that, not the missing device, is the answer.
            guard let engine else { throw ProtocolError(.unknownRegion, "no region \(region) on this connection") }
            do { route(try engine.deregister(RegionID(region), owner: session.owner)) } catch { throw ProtocolError(error) }
            session.tags[RegionID(region)] = nil
            return .deregister

        case .list(let after, let all, let limit):
            return .list(listPage(after: after, all: all, limit: Int(limit ?? Codec.defaultListLimit), session: session))

        case .stats:
            return .stats(statistics())

        case .ack(let region):
            guard let engine else { throw ProtocolError(.unknownRegion, "no region \(region) on this connection") }
            do { route(try engine.acknowledge(RegionID(region), owner: session.owner)) } catch { throw ProtocolError(error) }
            return .ack

        case .ackRegions(let regions):
            guard let engine else { throw ProtocolError(.unknownRegion, "no region \(regions[0]) on this connection") }
            do { route(try engine.acknowledge(regions.map(RegionID.init), owner: session.owner)) } catch { throw ProtocolError(error) }
            return .ack

        case .ackFile(let file):
            guard session.revokingPerFile else {
                throw ProtocolError(.badRequest, "ack of a file answers revoking-file events, which this connection did not ask for: send hello with \"revokingPerFile\": true first, or ack its regions")
            }
            // Decoding checked the form; a file with nothing revoking of this connection's is a late ack.
            if let engine, let key = FileKey(wire: file) { route(engine.acknowledge(file: key, owner: session.owner)) }
            return .ack

        case .verify(let region):
            guard let engine else { throw ProtocolError(.unknownRegion, "no region \(region) on this connection") }
            let drift: ExtentDrift
            do { drift = try engine.verify(RegionID(region), owner: session.owner) } catch { throw ProtocolError(error) }
            return .verify(Verification(layout: drift.layout.wire, extentsBefore: UInt64(drift.extentsBefore),
                                        extentsAfter: UInt64(drift.extentsAfter)))

        case .grant(let grant):
            return .grant(try makeGrant(grant, session: session))

        case .revokeGrant(let grant):
            guard let peers else { throw ProtocolError(.unknownGrant, "no grant \(grant) on this connection (mrleased does not serve remote peers)") }
            deliver(try peers.revokeGrant(grant, owner: session.owner))
            return .revokeGrant
        }
    }

    /// What `hello` tells a client: the version, the device and its ODP, the limits (this
    /// client's), and where peers connect.
    func helloResult(version: UInt64, session: ClientSession) -> HelloResult {
        HelloResult(
            version: version, daemon: Self.version,
            devices: deviceName.map { [.init(name: $0, odpSupported: odp.supported, odpRC: odp.rc.names,
                                             odpIntegrity: odpIntegrity?.wire, transferAlignment: odpIntegrity.map { UInt64($0.transferAlignment) },
                                             odpIntegrityDetail: odpIntegrity?.detail)] } ?? [],
            strategies: deviceName == nil ? [] : (odp.supported ? [.odp, .pinned] : [.pinned]),
            limits: helloLimits(for: session),
            layoutProtection: (engine?.layoutProtection ?? .none).wire,
            endpoints: (peers?.endpoints ?? []).map { "\($0)" }, layoutPolicy: configuration.layoutPolicy)
    }

    /// A grant on one of the session's regions, with its expiry timer.
    func makeGrant(_ grant: Request.Grant, session: ClientSession) throws(ProtocolError) -> GrantResult {
        guard let peers else {
            let why = noPeersReason.map { "listen is set, but \($0)" } ?? "set `listen = ADDR:PORT` in its config (or --listen) and restart it"
            throw ProtocolError(.remoteAccessUnavailable, "mrleased does not serve remote peers: \(why)")
        }
        guard let engine, let info = engine.info(RegionID(grant.region), owner: session.owner) else {
            throw ProtocolError(.unknownRegion, "no region \(grant.region) on this connection")
        }
        let made = try peers.grant(grant, region: info, owner: session.owner, uid: session.credentials.uid, now: currentTime())
        if made.expiresAt != nil { scheduleGrantExpiry() }
        return made.result
    }

    /// The limits `hello` reports: this connection's byte quota and the daemon's bounds.
    func helloLimits(for session: ClientSession) -> HelloResult.Limits {
        var limits = HelloResult.Limits(
            maxMessageBytes: UInt64(Codec.maxMessageBytes), maxRegionsPerUid: UInt64(configuration.maxRegionsPerUID),
            maxBytesPerUid: session.byteLimit ?? UInt64.max, quiesceMillis: configuration.quiesceMillis,
            maxBatchRanges: UInt64(Codec.maxBatchRanges), maxConnections: UInt64(configuration.maxConnections),
            maxConnectionsPerUid: UInt64(configuration.maxConnectionsPerUID), maxQueuedBytes: configuration.maxQueuedBytesPerClient)
        limits.maxListLimit = Codec.maxListLimit
        limits.maxGrantsPerRegion = UInt64(configuration.maxGrantsPerRegion)
        limits.maxGrantsPerUid = UInt64(configuration.maxGrantsPerUID)
        limits.peerHandshakeMillis = configuration.peerHandshakeMillis
        limits.clientStallMillis = configuration.clientStallMillis
        return limits
    }

    /// One `list` page: at most `limit` regions with ids above `after`, in ascending order,
    /// and `next` set when more follow. Only the page's regions are looked up and described:
    /// the rest cost an id comparison each, so a page's cost is bounded by `limit`.
    func listPage(after: UInt64?, all: Bool, limit: Int, session: ClientSession) -> RegionList {
        guard let engine else { return RegionList(regions: []) }
        // `all` is for operators (`mrlease list`): other connections of the same uid, or
        // every connection for root; never another user's regions.
        let uid = session.credentials.uid
        let owners = all ? sessions.values.filter { uid == 0 || $0.credentials.uid == uid } : [session]
        // The `limit + 1` lowest ids above `after` (one more than the page, to know whether
        // more follow), kept sorted while scanning: O(n log limit), no sort of every id.
        let keep = limit + 1
        var ids: [(id: RegionID, owner: ClientSession)] = []
        ids.reserveCapacity(keep + 1)
        for owner in owners {
            for id in engine.regionIDs(owner: owner.owner) where after.map({ id.rawValue > $0 }) ?? true {
                if ids.count == keep, id > ids[keep - 1].id { continue }
                var low = 0, high = ids.count
                while low < high {
                    let middle = (low + high) / 2
                    if ids[middle].id < id { low = middle + 1 } else { high = middle }
                }
                ids.insert((id, owner), at: low)
                if ids.count > keep { ids.removeLast() }
            }
        }
        let more = ids.count > limit
        let page = ids.prefix(limit).compactMap { entry in
            engine.info(entry.id).map { wireRegion($0, tag: entry.owner.tags[entry.id], pid: all ? UInt32(entry.owner.credentials.pid) : nil) }
        }
        return RegionList(regions: page, next: more ? page.last?.region : nil)
    }

    func wireRegion(_ info: RegionInfo, tag: String?, pid: UInt32? = nil) -> RegionList.Region {
        RegionList.Region(region: info.id.rawValue, file: "\(info.file)", offset: info.offset, length: info.length,
                          access: info.access.wire, strategy: info.strategy.wire, state: info.state.wire,
                          rkey: info.keys?.rkey, lkey: info.keys?.lkey, address: info.keys?.address,
                          tag: tag.flatMap { $0.isEmpty ? nil : $0 }, pid: pid, generation: info.generation,
                          grants: peers?.summaries(of: info.id, now: currentTime()), layoutPolicy: info.layoutPolicy.wire)
    }
}

extension Registration {
    /// A new region's reply. A region is registered when made, so it has keys.
    init(_ info: RegionInfo) {
        let keys = info.keys ?? MRKeys(lkey: 0, rkey: 0, address: 0)
        self.init(region: info.id.rawValue, lkey: keys.lkey, rkey: keys.rkey, address: keys.address, length: info.length,
                  strategy: info.strategy.wire, strategyReason: info.strategyReason, device: info.device, backing: info.backing.wire,
                  layoutPolicy: info.layoutPolicy.wire)
    }
}

extension Daemon {
    /// The `stats` result: the engine's counters, the daemon's own, and its request times. The
    /// one source of `stats` replies and of the metrics file.
    func statistics() -> Statistics {
        let stats = engine?.statistics() ?? EngineStatistics()
        return Statistics(
            files: UInt64(stats.files), regions: UInt64(stats.regions),
            bytesODP: stats.bytesByStrategy.odp, bytesPinned: stats.bytesByStrategy.pinned,
            leasesHeld: UInt64(stats.leasesHeld), breaksHandled: UInt64(stats.breaksHandled),
            breakToUnlockMicros: Statistics.Latency(stats.breakToUnlock),
            clients: UInt64(sessions.count), requestMicros: requestTimes.mapValues(Statistics.Latency.init),
            layoutChangesHandled: UInt64(stats.layoutChangesHandled), layoutChecks: UInt64(stats.layoutChecks),
            registrations: UInt64(stats.registrations), restorations: UInt64(stats.restorations),
            regionsLost: UInt64(stats.regionsLost),
            grants: UInt64(peers?.book.grants.count ?? 0), peers: UInt64(peers?.peerCount ?? 0),
            layoutChangesFollowed: UInt64(stats.layoutChangesFollowed))
    }
}

extension Statistics.Latency {
    init(_ histogram: LatencyHistogram) {
        // Trailing empty buckets are left out on the wire (docs/protocol.md, `stats`).
        let used = (histogram.buckets.lastIndex { $0 != 0 }).map { $0 + 1 } ?? 0
        self.init(p50: histogram.quantileMicros(0.5) ?? 0, p99: histogram.quantileMicros(0.99) ?? 0,
                  max: histogram.maxMicros, count: histogram.count,
                  buckets: Array(histogram.buckets.prefix(used)), sum: histogram.sumNanoseconds / 1000)
    }
}

extension ProtocolError {
    /// This error, for the range at `index` of a `register-batch`.
    func at(_ index: Int) -> ProtocolError {
        var error = self
        error.index = UInt64(index)
        return error
    }
}
