import MRLeaseProtocol
import XCTest

/// `revoking-file` (docs/protocol.md §5): ids cut into runs and events that fit a message, and
/// every malformed event or `ack` of a file refused with the field named.
final class RevokingFileTests: XCTestCase {
    func event(_ members: String) -> [UInt8] {
        Array(#"{"v":1,"type":"event","event":"revoking-file",\#(members)}"#.utf8)
    }

    func testIdsBecomeRunsAndTheRunsEventsOfAtMostTheLimitEachFittingAMessage() throws {
        let one = RevokingFile.events(file: "1:2:3", regions: [4, 5, 6, 9, 11, 12], reason: .leaseBreak, deadlineMillis: 100)
        XCTAssertEqual(one.map(\.runs), [[4...6, 9...9, 11...12]])
        XCTAssertEqual(one.map(\.more), [false])
        XCTAssertEqual(one[0].count, 6)
        XCTAssertEqual(one[0].regions, [4, 5, 6, 9, 11, 12])
        // No two ids adjacent, and the largest ids: the longest events there can be.
        let ids = (0..<UInt64(RevokingFile.maxRuns * 2 + 1)).map { UInt64.max - 2 * $0 }.reversed()
        let events = RevokingFile.events(file: "4294967295:4294967295:18446744073709551615", regions: Array(ids),
                                         reason: .layoutChanged, deadlineMillis: .max, deadlineUnixMillis: .max)
        XCTAssertEqual(events.map(\.runs.count), [RevokingFile.maxRuns, RevokingFile.maxRuns, 1])
        XCTAssertEqual(events.map(\.more), [true, true, false])
        XCTAssertEqual(events.flatMap(\.regions), Array(ids))
        for part in events {
            let packet = Codec.encode(.revokingFile(part))
            XCTAssertLessThanOrEqual(packet.count, Codec.maxMessageBytes)
            XCTAssertEqual(try Codec.decodeServerMessage(packet), .event(.revokingFile(part)))
        }
        // Ids up to the last one run into it without overflowing.
        XCTAssertEqual(RevokingFile.events(file: "1:2:3", regions: [.max - 1, .max], reason: .explicit, deadlineMillis: 0)[0].runs,
                       [(.max - 1)...(.max)])
    }

    func testMalformedRunsAndCountsAreRefusedNamingTheField() {
        let tail = #""reason":"lease-break","deadlineMillis":100"#
        let cases: [(String, String)] = [
            (#""file":"1:2:3","regions":[[5,4]],"count":2,\#(tail)"#, "regions[0]"),
            (#""file":"1:2:3","regions":[[1,4],[4,6]],"count":7,\#(tail)"#, "regions"),
            (#""file":"1:2:3","regions":[[5,6],[1,2]],"count":4,\#(tail)"#, "regions"),
            (#""file":"1:2:3","regions":[],"count":0,\#(tail)"#, "regions"),
            (#""file":"1:2:3","regions":[[1,2,3]],"count":2,\#(tail)"#, "regions[0]"),
            (#""file":"1:2:3","regions":[[1,-2]],"count":2,\#(tail)"#, "regions[0][1]"),
            (#""file":"1:2:3","regions":[[1,2]],"count":3,\#(tail)"#, "count"),
            (#""file":"1:2:3","regions":[[0,18446744073709551615]],"count":0,\#(tail)"#, "regions"),
            (#""file":"1:2","regions":[[1,2]],"count":2,\#(tail)"#, "file"),
            (#""file":"a:2:3","regions":[[1,2]],"count":2,\#(tail)"#, "file"),
            (#""regions":[[1,2]],"count":2,\#(tail)"#, "file"),
        ]
        for (members, field) in cases {
            XCTAssertThrowsError(try Codec.decodeServerMessage(event(members)), members) { error in
                XCTAssertTrue("\(error)".contains(field), "\(members): \(error)")
            }
        }
    }

    func testAnAckNamesOneOfRegionRegionsOrAWellFormedFile() throws {
        XCTAssertEqual(try Codec.decodeRequest(Array(#"{"v":1,"type":"ack","id":1,"file":"259:1:1234"}"#.utf8)).1, .ackFile("259:1:1234"))
        for bad in [#""file":"259:1""#, #""file":"259:1:1234:5""#, #""file":" 1:2:3""#, #""file":"1:2:99999999999999999999""#,
                    #""file":"1:2:3","region":4"#, #""file":"1:2:3","regions":[4]"#, #""file":7"#] {
            let packet = Array(#"{"v":1,"type":"ack","id":1,\#(bad)}"#.utf8)
            XCTAssertThrowsError(try Codec.decodeRequest(packet), bad) { error in
                XCTAssertEqual((error as? ProtocolError)?.code, .badRequest, "\(bad): \(error)")
            }
        }
    }
}
