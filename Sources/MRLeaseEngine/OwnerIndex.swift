import MRLeasePolicy

/// One owner's regions (`Engine.regionsByOwner`): their ids in the order they were made
/// (ascending), appended with no hashing. A region that goes is only counted off; the list is
/// compacted when half of it is gone. An id is never handed out twice, so an id of the list
/// that `Engine.regions` still holds is still this owner's region. A class: a registration
/// finds it and adds to it in place, with no modify access of the dictionary holding it.
final class OwnerIndex {
    let owner: OwnerID
    private var ids: [RegionID]
    /// How many of `ids` are still regions.
    private(set) var count: Int

    init(_ owner: OwnerID, first: RegionID) {
        self.owner = owner
        ids = [first]
        count = 1
    }

    func add(_ id: RegionID) {
        ids.append(id)
        count += 1
    }

    /// One of the owner's regions went (it is no longer `live`).
    func removed(live: (RegionID) -> Bool) {
        count -= 1
        guard ids.count > 64, count * 2 < ids.count else { return }
        ids.removeAll { !live($0) }
    }

    /// The owner's regions now, ascending.
    func current(live: (RegionID) -> Bool) -> [RegionID] { ids.filter(live) }
}

/// What one uid holds (`Engine.usageByUID`); a class for the same reason.
final class UsageRecord {
    let uid: UInt32
    var usage = Usage()

    init(_ uid: UInt32, bytes: UInt64) {
        self.uid = uid
        usage.add(bytes)
    }
}
