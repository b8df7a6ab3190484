import XCTest

@testable import Verbs

/// The weak child sets a PD keeps of its MRs and QPs: inserting costs the same with 100 000
/// children as with none, and gone children do not pile up.
final class WeakChildrenTests: XCTestCase {
    final class Child {}

    func testGoneChildrenAreSweptAndTheSetStaysWithinTwiceTheLiveOnes() {
        var children = WeakChildren<Child>()
        var alive: [Child] = []
        for round in 0..<50 {
            for _ in 0..<2000 {
                let child = Child()
                alive.append(child)
                children.insert(child)
            }
            // Drop most of them: the set must not keep growing with the dead.
            alive.removeFirst(alive.count - 100 - round)
            XCTAssertLessThanOrEqual(children.storedCount, 2 * max(alive.count, 2000) + 16 + 2000)
        }
        XCTAssertEqual(children.live.count, alive.count)
        XCTAssertTrue(zip(children.live, alive).allSatisfy { $0 === $1 }, "oldest first, only the live ones")
    }
}
