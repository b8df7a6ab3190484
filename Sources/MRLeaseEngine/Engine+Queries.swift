import MRLeasePolicy
import Verbs

/// What the engine answers about its regions without changing anything (`list`, `stats`,
/// quotas), and the two calls through which grants reach a region's registration.
extension Engine {
    public func list(owner: OwnerID? = nil) -> [RegionInfo] {
        guard let owner else {
            return files.values.flatMap { file in file.regions.values.map { info($0, file) } }.sorted { $0.id < $1.id }
        }
        return regionIDs(owner: owner).compactMap { id in
            regions[id].flatMap { files[$0] }.flatMap { file in file.regions[id].map { info($0, file) } }
        }.sorted { $0.id < $1.id }
    }

    /// What a grant must register to reach the region now: nil unless the region is
    /// registered (not revoking, not revoked). Throws unknownRegion for a region that is gone
    /// or (with `owner`) is someone else's.
    public func exposureTarget(_ id: RegionID, owner: OwnerID? = nil) throws(EngineError) -> ExposureTarget? {
        guard let key = regions[id], let file = files[key], let region = file.regions[id],
              owner == nil || region.owner == owner else { throw .unknownRegion(id) }
        guard region.state == .registered, region.mr != nil, let address = region.address else { return nil }
        return ExposureTarget(region: id, owner: region.owner, address: address, length: Int(region.length),
                              flags: region.flags, strategy: region.strategy, generation: region.generation)
    }

    /// Records an exposure of the region's current registration (made from `exposureTarget`),
    /// to be withdrawn before its MR goes. Refused (unknownRegion) when the region is gone, and
    /// when the target's generation is no longer the region's: that registration is gone and
    /// the exposure is withdrawn here.
    public func expose(_ id: RegionID, generation: UInt64, _ exposure: any RegionExposure) throws(EngineError) {
        guard let key = regions[id], let region = files[key]?.regions[id], region.state == .registered,
              region.generation == generation, region.mr != nil else {
            do throws(VerbsError) { try exposure.withdraw() } catch {
                logger.error("withdrawing a stale exposure failed", metadata: ["region": "\(id)", "op": "\(error.op)", "errno": "\(error.errno.symbolicName)"])
            }
            throw .unknownRegion(id)
        }
        region.exposures.removeAll { $0.isWithdrawn }
        region.exposures.append(exposure)
    }

    /// One region, as `list` reports it; nil when it is gone or (with `owner`) someone else's.
    public func info(_ id: RegionID, owner: OwnerID? = nil) -> RegionInfo? {
        guard let key = regions[id], let file = files[key], let region = file.regions[id],
              owner == nil || region.owner == owner else { return nil }
        return info(region, file)
    }

    /// The ids of an owner's regions, ascending.
    public func regionIDs(owner: OwnerID) -> [RegionID] { regionsByOwner[owner]?.current { regions.contains($0) } ?? [] }

    /// How many regions an owner holds.
    public func regionCount(owner: OwnerID) -> Int { regionsByOwner[owner]?.count ?? 0 }

    /// What `uid` holds over all its owners.
    public func usage(uid: UInt32) -> Usage { usageByUID[uid]?.usage ?? Usage() }

    /// The region's owner, if the region exists.
    public func owner(of id: RegionID) -> OwnerID? {
        regions[id].flatMap { files[$0]?.regions[id]?.owner }
    }

    /// The counters, read from what the engine keeps as regions change: constant time,
    /// whatever the number of regions and files.
    public func statistics() -> EngineStatistics {
        var snapshot = stats
        snapshot.files = files.count
        snapshot.regions = regions.count
        snapshot.leasesHeld = leaseCount
        snapshot.bytesByStrategy = liveBytes
        return snapshot
    }
}
