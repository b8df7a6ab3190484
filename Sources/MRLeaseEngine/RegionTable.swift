import MRLeasePolicy

/// A file's regions in ascending id order. Ids are handed out in increasing order, so a new
/// region is appended; one is found by binary search; a revocation walks them in order with no
/// hashing and no sort (docs/benchmarks.md, issue 19: the break of 10 000 regions).
struct RegionTable {
    private(set) var values: [Region] = []

    var isEmpty: Bool { values.isEmpty }
    var count: Int { values.count }
    var keys: [RegionID] { values.map(\.id) }

    /// The index of `id`, or where it would go.
    private func slot(of id: RegionID) -> Int {
        var low = 0, high = values.count
        while low < high {
            let mid = (low + high) / 2
            if values[mid].id < id { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The region with `id`; setting nil removes it, setting one inserts it in order (appends
    /// when its id is the highest, as a new registration's always is).
    subscript(id: RegionID) -> Region? {
        get {
            let at = slot(of: id)
            return at < values.count && values[at].id == id ? values[at] : nil
        }
        set {
            if let newValue {
                precondition(newValue.id == id, "region \(newValue.id) stored under \(id)")
                if let last = values.last, last.id >= id {
                    let at = slot(of: id)
                    if at < values.count && values[at].id == id { values[at] = newValue } else { values.insert(newValue, at: at) }
                } else {
                    values.append(newValue)
                }
            } else {
                let at = slot(of: id)
                if at < values.count && values[at].id == id { values.remove(at: at) }
            }
        }
    }

    mutating func removeAll() { values = [] }
}
