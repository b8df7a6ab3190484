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

    /// After most children went at once, a sweep keeps only the live ones' entries, and the
    /// next sweep waits for twice as many.
    func testASweepAfterAMassDepartureKeepsOnlyTheLive() {
        var children = WeakChildren<Child>()
        var alive = (0..<10_000).map { _ in Child() }
        for child in alive { children.insert(child) }
        alive.removeFirst(9_990)
        XCTAssertGreaterThan(children.storedCount, 9_000, "no insert came to sweep them")
        children.sweep()
        XCTAssertEqual(children.storedCount, 10)
        XCTAssertTrue(zip(children.live, alive).allSatisfy { $0 === $1 })
        for _ in 0..<9 { children.insert(Child()) }
        XCTAssertEqual(children.storedCount, 19, "the gone ones are swept at 20, twice the live")
    }
}
