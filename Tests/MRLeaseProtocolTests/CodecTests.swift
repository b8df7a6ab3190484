import MRLeaseProtocol
import XCTest

/// Samples of every message, shared by the round-trip and fuzz tests.
enum Samples {
    static let requests: [Request] = [
        .hello(.init(clientName: "fio ☃", versions: [1, 2])),
        .hello(.init()),
        .register(.init(offset: 0, length: 2 << 20, access: [.read, .write, .atomic], strategy: .odp, tag: "db \"wal\"\n")),
        .register(.init(offset: 4096, length: .max - 4096, access: [.read])),
        .registerBatch([.init(offset: 0, length: 4096, access: [.read], tag: "a"),
                        .init(offset: 8192, length: 1, access: [.write, .atomic], strategy: .pinned)]),
        .deregister(region: .max),
        .list(after: nil),
        .list(after: 17),
        .stats,
        .ack(region: 3),
        .ackRegions([1, 2, .max]),
        .ackFile("259:1:1234"),
        .hello(.init(clientName: "log", revokingPerFile: true)),
        .verify(region: 0),
    ]

    static let results: [ReplyResult] = [
        .hello(HelloResult(
            version: 1, daemon: "mrleased 0.1.0",
            devices: [.init(name: "mlx5_0", odpSupported: true, odpRC: ["SEND", "RECV", "WRITE", "READ"],
                            odpIntegrity: .intact, transferAlignment: 1),
                      .init(name: "rxe1", odpSupported: true, odpRC: ["WRITE", "READ"], odpIntegrity: .corruptsUnaligned,
                            transferAlignment: 4096, odpIntegrityDetail: "page start 0 holds written bytes 3072..."),
                      // As a daemon from before the ODP integrity self-test sends it.
                      .init(name: "rxe0", odpSupported: false, odpRC: [])],
            strategies: [.odp, .pinned],
            limits: .init(maxMessageBytes: 65536, maxRegionsPerUid: 1024, maxBytesPerUid: 64 << 30, quiesceMillis: 1000,
                          maxBatchRanges: 64))),
        .hello(HelloResult(version: 1, daemon: "mrleased 0.5.0", devices: [], strategies: [],
                           limits: .init(maxMessageBytes: 65536, maxRegionsPerUid: 1, maxBytesPerUid: 1, quiesceMillis: 100),
                           layoutProtection: .inotifyDetect)),
        .register(Registration(region: 42, lkey: 0x1234, rkey: .max, address: 0x7f12_3456_0000, length: 2 << 20,
                               strategy: .pinned, strategyReason: "no ODP on rxe0", device: "rxe0", backing: .fsDAX)),
        .registerBatch([
            Registration(region: 43, lkey: 1, rkey: 2, address: 0x1000, length: 4096, strategy: .odp,
                         strategyReason: "ODP", device: "rxe0", backing: .pageCache),
            Registration(region: 44, lkey: 3, rkey: 4, address: 0x3000, length: 1, strategy: .pinned,
                         strategyReason: "pinned", device: "rxe0", backing: .shmem),
        ]),
        .deregister,
        .list(RegionList(regions: [
            .init(region: 1, file: "259:1:1234", offset: 0, length: 4096, access: [.read], strategy: .odp,
                  state: .registered, rkey: 7, lkey: 8, address: 0x1000, tag: "t"),
            .init(region: 2, file: "8:3:99", offset: 8192, length: 4096, access: [.read, .write], strategy: .pinned,
                  state: .revoked),
        ], next: 2)),
        .list(RegionList(regions: [])),
        .stats(Statistics(files: 2, regions: 3, bytesODP: 1 << 21, bytesPinned: .max, leasesHeld: 1, breaksHandled: 9,
                          breakToUnlockMicros: .init(p50: 64, p99: 512, max: 700, count: 9), clients: 4)),
        .stats(Statistics(files: 0, regions: 0, bytesODP: 0, bytesPinned: 0, leasesHeld: 0, breaksHandled: 0,
                          breakToUnlockMicros: .init(p50: 0, p99: 0, max: 0, count: 0), clients: 1,
                          requestMicros: [.registerBatch: .init(p50: 4096, p99: 8192, max: 5000, count: 2),
                                          .hello: .init(p50: 9, p99: 9, max: 9, count: 1)],
                          layoutChangesHandled: 2, layoutChecks: 40)),
        // With histogram buckets and sums, and the counters added with them.
        .stats(Statistics(files: 1, regions: 1, bytesODP: 0, bytesPinned: 4096, leasesHeld: 1, breaksHandled: 2,
                          breakToUnlockMicros: .init(p50: 131_072, p99: 262_144, max: 140_000, count: 2,
                                                     buckets: Array(repeating: 0, count: 16) + [1, 1], sum: 240_000),
                          clients: 2,
                          requestMicros: [.stats: .init(p50: 0, p99: 0, max: 0, count: 0, buckets: [], sum: 0),
                                          .register: .init(p50: 1024, p99: 1024, max: 700, count: 1, buckets: [0, 0, 0, 0, 0, 0, 0, 0, 0, 1], sum: 700)],
                          layoutChangesHandled: 0, layoutChecks: 3, registrations: 4, restorations: 2, regionsLost: 1,
                          grants: 0, peers: 0, layoutChangesFollowed: 5)),
        .ack,
        .verify(Verification(layoutChanged: true, extentsBefore: 1, extentsAfter: 3)),
    ]

    static let errors: [ProtocolError] = ErrorCode.allCases.map { ProtocolError($0, "because \($0.rawValue)") } + [
        ProtocolError(.strategyUnavailable, "ibv_reg_mr refused a pinned registration on an FS-DAX file",
                      errnoName: "EOPNOTSUPP", errnoValue: 95),
        ProtocolError(.rangeOutOfFile, "range [0, 8192) is not inside the file (size 4096)", index: 63),
    ]

    static let events: [Event] = [
        .revoking(.init(region: 5, reason: .leaseBreak, deadlineMillis: 1000, deadlineUnixMillis: 1_764_000_000_000)),
        .revoking(.init(region: 5, reason: .shutdown, deadlineMillis: 0)),
        .revokingFile(.init(file: "259:1:1234", runs: [1...3, 5...5, .max...(.max)], reason: .leaseBreak, deadlineMillis: 100,
                            deadlineUnixMillis: 1_764_000_000_000, more: true)),
        .revokingFile(.init(file: "0:0:0", runs: [7...7], reason: .shutdown, deadlineMillis: 0)),
        .revoked(region: 5),
        .restored(.init(region: 5, lkey: 11, rkey: 12, address: 0xdead_b000, layoutChanged: false)),
        .lost(.init(region: 5, reason: .rangeTruncated, message: "file is now 4096 bytes")),
        .lost(.init(region: 6, reason: .unlinked)),
        .revoking(.init(region: 7, reason: .layoutChanged, deadlineMillis: 0)),
        .unlinked(region: 8),
    ]

    static var replies: [Reply] {
        results.enumerated().map { Reply(id: UInt64($0.offset) * 1_000_000_007, $0.element) }
            + errors.map { Reply(id: 9, type: .register, error: $0) }
            + [Reply(id: nil, type: nil, error: ProtocolError(.badRequest, "x")),
               Reply(id: 4, type: nil, error: ProtocolError(.badRequest, "y"))]
    }

    /// Every encoded message, requests first.
    static var packets: [[UInt8]] {
        requests.enumerated().map { Codec.encode($0.element, id: UInt64($0.offset)) }
            + replies.map(Codec.encode) + events.map(Codec.encode)
    }
}

final class CodecTests: XCTestCase {
    func testEveryRequestSurvivesARoundTrip() throws {
        for (index, request) in Samples.requests.enumerated() {
            let id = UInt64.max - UInt64(index)
            let decoded = try Codec.decodeRequest(Codec.encode(request, id: id))
            XCTAssertEqual(decoded.id, id)
            XCTAssertEqual(decoded.request, request)
        }
    }

    func testEveryReplySurvivesARoundTrip() throws {
        for reply in Samples.replies {
            XCTAssertEqual(try Codec.decodeServerMessage(Codec.encode(reply)), .reply(reply))
        }
    }

    func testEveryEventSurvivesARoundTrip() throws {
        for event in Samples.events {
            XCTAssertEqual(try Codec.decodeServerMessage(Codec.encode(event)), .event(event))
        }
    }

    func testWireBytesAreTheOnesTheProtocolDocumentShows() {
        let register = Request.register(.init(offset: 0, length: 2_097_152, access: [.write, .read], strategy: .any, tag: "wal"))
        XCTAssertEqual(String(decoding: Codec.encode(register, id: 7), as: UTF8.self),
                       #"{"v":1,"type":"register","id":7,"offset":0,"length":2097152,"access":["read","write"],"strategy":"any","tag":"wal"}"#)
        let error = Reply(id: 7, type: .register, error: ProtocolError(
            .strategyUnavailable, "no strategy works", errnoName: "EOPNOTSUPP", errnoValue: 95))
        XCTAssertEqual(String(decoding: Codec.encode(error), as: UTF8.self),
                       #"{"v":1,"type":"register","id":7,"error":{"code":"strategy-unavailable","message":"no strategy works","errno":"EOPNOTSUPP","errnoValue":95}}"#)
        XCTAssertEqual(String(decoding: Codec.encode(.revoked(region: 3)), as: UTF8.self),
                       #"{"v":1,"type":"event","event":"revoked","region":3}"#)
        XCTAssertEqual(String(decoding: Codec.encode(Reply(id: 1, .ack)), as: UTF8.self),
                       #"{"v":1,"type":"ack","id":1,"result":{}}"#)
    }

    /// The `stats` reply is written straight into the packet (`Statistics.write(to:)`): the
    /// bytes are the protocol document's, field for field and in its order.
    func testTheStatsReplyIsTheProtocolDocumentsByteForByte() throws {
        let documented = #"{"v":1,"type":"stats","id":10,"result":{"files":2,"regions":3,"bytesByStrategy":{"odp":0,"pinned":6291456},"leasesHeld":2,"breaksHandled":5,"breakToUnlockMicros":{"p50":64,"p99":700,"max":700,"count":5,"sum":920,"buckets":[0,0,0,0,0,3,1,0,0,1]},"clients":1,"layoutChangesHandled":1,"layoutChecks":4,"layoutChangesFollowed":0,"registrations":3,"restorations":5,"regionsLost":0,"grants":0,"peers":0,"requestMicros":{"register":{"p50":512,"p99":873,"max":873,"count":12,"sum":5200,"buckets":[0,0,0,0,0,0,0,0,7,5]},"stats":{"p50":32,"p99":41,"max":41,"count":3,"sum":85,"buckets":[0,0,0,0,2,1]}}}}"#
        guard case .reply(let reply) = try Codec.decodeServerMessage(Array(documented.utf8)) else { return XCTFail("not a reply") }
        XCTAssertEqual(String(decoding: Codec.encode(reply), as: UTF8.self), documented)
        let text = try String(contentsOfFile: #filePath.replacingOccurrences(of: "Tests/MRLeaseProtocolTests/CodecTests.swift", with: "docs/protocol.md"),
                              encoding: .utf8)
        XCTAssertTrue(text.contains(documented), "docs/protocol.md no longer shows this stats reply")
    }

    func testUnknownFieldsAreIgnoredAndOptionalNullsMeanAbsent() throws {
        let bytes = Array(#"{"v":1,"type":"register","id":1,"offset":0,"length":1,"access":["read"],"strategy":null,"future":{"x":[1]}}"#.utf8)
        XCTAssertEqual(try Codec.decodeRequest(bytes).request,
                       .register(.init(offset: 0, length: 1, access: [.read], strategy: .any)))
    }

    func testEscapesAndSurrogatePairsDecodeToTheSameString() throws {
        let bytes = Array(#"{"v":1,"type":"hello","id":2,"versions":[1],"clientName":"\u00e9\ud83d\ude00\/\t"}"#.utf8)
        XCTAssertEqual(try Codec.decodeRequest(bytes).request, .hello(.init(clientName: "é😀/\t", versions: [1])))
    }

    func testHelloNegotiatesTheHighestCommonVersion() throws {
        XCTAssertEqual(try Request.Hello(versions: [3, 1, 2]).negotiatedVersion(supported: [1, 2]), 2)
        XCTAssertEqual(try Request.Hello(versions: [1]).negotiatedVersion(), 1)
        XCTAssertThrowsError(try Request.Hello(versions: [2, 3]).negotiatedVersion()) { error in
            XCTAssertEqual((error as? ProtocolError)?.code, .unsupportedVersion)
            XCTAssertEqual((error as? ProtocolError)?.message, "client speaks versions [2, 3], daemon speaks [1]")
        }
    }

    func testRegisterTakesExactlyOneDescriptorAndOtherRequestsNone() throws {
        XCTAssertNoThrow(try Codec.checkDescriptors(1, for: .register))
        XCTAssertNoThrow(try Codec.checkDescriptors(1, for: .registerBatch))
        XCTAssertNoThrow(try Codec.checkDescriptors(0, for: .stats))
        let cases: [(Int, RequestType, ErrorCode, String)] = [
            (0, .register, .missingFD, "register needs the file's fd attached with SCM_RIGHTS; none came"),
            (2, .register, .tooManyFDs, "register takes exactly one fd; 2 came and were closed"),
            (0, .registerBatch, .missingFD, "register-batch needs the file's fd attached with SCM_RIGHTS; none came"),
            (2, .registerBatch, .tooManyFDs, "register-batch takes exactly one fd; 2 came and were closed"),
            (1, .hello, .tooManyFDs, "hello takes no fds; 1 came and were closed"),
        ]
        for (count, type, code, message) in cases {
            XCTAssertThrowsError(try Codec.checkDescriptors(count, for: type)) { error in
                XCTAssertEqual(error as? ProtocolError, ProtocolError(code, message))
            }
        }
    }

    func testIntegersAreWrittenAsExactDecimalsAtTheEdges() throws {
        for value: UInt64 in [0, 7, 10, 4096, UInt64(UInt32.max), .max - 1, .max] {
            let bytes = Codec.encode(.deregister(region: value), id: value)
            XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "{\"v\":1,\"type\":\"deregister\",\"id\":\(value),\"region\":\(value)}")
            XCTAssertEqual(try Codec.decodeRequest(bytes).request, .deregister(region: value))
        }
        let negative = ProtocolError(.internal, "x", errnoName: "E", errnoValue: -5)
        let reply = Codec.encode(Reply(id: 1, type: .stats, error: negative))
        XCTAssertTrue(String(decoding: reply, as: UTF8.self).contains("\"errnoValue\":-5"))
    }

    /// A full batch's reply fits in one message even with every number at its widest, a
    /// 64-byte device name (IBV_SYSFS_NAME_MAX) and a 400-byte strategy reason (the longest the
    /// engine writes is about 200: a device, the access and an errno's text).
    func testAFullBatchReplyFitsInOneMessage() {
        let widest = Registration(region: .max, lkey: .max, rkey: .max, address: .max, length: .max, strategy: .pinned,
                                  strategyReason: String(repeating: "r", count: 400), device: String(repeating: "d", count: 64),
                                  backing: .pageCache)
        let reply = Codec.encode(Reply(id: .max, .registerBatch(Array(repeating: widest, count: Codec.maxBatchRanges))))
        XCTAssertLessThan(reply.count, Codec.maxMessageBytes)
    }

    /// A stats reply fits in one message even with every request type's histogram in all 64
    /// buckets and every count at its widest.
    func testAStatsReplyWithEveryHistogramFullFitsInOneMessage() {
        let full = Statistics.Latency(p50: .max, p99: .max, max: .max, count: UInt64.max / 64 * 64,
                                      buckets: Array(repeating: UInt64.max / 64, count: Statistics.Latency.maxBuckets), sum: .max)
        let stats = Statistics(files: .max, regions: .max, bytesODP: .max, bytesPinned: .max, leasesHeld: .max, breaksHandled: .max,
                               breakToUnlockMicros: full, clients: .max,
                               requestMicros: Dictionary(uniqueKeysWithValues: RequestType.allCases.map { ($0, full) }),
                               layoutChangesHandled: .max, layoutChecks: .max, registrations: .max, restorations: .max,
                               regionsLost: .max, grants: .max, peers: .max, layoutChangesFollowed: .max)
        let reply = Codec.encode(Reply(id: .max, .stats(stats)))
        XCTAssertLessThan(reply.count, Codec.maxMessageBytes)
        XCTAssertEqual(try Codec.decodeServerMessage(reply), .reply(Reply(id: .max, .stats(stats))))
    }

    func testErrorReplyKeepsTheIdAndTypeWhenTheRequestGotThatFar() {
        let error = ProtocolError(.badRequest, "nope")
        XCTAssertEqual(Codec.errorReply(to: Array(#"{"v":1,"type":"register","id":5}"#.utf8), error),
                       Reply(id: 5, type: .register, error: error))
        XCTAssertEqual(Codec.errorReply(to: Array(#"{"v":1,"type":"dance","id":6}"#.utf8), error),
                       Reply(id: 6, type: nil, error: error))
        XCTAssertEqual(Codec.errorReply(to: Array("{\"v\":1,\"id\":".utf8), error),
                       Reply(id: nil, type: nil, error: error))
        XCTAssertEqual(String(decoding: Codec.encode(Reply(id: nil, type: nil, error: error)), as: UTF8.self),
                       #"{"v":1,"type":"error","error":{"code":"bad-request","message":"nope"}}"#)
    }

    func testListPagesStayWithinTheMessageLimitAndCoverEveryRegion() throws {
        let regions = (1...3000).map { id in
            RegionList.Region(region: UInt64(id), file: "259:1:\(id)", offset: 0, length: 4096, access: [.read, .write],
                              strategy: .odp, state: .registered, rkey: .max, lkey: .max, address: .max,
                              tag: String(repeating: "t", count: id % 200))
        }
        var seen: [UInt64] = []
        var after: UInt64 = 0
        while true {
            let packet = Codec.encodeList(id: 1, regions: regions.filter { $0.region > after })
            XCTAssertLessThanOrEqual(packet.count, Codec.maxMessageBytes)
            guard case .reply(let reply) = try Codec.decodeServerMessage(packet),
                  case .success(.list(let page)) = reply.outcome else { return XCTFail("not a list reply") }
            XCTAssertFalse(page.regions.isEmpty)
            seen += page.regions.map(\.region)
            guard let next = page.next else { break }
            XCTAssertEqual(next, page.regions.last?.region)
            after = next
        }
        XCTAssertEqual(seen, regions.map(\.region))
    }
}
