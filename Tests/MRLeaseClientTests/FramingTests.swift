import Foundation
import LinuxFile
import MRLeaseClient
import SystemPackage
import TestSupport
import XCTest

/// Malformed requests on a raw socket: each gets its error code, the connection stays usable,
/// and another client connected at the same time notices nothing.
final class FramingTests: XCTestCase {
    var daemon: RunningDaemon!
    var raw: UnixSocket!
    var bystander: MRLeaseClient!

    override func setUpWithError() throws {
        daemon = try RunningDaemon()
        raw = try UnixSocket.connect(path: daemon.socketPath)
        bystander = try MRLeaseClient.connect(path: daemon.socketPath)
        try bystander.hello(clientName: "bystander")
    }

    override func tearDown() {
        try? raw?.close()
        bystander?.close()
        daemon = nil
    }

    /// The one reply to `bytes` sent with `fds` on the raw socket.
    func reply(to bytes: [UInt8], fds: [FileDescriptor] = []) throws -> Reply {
        try raw.send(bytes, fds: fds)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            guard case .message(let message) = try raw.receive(maxSize: Codec.maxMessageBytes + 1) else {
                usleep(5_000)
                continue
            }
            guard case .reply(let reply) = try Codec.decodeServerMessage(message.bytes) else { continue }
            return reply
        }
        throw TestFailure("no reply within 5 s")
    }

    func json(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// The error in `reply`, then a stats on the same connection, then one on the bystander's.
    func assertError(_ code: ErrorCode, _ reply: Reply, id: UInt64?, file: StaticString = #filePath, line: UInt = #line) throws {
        guard case .failure(let error) = reply.outcome else { return XCTFail("expected \(code.rawValue), got \(reply)", file: file, line: line) }
        XCTAssertEqual(error.code, code, error.message, file: file, line: line)
        XCTAssertEqual(reply.id, id, file: file, line: line)
        let after = try self.reply(to: Codec.encode(.stats, id: 99))
        guard case .success(.stats(let stats)) = after.outcome else { return XCTFail("stats after \(code.rawValue): \(after)", file: file, line: line) }
        XCTAssertEqual(after.id, 99, file: file, line: line)
        XCTAssertEqual(stats.clients, 2, "both connections survive", file: file, line: line)
        XCTAssertEqual(try bystander.stats().clients, 2, file: file, line: line)
    }

    func testOversizedPacketIsMessageTooLarge() throws {
        var packet = json(#"{"v":1,"type":"stats","id":1,"pad":""#)
        packet += [UInt8](repeating: UInt8(ascii: "x"), count: 70_000 - packet.count - 2) + json(#""}"#)
        XCTAssertEqual(packet.count, 70_000)
        try assertError(.messageTooLarge, try reply(to: packet), id: nil)
    }

    func testTwoFdsOnRegisterAreTooManyFds() throws {
        let scratch = try ScratchDirectory()
        let one = try FileDescriptor.open(try scratch.file("a", size: 4096), .readWrite)
        let two = try FileDescriptor.open(try scratch.file("b", size: 4096), .readWrite)
        defer { try? one.close(); try? two.close() }
        let request = Codec.encode(.register(.init(offset: 0, length: 4096, access: [.read])), id: 3)
        try assertError(.tooManyFDs, try reply(to: request, fds: [one, two]), id: 3)
    }

    func testAnFdOnStatsIsTooManyFds() throws {
        let fd = try FileDescriptor.open("/dev/null", .readOnly)
        defer { try? fd.close() }
        try assertError(.tooManyFDs, try reply(to: Codec.encode(.stats, id: 4), fds: [fd]), id: 4)
    }

    func testRegisterWithoutItsFdIsMissingFd() throws {
        let request = Codec.encode(.register(.init(offset: 0, length: 4096, access: [.read])), id: 5)
        try assertError(.missingFD, try reply(to: request), id: 5)
    }

    func testNonJSONIsBadRequest() throws {
        try assertError(.badRequest, try reply(to: json("stats please")), id: nil)
    }

    func testUnknownTypeIsBadRequestWithTheIdEchoed() throws {
        let reply = try reply(to: json(#"{"v":1,"type":"reboot","id":6}"#))
        try assertError(.badRequest, reply, id: 6)
        guard case .failure(let error) = reply.outcome else { return }
        XCTAssertTrue(error.message.contains("reboot"), error.message)
    }

    func testWrongVersionIsUnsupportedVersion() throws {
        try assertError(.unsupportedVersion, try reply(to: json(#"{"v":2,"type":"stats","id":7}"#)), id: 7)
    }

    func testHelloOfferingOnlyUnknownVersionsIsUnsupportedVersion() throws {
        try assertError(.unsupportedVersion, try reply(to: Codec.encode(.hello(.init(versions: [7, 8])), id: 8)), id: 8)
    }
}
