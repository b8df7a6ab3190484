import MRLeasePolicy

/// Region ids to values, for the engine's region → file index that every registration and
/// deregistration touches: open addressing with linear probing over one array, a multiplicative hash of the id (ids are
/// consecutive, so this spreads them with no collisions to speak of), and backward-shift
/// deletion (no tombstones). Swift's `Dictionary` hashes every key with SipHash, which was the
/// largest single cost of a registration after the kernel's (docs/benchmarks.md, issue 19).
///
/// Grows at 7/8 full: consecutive ids hashed so land in distinct slots until the table is
/// nearly full, so probe runs stay short, and 100 000 regions take 2^17 slots where
/// `Dictionary` (3/4) took 2^18, within the daemon's 1 KiB per region. Shrinks below 1/8, so
/// 100 000 ids released leave no large table behind. Order of iteration is the slots', not
/// the ids'.
struct IDTable<Value> {
    private var slots: [(id: UInt64, value: Value)?]
    private(set) var count = 0

    init(minimumCapacity: Int = 0) {
        var size = 8
        while size * 7 / 8 < minimumCapacity { size *= 2 }
        slots = Array(repeating: nil, count: size)
    }

    var isEmpty: Bool { count == 0 }

    /// Slots allocated: what the table costs, whatever it holds.
    var capacity: Int { slots.count }

    /// Fibonacci hashing: the id times 2^64/φ, its top bits the slot.
    private func home(_ id: UInt64) -> Int {
        Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> UInt64(64 - slots.count.trailingZeroBitCount))
    }

    private func find(_ id: UInt64) -> Int? {
        let mask = slots.count - 1
        var at = home(id)
        while let entry = slots[at] {
            if entry.id == id { return at }
            at = (at + 1) & mask
        }
        return nil
    }

    subscript(id: RegionID) -> Value? {
        get { find(id.rawValue).flatMap { slots[$0]?.value } }
        set {
            if let newValue { insert(id.rawValue, newValue) } else { remove(id.rawValue) }
        }
    }

    func contains(_ id: RegionID) -> Bool { find(id.rawValue) != nil }

    private mutating func insert(_ id: UInt64, _ value: Value) {
        if let at = find(id) {
            slots[at] = (id, value)
            return
        }
        if (count + 1) * 8 > slots.count * 7 { resize(to: slots.count * 2) }
        let mask = slots.count - 1
        var at = home(id)
        while slots[at] != nil { at = (at + 1) & mask }
        slots[at] = (id, value)
        count += 1
    }

    private mutating func remove(_ id: UInt64) {
        guard var hole = find(id) else { return }
        slots[hole] = nil
        count -= 1
        // Backward shift: an entry after the hole that probed past it moves into it, so every
        // entry stays reachable from its home without tombstones.
        let mask = slots.count - 1
        var next = (hole + 1) & mask
        while let entry = slots[next] {
            let from = home(entry.id)
            // Whether `from` lies cyclically in (hole, next]: then the entry stays.
            let stays = hole <= next ? (hole < from && from <= next) : (hole < from || from <= next)
            if !stays {
                slots[hole] = entry
                slots[next] = nil
                hole = next
            }
            next = (next + 1) & mask
        }
        if slots.count > 8 && count * 8 < slots.count { resize(to: slots.count / 2) }
    }

    private mutating func resize(to size: Int) {
        let old = slots
        slots = Array(repeating: nil, count: size)
        count = 0
        for case let entry? in old { insert(entry.id, entry.value) }
    }

    mutating func removeAll() { self = IDTable() }

    /// The ids held, in no order.
    var ids: [RegionID] { slots.compactMap { $0.map { RegionID($0.id) } } }

    /// The entries held, in no order.
    var entries: [(id: RegionID, value: Value)] { slots.compactMap { $0.map { (RegionID($0.id), $0.value) } } }
}
