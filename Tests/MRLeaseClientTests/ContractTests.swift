import Foundation
import LinuxFile
import MRLeaseClient
import SystemPackage
import TestSupport
import XCTest

/// The real daemon's answers keep docs/protocol.md's promises for inputs built to break them:
/// every reply fits in `maxMessageBytes`, signs are refused, and a range whose end passes
/// 2^64 is `range-out-of-file`.
final class ContractTests: XCTestCase {
    var daemon: RunningDaemon!
    var raw: UnixSocket!
    var scratch: ScratchDirectory!

    override func setUpWithError() throws {
        daemon = try RunningDaemon()
        raw = try UnixSocket.connect(path: daemon.socketPath)
        scratch = try ScratchDirectory()
    }

    override func tearDown() {
        try? raw?.close()
        daemon = nil
    }

    /// The one reply to `bytes`, read into a buffer one byte larger than the limit so that an
    /// oversized reply shows as one instead of being cut by the kernel.
    func reply(to bytes: [UInt8], fds: [FileDescriptor] = [], file: StaticString = #filePath, line: UInt = #line) throws -> Reply {
        try raw.send(bytes, fds: fds)
        guard case .message(let message) = try raw.receive(maxSize: Codec.maxMessageBytes + 1) else {
            throw TestFailure("no reply")
        }
        XCTAssertLessThanOrEqual(message.bytes.count, Codec.maxMessageBytes, "reply to \(bytes.prefix(60))…", file: file, line: line)
        XCTAssertFalse(message.truncated, file: file, line: line)
        guard case .reply(let reply) = try Codec.decodeServerMessage(message.bytes) else { throw TestFailure("an event came instead") }
        return reply
    }

    func code(of reply: Reply) -> ErrorCode? {
        if case .failure(let error) = reply.outcome { return error.code }
        return nil
    }

    func json(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// `text` with each `PAD` placeholder grown alike so the packet is (about) `size` bytes.
    func padded(_ text: String, _ filler: String, to size: Int = Codec.maxMessageBytes) -> [UInt8] {
        let pads = text.components(separatedBy: "PAD").count - 1
        let fixed = text.utf8.count - pads * "PAD".utf8.count
        let count = (size - fixed) / pads / filler.utf8.count
        return json(text.replacingOccurrences(of: "PAD", with: String(repeating: filler, count: count)))
    }

    func testEveryReplyToPathologicalRequestsFitsInOneMessage() throws {
        let versions = { (v: String, n: Int) in #"{"v":1,"type":"hello","id":1,"versions":["# + Array(repeating: v, count: n).joined(separator: ",") + "]}" }
        let inputs: [(name: String, bytes: [UInt8], code: ErrorCode)] = [
            ("32 000 versions", json(versions("2", 32_000)), .unsupportedVersion),
            ("3 000 largest versions", json(versions("18446744073709551615", 3_000)), .unsupportedVersion),
            ("a long unknown type", padded(#"{"v":1,"type":"PAD","id":1}"#, "t"), .badRequest),
            ("a long strategy", padded(#"{"v":1,"type":"register","id":1,"offset":0,"length":1,"access":["read"],"strategy":"PAD"}"#, "s"), .badRequest),
            ("a long clientName", padded(#"{"v":1,"type":"hello","id":1,"versions":[1],"clientName":"PAD"}"#, "\\u0001"), .badRequest),
            ("a long number", padded(#"{"v":1,"type":"stats","id":PAD}"#, "9"), .badRequest),
            ("a long access value", padded(#"{"v":1,"type":"register","id":1,"offset":0,"length":1,"access":["PAD"]}"#, "é"), .badRequest),
            ("a long duplicate field", padded(#"{"v":1,"type":"stats","id":1,"PAD":1,"PAD":1}"#, "k"), .badRequest),
            ("one byte too many", padded(#"{"v":1,"type":"stats","id":1,"x":"PAD"}"#, "x", to: Codec.maxMessageBytes + 1), .messageTooLarge),
            ("a long string where a number goes", padded(#"{"v":1,"type":"stats","id":"PAD"}"#, "\\n"), .badRequest),
        ]
        for input in inputs {
            XCTAssertEqual(code(of: try reply(to: input.bytes)), input.code, input.name)
        }
        // The connection is still in order after all of them.
        XCTAssertNotNil(try reply(to: Codec.encode(.stats, id: 2)).outcome.get())
    }

    func testNegativeZeroIsRefusedLikeAnySign() throws {
        XCTAssertEqual(code(of: try reply(to: json(#"{"v":1,"type":"deregister","id":1,"region":-0}"#))), .badRequest)
        XCTAssertEqual(code(of: try reply(to: json(#"{"v":-0,"type":"stats","id":1}"#))), .badRequest)
    }

    func testARangeWhoseEndPassesTwoToTheSixtyFourIsRangeOutOfFile() throws {
        let fd = try FileDescriptor.open(try scratch.file("data", size: 8192), .readWrite, options: .closeOnExec)
        defer { try? fd.close() }
        let end = Request.Register(offset: UInt64.max - 4095, length: 8192, access: [.read])
        let single = try reply(to: Codec.encode(.register(end), id: 1), fds: [fd])
        guard case .failure(let error) = single.outcome else { return XCTFail("registered \(single)") }
        XCTAssertEqual(error.code, .rangeOutOfFile, error.message)
        XCTAssertTrue(error.message.contains("[18446744073709547520, 18446744073709547520 + 8192)"), error.message)

        let fits = Request.Register(offset: 0, length: 4096, access: [.read])
        let batch = try reply(to: Codec.encode(.registerBatch([fits, end]), id: 2), fds: [fd])
        guard case .failure(let batchError) = batch.outcome else { return XCTFail("registered \(batch)") }
        XCTAssertEqual(batchError.code, .rangeOutOfFile, batchError.message)
        XCTAssertEqual(batchError.index, 1)
    }
}
