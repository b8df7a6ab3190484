import MRLeaseProtocol
import XCTest

/// Every packet the daemon encodes fits in `maxMessageBytes`, the buffer a conforming client
/// reads into, whatever the request made it say.
final class ReplyBoundTests: XCTestCase {
    func assertFits(_ packet: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws -> ServerMessage {
        XCTAssertLessThanOrEqual(packet.count, Codec.maxMessageBytes, file: file, line: line)
        return try Codec.decodeServerMessage(packet)
    }

    func testAHelloListingThirtyTwoThousandVersionsGetsAnUnsupportedVersionReplyThatFits() throws {
        let hello = Request.Hello(versions: Array(repeating: 2, count: 32_000))
        let request = Codec.encode(.hello(hello), id: 1)
        XCTAssertLessThanOrEqual(request.count, Codec.maxMessageBytes, "the request itself is legal")
        XCTAssertThrowsError(try hello.negotiatedVersion()) { error in
            guard let error = error as? ProtocolError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.code, .unsupportedVersion)
            XCTAssertTrue(error.message.hasSuffix("… (32000 in all)], daemon speaks [1]"), error.message)
        }
    }

    func testAnErrorWhoseMessageIsTooLongIsCutToFitKeepingCodeIdAndErrno() throws {
        // Control characters are escaped six bytes each: the cut must count encoded bytes.
        for filler in ["x", "\u{1}", "é", "\"", "😀"] {
            let message = String(repeating: filler, count: 70_000)
            let reply = Reply(id: 7, type: .register, error: ProtocolError(.strategyUnavailable, message, errnoName: "EOPNOTSUPP", errnoValue: 95, index: 3))
            guard case .reply(let decoded) = try assertFits(Codec.encode(reply)), case .failure(let error) = decoded.outcome else {
                return XCTFail("not an error reply")
            }
            XCTAssertEqual(decoded.id, 7)
            XCTAssertEqual(decoded.type, .register)
            XCTAssertEqual(error.code, .strategyUnavailable)
            XCTAssertEqual(error.errnoName, "EOPNOTSUPP")
            XCTAssertEqual(error.index, 3)
            XCTAssertTrue(error.message.hasSuffix("…"))
            XCTAssertTrue(error.message.hasPrefix(filler + filler))
            XCTAssertGreaterThan(Codec.encode(reply).count, Codec.maxMessageBytes - 64, "cut no more than needed (\(filler))")
        }
    }

    func testAResultTooLargeForOneMessageBecomesAnInternalErrorThatFits() throws {
        let region = RegionList.Region(region: 1, file: String(repeating: "f", count: 1000), offset: 0, length: 4096,
                                       access: [.read], strategy: .pinned, state: .registered)
        let reply = Reply(id: 9, .list(RegionList(regions: Array(repeating: region, count: 100))))
        guard case .reply(let decoded) = try assertFits(Codec.encode(reply)), case .failure(let error) = decoded.outcome else {
            return XCTFail("not an error reply")
        }
        XCTAssertEqual(error.code, .internal)
        XCTAssertEqual(decoded.id, 9)
        XCTAssertTrue(error.message.contains("more than maxMessageBytes"), error.message)
    }

    func testALostEventWithALongMessageFits() throws {
        let event = Event.lost(.init(region: 4, reason: .restoreFailed, message: String(repeating: "\n", count: 60_000)))
        guard case .event(.lost(let lost)) = try assertFits(Codec.encode(event)) else { return XCTFail("not a lost event") }
        XCTAssertEqual(lost.region, 4)
        XCTAssertEqual(lost.reason, .restoreFailed)
    }

    func testRepliesThatFitAreUnchanged() throws {
        let error = ProtocolError(.badRequest, String(repeating: "x", count: 1000))
        let reply = Reply(id: 1, type: .stats, error: error)
        XCTAssertEqual(try Codec.decodeServerMessage(Codec.encode(reply)), .reply(reply))
    }
}

extension ReplyBoundTests {
    /// docs/protocol.md §2: a request unreadable before its id is answered without one, with
    /// its type when that was readable; a client must be able to read that reply.
    func testAnErrorReplyWithATypeButNoIdDecodes() throws {
        let reply = Codec.errorReply(to: Array(#"{"v":1,"type":"stats","id":-1}"#.utf8), ProtocolError(.badRequest, "id"))
        XCTAssertEqual(reply.type, .stats)
        XCTAssertNil(reply.id)
        XCTAssertEqual(try Codec.decodeServerMessage(Codec.encode(reply)), .reply(reply))
        XCTAssertThrowsError(try Codec.decodeServerMessage(Array(#"{"v":1,"type":"stats","result":{}}"#.utf8))) { error in
            XCTAssertEqual((error as? ProtocolError)?.message, #"missing field "id""#)
        }
    }
}
