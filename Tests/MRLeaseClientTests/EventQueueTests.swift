import Foundation
import LinuxFile
@testable import MRLeaseClient
import XCTest

/// Events and replies interleaved as the daemon may send them, from a socketpair standing in
/// for the daemon (the host has no RDMA device, so the real one never revokes anything here).
final class EventQueueTests: XCTestCase {
    var daemonEnd: UnixSocket!
    var client: MRLeaseClient!

    func connect(autoAck: Bool) throws {
        let (clientEnd, daemonEnd) = try UnixSocket.pair()
        self.daemonEnd = daemonEnd
        client = MRLeaseClient(socket: clientEnd, path: "socketpair", acknowledgesRevocations: autoAck)
    }

    let statsResult = Statistics(files: 1, regions: 1, bytesODP: 0, bytesPinned: 4096, leasesHeld: 1, breaksHandled: 0,
                                 breakToUnlockMicros: .init(p50: 0, p99: 0, max: 0, count: 0), clients: 1)

    func push(_ event: Event) throws { try daemonEnd.send(Codec.encode(event)) }
    func push(_ reply: Reply) throws { try daemonEnd.send(Codec.encode(reply)) }

    /// The next request the client sent, decoded.
    func request() throws -> (id: UInt64, request: Request)? {
        guard case .message(let message) = try daemonEnd.receive(maxSize: Codec.maxMessageBytes) else { return nil }
        return try Codec.decodeRequest(message.bytes)
    }

    func testEventsArrivingBeforeAReplyAreQueuedInOrder() throws {
        try connect(autoAck: false)
        try push(.revoking(.init(region: 7, reason: .leaseBreak, deadlineMillis: 100)))
        try push(.revoked(region: 7))
        try push(Reply(id: 1, .stats(statsResult)))
        XCTAssertEqual(try client.stats(), statsResult)
        XCTAssertEqual(try client.nextEvent(timeout: .zero), .revoking(.init(region: 7, reason: .leaseBreak, deadlineMillis: 100)))
        XCTAssertEqual(try client.nextEvent(timeout: .zero), .revoked(region: 7))
        XCTAssertNil(try client.nextEvent(timeout: .zero))
        XCTAssertEqual(client.pendingRevocations, [], "revoked ends the pending revocation")
    }

    /// The daemon sent an event and closed with the client's request unread: the kernel reports
    /// ECONNRESET before the event, and the client still reads the event, then the end.
    func testAnEventQueuedBeforeAResetIsReadBeforeTheEnd() throws {
        try connect(autoAck: false)
        try client.send(.stats)
        try push(.revoked(region: 9))
        try daemonEnd.close()
        XCTAssertEqual(try client.nextEvent(timeout: .seconds(1)), .revoked(region: 9))
        XCTAssertThrowsError(try client.nextEvent(timeout: .seconds(1))) { error in
            guard case ClientError.disconnected = error else { return XCTFail("expected disconnected, got \(error)") }
        }
    }

    func testAutomaticAckIsSentOnReadAndItsReplyIsDropped() throws {
        try connect(autoAck: true)
        try push(.revoking(.init(region: 3, reason: .leaseBreak, deadlineMillis: 100)))
        XCTAssertEqual(try client.nextEvent(timeout: .seconds(1))?.name, .revoking)
        let ack = try XCTUnwrap(try request())
        XCTAssertEqual(ack.request, .ack(region: 3))
        try push(Reply(id: ack.id, .ack))
        try push(.revoked(region: 3))
        XCTAssertEqual(try client.nextEvent(timeout: .seconds(1)), .revoked(region: 3), "the ack's reply is not an event")
        XCTAssertEqual(client.pendingRevocations, [])
    }

    func testAcknowledgeRevocationsAcksEachPendingRegionOnce() throws {
        try connect(autoAck: false)
        try push(.revoking(.init(region: 4, reason: .leaseBreak, deadlineMillis: 100)))
        try push(.revoking(.init(region: 5, reason: .leaseBreak, deadlineMillis: 100)))
        let acked = answerAcks(2)
        XCTAssertEqual(try client.acknowledgeRevocations(), [4, 5])
        acked.wait()
        XCTAssertEqual(acked.regions, [4, 5])
        XCTAssertEqual(client.pendingRevocations, [])
        XCTAssertEqual(try client.nextEvent(timeout: .zero)?.region, 4, "the events stay queued")
    }

    /// Answers the next `count` requests on a thread (each `ack` waits for its reply, so a
    /// reply cannot be queued before the request), recording the acknowledged regions.
    func answerAcks(_ count: Int) -> AckLog {
        let log = AckLog()
        nonisolated(unsafe) let end = daemonEnd!
        Thread {
            for _ in 0..<count {
                var pfd = pollfd(fd: end.descriptor.rawValue, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 5_000) == 1, case .message(let message)? = try? end.receive(maxSize: Codec.maxMessageBytes),
                      let (id, request) = try? Codec.decodeRequest(message.bytes), case .ack(let region) = request else { break }
                log.append(region)
                try? end.send(Codec.encode(Reply(id: id, .ack)))
            }
            log.done.signal()
        }.start()
        return log
    }

    func testAnErrorReplyWithoutIdAnswersThePendingRequest() throws {
        try connect(autoAck: false)
        try push(Reply(id: nil, type: nil, error: .messageTooLarge))
        XCTAssertThrowsError(try client.stats()) { error in
            XCTAssertEqual((error as? ClientError)?.code, .messageTooLarge)
        }
    }

    func testADaemonThatClosesIsDisconnectedAfterItsLastEvents() throws {
        try connect(autoAck: false)
        try push(.revoking(.init(region: 9, reason: .shutdown, deadlineMillis: 0)))
        try daemonEnd.close()
        XCTAssertEqual(try client.nextEvent(timeout: .seconds(1))?.name, .revoking)
        XCTAssertThrowsError(try client.nextEvent(timeout: .seconds(1))) { error in
            guard case .disconnected = error as? ClientError else { return XCTFail("\(error)") }
        }
    }

    func testNoReplyWithinTheTimeoutIsTimedOut() throws {
        try connect(autoAck: false)
        client.replyTimeout = .milliseconds(50)
        XCTAssertThrowsError(try client.stats()) { error in
            guard case .timedOut(let op, _) = error as? ClientError else { return XCTFail("\(error)") }
            XCTAssertEqual(op, "stats reply")
        }
    }
}

final class AckLog: @unchecked Sendable {
    private let lock = NSLock()
    private var acked: [UInt64] = []
    let done = DispatchSemaphore(value: 0)

    func append(_ region: UInt64) { lock.withLock { acked.append(region) } }
    var regions: [UInt64] { lock.withLock { acked } }
    func wait() { _ = done.wait(timeout: .now() + 5) }
}

/// `revoking-file`: its regions are pending until `ack(file:)`, which sends one `ack` of the
/// file; with automatic acks, one is sent once the event's last part is in.
final class RevokingFileQueueTests: XCTestCase {
    func testAFilesRegionsArePendingUntilItsOneAck() throws {
        let (clientEnd, daemonEnd) = try UnixSocket.pair()
        let client = MRLeaseClient(socket: clientEnd, path: "socketpair", acknowledgesRevocations: false)
        try daemonEnd.send(Codec.encode(.revokingFile(.init(file: "1:2:3", runs: [4...6], reason: .leaseBreak, deadlineMillis: 100, more: true))))
        try daemonEnd.send(Codec.encode(.revokingFile(.init(file: "1:2:3", runs: [9...9], reason: .leaseBreak, deadlineMillis: 100))))
        try daemonEnd.send(Codec.encode(.revoking(.init(region: 12, reason: .leaseBreak, deadlineMillis: 100))))
        XCTAssertEqual(try client.nextEvent(timeout: .seconds(1))?.name, .revokingFile)
        _ = try client.nextEvent(timeout: .seconds(1))
        _ = try client.nextEvent(timeout: .seconds(1))
        XCTAssertEqual(client.pendingRevocations, [4, 5, 6, 9, 12])
        nonisolated(unsafe) let end = daemonEnd
        nonisolated(unsafe) var requests: [Request] = []
        let done = DispatchSemaphore(value: 0)
        Thread {
            for _ in 0..<2 {
                var pfd = pollfd(fd: end.descriptor.rawValue, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 5_000) == 1, case .message(let message)? = try? end.receive(maxSize: Codec.maxMessageBytes),
                      let (id, request) = try? Codec.decodeRequest(message.bytes) else { break }
                requests.append(request)
                try? end.send(Codec.encode(Reply(id: id, .ack)))
            }
            done.signal()
        }.start()
        XCTAssertEqual(try client.acknowledgeRevocations(), [4, 5, 6, 9, 12])
        done.wait()
        XCTAssertEqual(requests, [.ackFile("1:2:3"), .ack(region: 12)], "one ack for the file's four regions")
        XCTAssertEqual(client.pendingRevocations, [])
    }

    func testAutomaticAckOfAFileWaitsForItsLastPart() throws {
        let (clientEnd, daemonEnd) = try UnixSocket.pair()
        let client = MRLeaseClient(socket: clientEnd, path: "socketpair", acknowledgesRevocations: true)
        try daemonEnd.send(Codec.encode(.revokingFile(.init(file: "1:2:3", runs: [4...6], reason: .leaseBreak, deadlineMillis: 100, more: true))))
        _ = try client.nextEvent(timeout: .seconds(1))
        try daemonEnd.setNonBlocking(true)
        XCTAssertEqual(try daemonEnd.receive(maxSize: Codec.maxMessageBytes), .wouldBlock, "no ack before the last part")
        try daemonEnd.send(Codec.encode(.revokingFile(.init(file: "1:2:3", runs: [9...9], reason: .leaseBreak, deadlineMillis: 100))))
        _ = try client.nextEvent(timeout: .seconds(1))
        guard case .message(let message) = try daemonEnd.receive(maxSize: Codec.maxMessageBytes) else { return XCTFail("no ack sent") }
        XCTAssertEqual(try Codec.decodeRequest(message.bytes).1, .ackFile("1:2:3"))
    }
}
