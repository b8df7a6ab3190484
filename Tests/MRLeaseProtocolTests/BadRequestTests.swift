import MRLeaseProtocol
import XCTest

final class BadRequestTests: XCTestCase {
    /// Asserts that decoding `text` as a request fails with `code` and exactly `message`.
    func assertRejected(_ text: String, _ message: String, code: ErrorCode = .badRequest,
                        file: StaticString = #filePath, line: UInt = #line) {
        assertRejected(Array(text.utf8), message, code: code, file: file, line: line)
    }

    func assertRejected(_ bytes: [UInt8], _ message: String, code: ErrorCode = .badRequest,
                        file: StaticString = #filePath, line: UInt = #line) {
        do {
            let decoded = try Codec.decodeRequest(bytes)
            XCTFail("decoded \(decoded)", file: file, line: line)
        } catch {
            XCTAssertEqual(error, ProtocolError(code, message), file: file, line: line)
        }
    }

    let register = #""v":1,"type":"register","id":1"#

    func testBytesThatAreNotOneJSONObjectAreRejectedWithWhereParsingStopped() {
        assertRejected("", "message is not valid JSON: unexpected end of data at byte 0")
        assertRejected("nope", "message is not valid JSON: invalid literal at byte 1")
        assertRejected("{\"v\":1,}", "message is not valid JSON: expected a field name at byte 7")
        assertRejected("{\"v\":1} x", "message is not valid JSON: unexpected data after the JSON value at byte 8")
        assertRejected("{\"v\":01}", "message is not valid JSON: expected ',' or '}' at byte 6")
        assertRejected("{\"v\":1,\"v\":1}", "message is not valid JSON: duplicate field \"v\" at byte 7")
        assertRejected("{\"a\":\"\u{1}\"}", "message is not valid JSON: control character in string at byte 6")
        assertRejected(#"{"a":"\ud800"}"#, "message is not valid JSON: unpaired surrogate at byte 12")
        assertRejected(#"{"a":"\x"}"#, "message is not valid JSON: invalid escape at byte 8")
        assertRejected([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D], "message is not valid JSON: string is not valid UTF-8 at byte 4")
        assertRejected("{\"a\":" + String(repeating: "[", count: 40), "message is not valid JSON: nesting deeper than 32 at byte 36")
        assertRejected("[1]", "a message must be a JSON object")
        assertRejected("\"hello\"", "a message must be a JSON object")
    }

    func testEnvelopeFieldsAreRequiredAndTyped() {
        assertRejected("{}", #"missing field "v""#)
        assertRejected(#"{"v":"1"}"#, #"field "v" must be an integer from 0 to 18446744073709551615, got a string"#)
        assertRejected(#"{"v":2,"type":"hello","id":1}"#,
                       "protocol version 2 is not supported; this side speaks 1", code: .unsupportedVersion)
        assertRejected(#"{"v":1}"#, #"missing field "type""#)
        assertRejected(#"{"v":1,"type":7}"#, #"field "type" must be a string, got 7"#)
        assertRejected(#"{"v":1,"type":"hello"}"#, #"missing field "id""#)
        assertRejected(#"{"v":1,"type":"dance","id":1}"#,
                       #"unknown request type "dance"; expected one of hello, register, register-batch, deregister, list, stats, ack, verify, grant, revoke-grant"#)
        assertRejected(#"{"v":1,"type":"event","id":1}"#,
                       #"unknown request type "event"; expected one of hello, register, register-batch, deregister, list, stats, ack, verify, grant, revoke-grant"#)
    }

    func testIntegersOutsideUInt64OrWithFractionOrExponentAreRejected() {
        let rule = #"field "id" must be an integer from 0 to 18446744073709551615, got "#
        assertRejected(#"{"v":1,"type":"stats","id":-1}"#, rule + "-1")
        assertRejected(#"{"v":1,"type":"stats","id":18446744073709551616}"#, rule + "18446744073709551616")
        assertRejected(#"{"v":1,"type":"stats","id":1.0}"#, rule + "1.0")
        assertRejected(#"{"v":1,"type":"stats","id":1e3}"#, rule + "1e3")
        assertRejected(#"{"v":1,"type":"stats","id":null}"#, rule + "null")
        assertRejected(#"{"v":1,"type":"stats","id":true}"#, rule + "true")
        XCTAssertEqual(try Codec.decodeRequest(Array(#"{"v":1,"type":"stats","id":18446744073709551615}"#.utf8)).id, .max)
        // No sign at all, not even on zero (Swift's UInt64("-0") would read 0).
        assertRejected(#"{"v":1,"type":"stats","id":-0}"#, rule + "-0")
        assertRejected(#"{"v":-0,"type":"stats","id":1}"#, #"field "v" must be an integer from 0 to 18446744073709551615, got -0"#)
        assertRejected("{\(register),\"offset\":-0,\"length\":4096,\"access\":[\"read\"]}",
                       #"field "offset" must be an integer from 0 to 18446744073709551615, got -0"#)
    }

    func testRegisterFieldsAreCheckedOneByOne() {
        assertRejected("{\(register)}", #"missing field "offset""#)
        assertRejected("{\(register),\"offset\":0}", #"missing field "length""#)
        assertRejected("{\(register),\"offset\":0,\"length\":0,\"access\":[\"read\"]}", #"field "length" must be greater than 0"#)
        assertRejected("{\(register),\"offset\":0,\"length\":1}", #"missing field "access""#)
        assertRejected("{\(register),\"offset\":0,\"length\":1,\"access\":\"read\"}", #"field "access" must be an array, got a string"#)
        assertRejected("{\(register),\"offset\":0,\"length\":1,\"access\":[]}",
                       #"field "access" must list at least one of read, write, atomic"#)
        assertRejected("{\(register),\"offset\":0,\"length\":1,\"access\":[\"read\",\"exec\"]}",
                       #"field "access[1]" has unknown value "exec"; expected one of read, write, atomic"#)
        assertRejected("{\(register),\"offset\":0,\"length\":1,\"access\":[\"read\",\"read\"]}",
                       #"field "access" lists "read" twice"#)
        assertRejected("{\(register),\"offset\":0,\"length\":1,\"access\":[\"read\"],\"strategy\":\"fast\"}",
                       #"field "strategy" has unknown value "fast"; expected one of odp, pinned, any"#)
        assertRejected("{\(register),\"offset\":0,\"length\":1,\"access\":[\"read\"],\"tag\":\"\(String(repeating: "x", count: 257))\"}",
                       #"field "tag" is longer than 256 bytes"#)
    }

    /// The parser finds a repeated key with a scan up to 16 fields and with a set beyond: both
    /// ways refuse it at the repeat.
    func testARepeatedKeyIsFoundAmongFewAndManyFields() {
        for count in [3, 15, 16, 17, 40] {
            let fields = (0..<count).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
            let text = "{\(fields),\"k\(count / 2)\":0}"
            assertRejected(text, "message is not valid JSON: duplicate field \"k\(count / 2)\" at byte \(fields.utf8.count + 2)")
        }
    }

    func testRegisterBatchTakesOneToSixtyFourRangesEachCheckedLikeRegister() throws {
        let batch = #""v":1,"type":"register-batch","id":1"#
        let range = #"{"offset":0,"length":4096,"access":["read"]}"#
        assertRejected("{\(batch)}", #"missing field "ranges""#)
        assertRejected("{\(batch),\"ranges\":[]}", #"field "ranges" must hold 1 to 64 ranges, not 0; send several requests"#)
        let many = Array(repeating: range, count: 65).joined(separator: ",")
        assertRejected("{\(batch),\"ranges\":[\(many)]}", #"field "ranges" must hold 1 to 64 ranges, not 65; send several requests"#)
        assertRejected("{\(batch),\"ranges\":[\(range),{\"offset\":0,\"length\":4096}]}", #"missing field "ranges[1].access""#)
        assertRejected("{\(batch),\"ranges\":[\(range),7]}", #"field "ranges[1]" must be an object, got 7"#)
        let most = Array(repeating: range, count: 64).joined(separator: ",")
        guard case .registerBatch(let ranges) = try Codec.decodeRequest(Array("{\(batch),\"ranges\":[\(most)]}".utf8)).request else {
            return XCTFail("64 ranges did not decode as register-batch")
        }
        XCTAssertEqual(ranges.count, 64)
    }

    func testAckTakesOneRegionOrOneToTwoThousandFortyEightRegions() throws {
        let ack = #""v":1,"type":"ack","id":1"#
        assertRejected("{\(ack),\"regions\":[]}", #"field "regions" must hold 1 to 2048 regions, not 0; send several requests"#)
        let many = (0...2048).map(String.init).joined(separator: ",")
        assertRejected("{\(ack),\"regions\":[\(many)]}", #"field "regions" must hold 1 to 2048 regions, not 2049; send several requests"#)
        assertRejected("{\(ack),\"region\":1,\"regions\":[2]}", #"field "region" must not come with "regions": name one region, or a list of them"#)
        assertRejected("{\(ack),\"regions\":[1,\"2\"]}", #"field "regions[1]" must be an integer from 0 to 18446744073709551615, got a string"#)
        let most = (1...2048).map(String.init).joined(separator: ",")
        guard case .ackRegions(let regions) = try Codec.decodeRequest(Array("{\(ack),\"regions\":[\(most)]}".utf8)).request else {
            return XCTFail("2048 regions did not decode as an ack of regions")
        }
        XCTAssertEqual(regions, Array(1...2048))
        XCTAssertLessThan(Codec.encode(.ackRegions(Array(repeating: .max, count: Codec.maxAckRegions)), id: .max).count, Codec.maxMessageBytes,
                          "the widest ack of regions fits in one message")
    }

    func testOtherRequestsNeedTheirFields() {
        assertRejected(#"{"v":1,"type":"hello","id":1}"#, #"missing field "versions""#)
        assertRejected(#"{"v":1,"type":"hello","id":1,"versions":[]}"#, #"field "versions" must list at least one version"#)
        assertRejected(#"{"v":1,"type":"hello","id":1,"versions":[1,"2"]}"#,
                       #"field "versions[1]" must be an integer from 0 to 18446744073709551615, got a string"#)
        for type in ["deregister", "ack", "verify"] {
            assertRejected("{\"v\":1,\"type\":\"\(type)\",\"id\":1}", #"missing field "region""#)
        }
        assertRejected(#"{"v":1,"type":"list","id":1,"after":-5}"#,
                       #"field "after" must be an integer from 0 to 18446744073709551615, got -5"#)
    }

    func testAPacketOverTheLimitIsMessageTooLarge() {
        let padding = String(repeating: " ", count: Codec.maxMessageBytes)
        assertRejected(#"{"v":1,"type":"stats","id":1}"# + padding, "messages are at most 65536 bytes", code: .messageTooLarge)
    }

    func testServerMessagesWithNeitherOrBothResultAndErrorAreRejected() {
        for text in [#"{"v":1,"type":"ack","id":1}"#, #"{"v":1,"type":"ack","id":1,"result":{},"error":{}}"#] {
            XCTAssertThrowsError(try Codec.decodeServerMessage(Array(text.utf8))) { error in
                XCTAssertEqual(error as? ProtocolError,
                               ProtocolError(.badRequest, #"a reply has exactly one of "result" and "error""#))
            }
        }
        let future = #"{"v":1,"type":"ack","id":1,"error":{"code":"cosmic-ray","message":"bit flip"}}"#
        XCTAssertEqual(try Codec.decodeServerMessage(Array(future.utf8)),
                       .reply(Reply(id: 1, type: .ack, error: ProtocolError(.internal, "cosmic-ray: bit flip"))),
                       "an unknown code from a newer daemon reads as internal, keeping the code")
    }

    /// The range's end past 2^64 - 1 is not malformed: the daemon's plan answers it
    /// `range-out-of-file`, as for any range beyond the file (docs/protocol.md, `register`).
    func testARangeWhoseEndPassesTwoToTheSixtyFourDecodesForThePlanToRefuse() throws {
        let text = "{\(register),\"offset\":18446744073709547520,\"length\":8192,\"access\":[\"read\"]}"
        let (_, request) = try Codec.decodeRequest(Array(text.utf8))
        XCTAssertEqual(request, .register(.init(offset: 18_446_744_073_709_547_520, length: 8192, access: [.read])))
    }
}
