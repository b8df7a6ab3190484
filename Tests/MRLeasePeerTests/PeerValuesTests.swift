import XCTest

@testable import MRLeasePeer

/// Patterns and options: the values the CLI and tests build on.
final class PeerValuesTests: XCTestCase {
    func testPatternsParseAsAByteOrASeed() {
        XCTAssertEqual(PeerPattern("0xAB"), .byte(0xAB))
        XCTAssertEqual(PeerPattern("171"), .byte(171))
        XCTAssertEqual(PeerPattern("seed:7"), .seeded(7))
        XCTAssertEqual(PeerPattern("seed:0x1f"), .seeded(31))
        for bad in ["256", "0xGG", "seed:", "seed:x", "", "-1"] { XCTAssertNil(PeerPattern(bad), bad) }
        XCTAssertEqual(PeerPattern(PeerPattern.seeded(9).description), .seeded(9))
        XCTAssertEqual(PeerPattern(PeerPattern.byte(0x5a).description), .byte(0x5a))
    }

    func testASeededPatternDependsOnTheOffsetSoAnySubRangeChecksAlone() {
        let pattern = PeerPattern.seeded(42)
        let whole = pattern.bytes(at: 0, count: 4096)
        XCTAssertEqual(Array(whole[1000..<1100]), pattern.bytes(at: 1000, count: 100))
        XCTAssertGreaterThan(Set(whole).count, 200, "not a constant fill")
        XCTAssertNotEqual(whole, PeerPattern.seeded(43).bytes(at: 0, count: 4096), "another seed, other bytes")
    }

    func testOptionsRefuseStagingAndRequestSizesThatAreNotPageMultiples() {
        var options = PeerOptions()
        XCTAssertNoThrow(try options.validate())
        options.stagingBytes = 5000
        XCTAssertThrowsError(try options.validate()) { XCTAssertTrue("\($0)".contains("multiple of 4096"), "\($0)") }
        options = PeerOptions()
        options.workRequestBytes = options.stagingBytes * 2
        XCTAssertThrowsError(try options.validate()) { XCTAssertTrue("\($0)".contains("at most the staging buffer"), "\($0)") }
        options = PeerOptions()
        options.queueDepth = 0
        XCTAssertThrowsError(try options.validate())
    }
}
