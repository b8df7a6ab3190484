import MRLeasePolicy
import XCTest

@testable import MRLeaseEngine

/// `IDTable` against `Dictionary` as the model: the same answers after any mix of inserts,
/// replacements and removals, including the backward shifts of removals from probe runs.
final class IDTableTests: XCTestCase {
    func testMatchesDictionaryUnderRandomChurn() {
        var rng = SystemRandomNumberGenerator()
        var table = IDTable<UInt64>()
        var model: [UInt64: UInt64] = [:]
        for step in 0..<200_000 {
            // Consecutive ids as the engine hands them out, with a few far ones mixed in.
            let id = Bool.random(using: &rng) ? UInt64.random(in: 1...3_000, using: &rng) : UInt64.random(in: 1...UInt64.max, using: &rng)
            if Int.random(in: 0..<3, using: &rng) == 0 {
                table[RegionID(id)] = nil
                model[id] = nil
            } else {
                table[RegionID(id)] = UInt64(step)
                model[id] = UInt64(step)
            }
            if step % 997 == 0 {
                XCTAssertEqual(table.count, model.count)
                for (key, value) in model { XCTAssertEqual(table[RegionID(key)], value, "id \(key) at step \(step)") }
            }
        }
        XCTAssertEqual(Set(table.ids.map(\.rawValue)), Set(model.keys))
        for entry in table.entries { XCTAssertEqual(model[entry.id.rawValue], entry.value) }
    }

    func testShrinksWhenEmptied() {
        var table = IDTable<Void>()
        for id in 1...100_000 { table[RegionID(UInt64(id))] = () }
        XCTAssertEqual(table.count, 100_000)
        XCTAssertEqual(table.capacity, 1 << 17, "100 000 ids in 2^17 slots (7/8 full at most)")
        for id in 1...100_000 { table[RegionID(UInt64(id))] = nil }
        XCTAssertTrue(table.isEmpty)
        XCTAssertEqual(table.capacity, 8, "an emptied table gives its slots back")
        XCTAssertFalse(table.contains(RegionID(5)))
    }

    /// An owner's id list counts removals and compacts against what is still live, keeping
    /// the ids ascending.
    func testOwnerIndexCountsRemovalsAndCompactsAgainstTheLiveSet() {
        var live = Set<UInt64>()
        let index = OwnerIndex(OwnerID(1), first: RegionID(1))
        live.insert(1)
        for id in 2...200 as ClosedRange<UInt64> {
            index.add(RegionID(id))
            live.insert(id)
        }
        for id in stride(from: 200 as UInt64, through: 1, by: -3) {
            live.remove(id)
            index.removed { live.contains($0.rawValue) }
        }
        XCTAssertEqual(index.count, live.count)
        XCTAssertEqual(index.current { live.contains($0.rawValue) }.map(\.rawValue), live.sorted())
        for id in live.sorted() {
            live.remove(id)
            index.removed { live.contains($0.rawValue) }
        }
        XCTAssertEqual(index.count, 0)
        XCTAssertEqual(index.current { live.contains($0.rawValue) }, [])
    }
}
