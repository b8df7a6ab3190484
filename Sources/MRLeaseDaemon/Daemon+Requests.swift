import CLinux
import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeaseProtocol
import SystemPackage

extension Daemon {
    /// The reply to one packet. Never throws and never touches another client's state: a bad
    /// request costs only its sender an error reply.
    func answer(_ message: UnixSocket.Message, from session: ClientSession) -> Reply {
        if message.truncated { return Codec.errorReply(to: [], .messageTooLarge) }
        if message.fdsDropped {
            return Codec.errorReply(to: message.bytes, ProtocolError(.tooManyFDs, "a request carries at most one fd (register); the extra fds were closed"))
        }
        do throws(ProtocolError) {
            let (id, request) = try Codec.decodeRequest(message.bytes)
            try Codec.checkDescriptors(message.fds.count, for: request.type)
            if stopping { throw ProtocolError(.shuttingDown, "mrleased is stopping; reconnect after it restarts") }
            return Reply(id: id, try perform(request, fds: message.fds, session: session))
        } catch {
            return Codec.errorReply(to: message.bytes, error)
        }
    }

    func perform(_ request: Request, fds: [FileDescriptor], session: ClientSession) throws(ProtocolError) -> ReplyResult {
        switch request {
        case .hello(let hello):
            let version = try hello.negotiatedVersion()
            session.clientName = hello.clientName
            return .hello(HelloResult(
                version: version, daemon: Self.version,
                devices: deviceName.map { [.init(name: $0, odpSupported: odp.supported, odpRC: odp.rc.names)] } ?? [],
                strategies: deviceName == nil ? [] : (odp.supported ? [.odp, .pinned] : [.pinned]),
                limits: .init(maxMessageBytes: UInt64(Codec.maxMessageBytes), maxRegionsPerUid: UInt64(configuration.maxRegionsPerUID),
                              maxBytesPerUid: session.byteLimit ?? UInt64.max, quiesceMillis: configuration.quiesceMillis,
                              maxBatchRanges: UInt64(Codec.maxBatchRanges))))

        case .register(let register):
            return .register(try registerRegions([register], fd: fds[0], session: session, batch: false)[0])

        case .registerBatch(let ranges):
            return .registerBatch(try registerRegions(ranges, fd: fds[0], session: session, batch: true))

        case .deregister(let region):
            // Without a device no region exists: that, not the missing device, is the answer.
            guard engine != nil else { throw ProtocolError(.unknownRegion, "no region \(region) on this connection") }
            try engineCall { engine throws(EngineError) in try engine.deregister(RegionID(region), owner: session.owner) }
            drop(RegionID(region), of: session)
            return .deregister

        case .list(let after, let all):
            // `all` is for operators (`mrlease list`): other connections of the same uid, or
            // every connection for root; never another user's regions.
            let uid = session.credentials.uid
            let owners = all ? sessions.values.filter { uid == 0 || $0.credentials.uid == uid } : [session]
            let regions = owners.flatMap { owner in
                (engine?.list(owner: owner.owner) ?? []).map { wireRegion($0, tag: owner.tags[$0.id], pid: all ? UInt32(owner.credentials.pid) : nil) }
            }
            return .list(RegionList(regions: regions.filter { after == nil || $0.region > after! }.sorted { $0.region < $1.region }))

        case .stats:
            let stats = engine?.statistics() ?? EngineStatistics()
            let latency = stats.breakToUnlock
            return .stats(Statistics(
                files: UInt64(stats.files), regions: UInt64(stats.regions),
                bytesODP: stats.bytesByStrategy["odp"] ?? 0, bytesPinned: stats.bytesByStrategy["pinned"] ?? 0,
                leasesHeld: UInt64(stats.leasesHeld), breaksHandled: UInt64(stats.breaksHandled),
                breakToUnlockMicros: Statistics.Latency(latency),
                clients: UInt64(sessions.count), requestMicros: requestTimes.mapValues(Statistics.Latency.init)))

        case .ack(let region):
            guard engine != nil else { throw ProtocolError(.unknownRegion, "no region \(region) on this connection") }
            try engineCall { engine throws(EngineError) in try engine.acknowledge(RegionID(region), owner: session.owner) }
            return .ack

        case .verify(let region):
            guard session.lengths[RegionID(region)] != nil else {
                throw ProtocolError(.unknownRegion, "no region \(region) on this connection")
            }
            let drift = try engineCall { engine throws(EngineError) in try engine.verify(RegionID(region)) }
            return .verify(Verification(layoutChanged: drift.layoutChanged, extentsBefore: UInt64(drift.extentsBefore),
                                        extentsAfter: UInt64(drift.extentsAfter)))
        }
    }

    /// Registers each range of the file behind `fd`, all or none: when one fails, the ones
    /// made before it are deregistered, and in a batch the error names the range's position.
    /// The fd is inspected once for all of them.
    func registerRegions(_ ranges: [Request.Register], fd: FileDescriptor, session: ClientSession,
                         batch: Bool) throws(ProtocolError) -> [Registration] {
        // The fd is the proof of access: the daemon never opens a client's path itself.
        let facts: FileFacts
        do { facts = try FileFacts.inspect(fd, mount: false) } catch {
            throw ProtocolError(.badRequest, "statx on the passed fd failed: \(error.symbolicName)", errnoName: error.symbolicName, errnoValue: error.rawValue)
        }
        guard facts.kind == .regular, !facts.isPseudoFile else {
            let what = facts.kind == .regular ? "a \(facts.filesystem) file" : "a \(facts.kind.rawValue)"
            throw ProtocolError(.notRegularFile, "the fd is \(what): only regular files with memory behind them can be registered")
        }
        let readWrite = try openForReadWrite(fd)
        let uid = session.credentials.uid
        var heldRegions = usage[uid]?.regions ?? 0
        var heldBytes = usage[uid]?.bytes ?? 0
        // Every range's own checks and the quotas first, so a batch with a bad range
        // registers nothing; then the registrations, undone when one fails.
        for (index, register) in ranges.enumerated() {
            do throws(ProtocolError) {
                try checkRange(register, readWrite: readWrite, facts: facts)
                if heldRegions >= configuration.maxRegionsPerUID {
                    throw ProtocolError(.quotaExceeded, "uid \(uid) holds \(heldRegions) regions, the limit (max-regions-per-uid); deregister some first")
                }
                if let limit = session.byteLimit, heldBytes + register.length > limit {
                    throw ProtocolError(.quotaExceeded, "uid \(uid) would hold \(heldBytes + register.length) bytes in regions; its limit is \(limit) (its RLIMIT_MEMLOCK, or max-bytes-per-uid)")
                }
            } catch {
                throw batch ? error.at(index) : error
            }
            heldRegions += 1
            heldBytes += register.length
        }
        var made: [Registration] = []
        for (index, register) in ranges.enumerated() {
            do throws(ProtocolError) {
                made.append(try registerRegion(register, fd: fd, facts: facts, readWrite: readWrite, session: session))
            } catch {
                for registration in made { forget(RegionID(registration.region), of: session) }
                throw batch ? error.at(index) : error
            }
        }
        return made
    }

    func registerRegion(_ register: Request.Register, fd: FileDescriptor, facts: FileFacts, readWrite: Bool,
                        session: ClientSession) throws(ProtocolError) -> Registration {
        let access = RegionAccess(wire: register.access)
        let preference: Strategy? = switch register.strategy {
        case .odp: .odp
        case .pinned: .pinned
        case .any: nil
        }
        let info = try engineCall { engine throws(EngineError) in
            try engine.register(owner: session.owner, fd: fd, offset: register.offset, length: register.length,
                                access: access, preference: preference, facts: facts, openForWrite: readWrite)
        }
        session.tags[info.id] = register.tag ?? ""
        session.lengths[info.id] = info.length
        usage[session.credentials.uid, default: Usage()].add(info.length)
        logger.info("registered", metadata: ["region": "\(info.id)", "file": "\(info.file)", "client": "\(session.owner)",
                                            "strategy": "\(info.strategy)", "bytes": "\(info.length)"])
        let keys = info.keys ?? MRKeys(lkey: 0, rkey: 0, address: 0)
        return Registration(region: info.id.rawValue, lkey: keys.lkey, rkey: keys.rkey, address: keys.address, length: info.length,
                            strategy: info.strategy == .odp ? .odp : .pinned, strategyReason: info.strategyReason,
                            device: info.device, backing: FileBacking(rawValue: info.backing.rawValue) ?? .pageCache)
    }

    /// Deregisters a region `session` just made and drops its bookkeeping (a batch's undo).
    func forget(_ region: RegionID, of session: ClientSession) {
        try? engine?.deregister(region, owner: session.owner)
        drop(region, of: session)
    }

    /// Drops a region from `session`'s bookkeeping and its uid's usage (deregistered, lost, or
    /// its connection gone).
    func drop(_ region: RegionID, of session: ClientSession) {
        session.tags[region] = nil
        guard let length = session.lengths.removeValue(forKey: region) else { return }
        let uid = session.credentials.uid
        usage[uid]?.remove(length)
        if usage[uid]?.regions == 0 { usage[uid] = nil }
    }

    /// Whether the passed fd is O_RDWR; an fd that cannot be mapped at all (O_WRONLY, O_PATH)
    /// is refused here (docs/protocol.md §4).
    func openForReadWrite(_ fd: FileDescriptor) throws(ProtocolError) -> Bool {
        let flags = fcntl(fd.rawValue, F_GETFL)
        guard flags >= 0 else {
            let error = Errno(rawValue: errno)
            throw ProtocolError(.badRequest, "fcntl(F_GETFL) on the passed fd failed: \(error.symbolicName)", errnoName: error.symbolicName, errnoValue: error.rawValue)
        }
        // An O_PATH fd reads as O_RDONLY in O_ACCMODE, but cannot be mapped at all.
        if flags & MRL_O_PATH != 0 || flags & O_ACCMODE == O_WRONLY {
            throw ProtocolError(.accessDenied, "the fd was opened \(flags & MRL_O_PATH != 0 ? "O_PATH" : "O_WRONLY"): the file must be mapped, which needs O_RDONLY or O_RDWR")
        }
        return flags & O_ACCMODE == O_RDWR
    }

    /// A range's own checks, made here so they answer the same with or without an RDMA
    /// device (the engine repeats them): the access against the fd's open mode, the offset's
    /// page alignment, the range inside the file.
    func checkRange(_ register: Request.Register, readWrite: Bool, facts: FileFacts) throws(ProtocolError) {
        let writable = register.access.contains(.write) || register.access.contains(.atomic)
        if writable && !readWrite {
            let asked = Access.allCases.filter(register.access.contains).map(\.rawValue).joined(separator: ",")
            throw ProtocolError(.accessDenied, "\(asked) access needs an fd opened O_RDWR; this fd is read-only")
        }
        let page = UInt64(SharedMapping.pageSize)
        guard register.offset % page == 0 else {
            throw ProtocolError(.badAlignment, "offset \(register.offset) is not a multiple of the page size (\(page))")
        }
        guard register.offset < facts.size, register.length <= facts.size - register.offset else {
            throw ProtocolError(.rangeOutOfFile, "range [\(register.offset), \(register.offset + register.length)) is not inside the file (size \(facts.size)); extend the file first")
        }
    }

    /// Runs an engine call, turning "no device" and engine errors into protocol errors.
    func engineCall<T>(_ body: (Engine) throws(EngineError) -> T) throws(ProtocolError) -> T {
        guard let engine else {
            throw ProtocolError(.strategyUnavailable, noDeviceReason ?? "no RDMA device", errnoName: "ENODEV", errnoValue: ENODEV)
        }
        do {
            return try body(engine)
        } catch {
            throw ProtocolError(ErrorCode(rawValue: error.code) ?? .internal, error.description,
                                errnoName: error.errno?.symbolicName, errnoValue: error.errno?.rawValue)
        }
    }

    func wireRegion(_ info: RegionInfo, tag: String?, pid: UInt32? = nil) -> RegionList.Region {
        return RegionList.Region(region: info.id.rawValue, file: "\(info.file)", offset: info.offset, length: info.length,
                                 access: info.access.wire, strategy: info.strategy == .odp ? .odp : .pinned,
                                 state: RegionStatus(rawValue: info.state.rawValue) ?? .registered,
                                 rkey: info.keys?.rkey, lkey: info.keys?.lkey, address: info.keys?.address,
                                 tag: tag.flatMap { $0.isEmpty ? nil : $0 }, pid: pid)
    }
}

/// What one uid holds in regions, over all its connections.
struct Usage {
    var regions = 0
    var bytes: UInt64 = 0

    mutating func add(_ length: UInt64) {
        regions += 1
        bytes += length
    }

    mutating func remove(_ length: UInt64) {
        regions -= 1
        bytes -= length
    }
}

extension Statistics.Latency {
    init(_ histogram: LatencyHistogram) {
        self.init(p50: histogram.quantileMicros(0.5) ?? 0, p99: histogram.quantileMicros(0.99) ?? 0,
                  max: histogram.maxMicros, count: histogram.count)
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

/// The engine's access set and the protocol's, word for word.
extension RegionAccess {
    init(wire: Set<Access>) {
        self = []
        if wire.contains(.read) { insert(.read) }
        if wire.contains(.write) { insert(.write) }
        if wire.contains(.atomic) { insert(.atomic) }
    }

    var wire: Set<Access> {
        Set(Access.allCases.filter { RegionAccess(wire: [$0]).isSubset(of: self) })
    }
}
