import Foundation
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

@testable import MRLeaseDaemon

/// Every number a request carries, at its edges and past them: the daemon answers each one
/// (a result, or an error naming the field) and keeps serving — never a trap, which would cost
/// every other client its regions (docs/reliability.md, "Numbers from clients").
final class NumericBoundsTests: XCTestCase {
    /// Literal spellings tried in every numeric field: the edges of the field's own bound are
    /// added per field. Negative, fractional and exponent forms are not integers on this wire.
    static let common = ["0", "1", "9007199254740992", "9223372036854775807", "9223372036854775808",
                         "18446744073709551614", "18446744073709551615", "18446744073709551616",
                         "-1", "-0", "1.5", "1e3", "1E+2", "0.0", "340282366920938463463374607431768211456"]

    /// A request with one numeric field spelled `X`, the field's path in error messages, its
    /// documented bound (nil: any UInt64), and whether it carries the file's fd.
    struct Template {
        var json: String
        var field: String
        var bound: UInt64?
        var withFD = false
    }

    func templates(region: UInt64) -> [Template] {
        let r = "\(region)"
        return [
            Template(json: #"{"v":X,"type":"stats","id":7}"#, field: "v"),
            Template(json: #"{"v":1,"type":"stats","id":X}"#, field: "id"),
            Template(json: #"{"v":1,"type":"hello","id":7,"versions":[X]}"#, field: "versions[0]"),
            Template(json: #"{"v":1,"type":"register","id":7,"offset":X,"length":4096,"access":["read"]}"#, field: "offset", withFD: true),
            Template(json: #"{"v":1,"type":"register","id":7,"offset":0,"length":X,"access":["read"]}"#, field: "length", withFD: true),
            Template(json: #"{"v":1,"type":"register-batch","id":7,"ranges":[{"offset":X,"length":4096,"access":["read"]}]}"#,
                     field: "ranges[0].offset", withFD: true),
            Template(json: #"{"v":1,"type":"register-batch","id":7,"ranges":[{"offset":0,"length":X,"access":["read"]}]}"#,
                     field: "ranges[0].length", withFD: true),
            Template(json: #"{"v":1,"type":"deregister","id":7,"region":X}"#, field: "region"),
            Template(json: #"{"v":1,"type":"list","id":7,"after":X}"#, field: "after"),
            Template(json: #"{"v":1,"type":"list","id":7,"limit":X}"#, field: "limit", bound: Codec.maxListLimit),
            Template(json: #"{"v":1,"type":"ack","id":7,"region":X}"#, field: "region"),
            Template(json: #"{"v":1,"type":"ack","id":7,"regions":[X]}"#, field: "regions[0]"),
            Template(json: #"{"v":1,"type":"verify","id":7,"region":X}"#, field: "region"),
            Template(json: #"{"v":1,"type":"grant","id":7,"region":X}"#, field: "region"),
            Template(json: #"{"v":1,"type":"grant","id":7,"region":\#(r),"expiresInMillis":X}"#, field: "expiresInMillis",
                     bound: Request.Grant.maxExpiresInMillis),
            Template(json: #"{"v":1,"type":"grant","id":7,"region":\#(r),"maxPeers":X}"#, field: "maxPeers",
                     bound: Request.Grant.maxPeersLimit),
            Template(json: #"{"v":1,"type":"revoke-grant","id":7,"grant":X}"#, field: "grant"),
        ]
    }

    func values(for template: Template) -> [String] {
        guard let bound = template.bound else { return Self.common }
        return Self.common + ["\(bound - 1)", "\(bound)", "\(bound + 1)"]
    }

    func testEveryNumericFieldOfEveryRequestIsAnsweredAtEveryEdgeAndTheDaemonKeepsServing() throws {
        let daemon = try InProcessDaemon()
        let scratch = try ScratchDirectory()
        let path = try scratch.file("data", size: 1 << 20)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let client = try daemon.connect()
        let bystander = try daemon.connect()
        let kept = try bystander.register(fd, offset: 0)
        let own = try client.register(fd, offset: 4096)
        var tried = 0
        for template in templates(region: own.region) {
            for value in values(for: template) {
                let json = template.json.replacingOccurrences(of: "X", with: value)
                let reply = try client.raw(Array(json.utf8), fd: template.withFD ? fd : nil)
                tried += 1
                // An error about the number names the field it is about.
                if case .failure(let error) = reply.outcome, error.code == .badRequest {
                    XCTAssertTrue(error.message.contains(template.field) || error.message.contains("\"\(template.field)\""),
                                  "\(json): \(error.message)")
                }
                XCTAssertEqual(daemon.engine.indexProblems(), [], json)
                // Still serving, and the other client still has its region.
                guard case .stats = try bystander.request(.stats) else { return XCTFail("stats after \(json)") }
                XCTAssertNotNil(daemon.engine.info(.init(kept.region)), "the bystander's region after \(json)")
            }
        }
        XCTAssertGreaterThan(tried, 17 * 15)
    }

    func testAPacketPastTheLimitIsRefusedWithoutAnIDItCouldNotHaveParsed() throws {
        let daemon = try InProcessDaemon()
        let client = try daemon.connect()
        let padding = String(repeating: " ", count: Codec.maxMessageBytes)
        let reply = try client.raw(Array(#"{"v":1,"type":"stats","id":42}"#.utf8) + Array(padding.utf8))
        XCTAssertNil(reply.id, "the packet was not parsed: its id is not known")
        guard case .failure(let error) = reply.outcome else { return XCTFail("a packet past the limit was answered") }
        XCTAssertEqual(error.code, .messageTooLarge)
    }

    func testGrantExpiryIsBoundedToTenYearsAtDecoding() throws {
        for value: UInt64 in [Request.Grant.maxExpiresInMillis + 1, 18_000_000_000_000, .max] {
            let json = #"{"v":1,"type":"grant","id":1,"region":1,"expiresInMillis":\#(value)}"#
            XCTAssertThrowsError(try Codec.decodeRequest(Array(json.utf8))) { error in
                XCTAssertEqual((error as? ProtocolError)?.code, .badRequest)
                XCTAssertTrue("\(error)".contains("expiresInMillis"), "\(error)")
            }
        }
        let longest = #"{"v":1,"type":"grant","id":1,"region":1,"expiresInMillis":\#(Request.Grant.maxExpiresInMillis)}"#
        guard case .grant(let grant) = try Codec.decodeRequest(Array(longest.utf8)).request else { return XCTFail("not a grant") }
        XCTAssertEqual(grant.expiresInMillis, Request.Grant.maxExpiresInMillis)
    }
}

extension InProcessClient {
    /// Sends `bytes` as one packet and returns the next reply, whatever its id.
    func raw(_ bytes: [UInt8], fd: FileDescriptor? = nil) throws -> Reply {
        let before = replies.count
        try socket.send(bytes, fds: fd.map { [$0] } ?? [])
        try daemon.drive { () throws -> Bool in
            try pump()
            return replies.count > before || closedByDaemon
        }
        guard replies.count > before else { throw TestFailure("no reply to \(String(decoding: bytes.prefix(200), as: UTF8.self))") }
        return replies.remove(at: before)
    }
}
