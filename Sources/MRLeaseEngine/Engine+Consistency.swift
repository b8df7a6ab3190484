import MRLeasePolicy

extension Engine {
    /// The engine's indexes checked against each other and against the files' own records:
    /// [] when they agree. For tests (and a debugger): each index is kept by hand as regions
    /// come and go, and a test that drives revocations and disconnects through one another
    /// asks this after each step.
    public func indexProblems() -> [String] {
        var problems: [String] = []
        var owners: [OwnerID: Set<RegionID>] = [:]
        var usage: [UInt32: Usage] = [:]
        var live = BytesByStrategy()
        var leases = 0
        var count = 0
        for (key, file) in files {
            if file.key != key { problems.append("file \(file.key) filed under \(key)") }
            if filesByFD[file.fd.rawValue] != key { problems.append("filesByFD misses \(key)") }
            if let wd = file.watch, filesByWatch[wd] != key { problems.append("filesByWatch misses \(key)") }
            if file.isIdle { problems.append("file \(key) tracked with no regions and no pin under way") }
            let guarded = Set(file.regions.values.filter(\.isGuarded).map(\.id))
            if file.lifecycle.regions != guarded {
                problems.append("file \(key): lifecycle has \(file.lifecycle.regions.sorted()), the file's guarded regions are \(guarded.sorted())")
            }
            // Which acks are outstanding is the regions' flag; how many, the lifecycle's count.
            let flagged = file.regions.values.filter(\.awaitingAck).count
            if case .revoking(_, let awaiting) = file.lifecycle.phase {
                if awaiting != flagged { problems.append("file \(key): the lifecycle awaits \(awaiting) acks, \(flagged) regions are flagged") }
            } else if flagged != 0 {
                problems.append("file \(key): \(flagged) regions flagged awaiting an ack outside a revocation")
            }
            if file.leaseHeld { leases += 1 }
            // A lease with no guarded region makes other openers wait for nothing.
            if file.leaseHeld, guarded.isEmpty, file.pinWindows.isEmpty, file.lifecycle.phase == .leased {
                problems.append("file \(key) holds a lease for following regions only")
            }
            if file.lifecycle.phase == .lost { problems.append("file \(key) is tracked with its lifecycle ended") }
            var users: [WindowSpan: Int] = [:]
            for window in file.pinWindows {
                users[window.span, default: 0] += 1
                if file.windows[window.span] !== window { problems.append("file \(key): a pin's window is not its file's") }
            }
            for region in file.regions.values {
                let id = region.id
                count += 1
                if region.mr != nil { live[region.strategy] += region.length }
                if let window = region.window {
                    users[window.span, default: 0] += 1
                    if file.windows[window.span] !== window { problems.append("region \(id)'s window is not its file's") }
                    if window.span.start > region.offset || region.offset + region.length > window.span.end {
                        problems.append("region \(id) lies outside its window")
                    }
                } else {
                    problems.append("region \(id) has no window")
                }
                if regions[id] != key { problems.append("regions[\(id)] is \(String(describing: regions[id])), not \(key)") }
                owners[region.owner, default: []].insert(id)
                usage[region.uid, default: Usage()].add(region.length)
            }
            for (span, window) in file.windows where users[span] != window.users {
                problems.append("file \(key): window \(span.start) counts \(window.users) users, \(users[span] ?? 0) regions and pins use it")
            }
        }
        if live != liveBytes { problems.append("liveBytes \(liveBytes) != \(live)") }
        if leases != leaseCount { problems.append("leaseCount \(leaseCount) != \(leases) leases held") }
        if regions.count != count { problems.append("regions index has \(regions.count) entries for \(count) regions") }
        let indexed = regionsByOwner.mapValues { Set($0.current { regions.contains($0) }) }
        if owners != indexed { problems.append("regionsByOwner \(indexed) != \(owners)") }
        for (owner, index) in regionsByOwner where index.count != indexed[owner]?.count {
            problems.append("owner \(owner) counts \(index.count) regions, its index lists \(indexed[owner]?.count ?? 0)")
        }
        let used = usageByUID.mapValues(\.usage)
        if usage != used { problems.append("usageByUID \(used) != \(usage)") }
        for (fd, key) in filesByFD where files[key]?.fd.rawValue != fd { problems.append("filesByFD[\(fd)] stale") }
        for (wd, key) in filesByWatch where files[key]?.watch != wd { problems.append("filesByWatch[\(wd)] stale") }
        if busy { problems.append("an engine call is on the stack") }
        return problems
    }
}
