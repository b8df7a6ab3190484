import Foundation
import LinuxFile
import MRLeaseClient
import SystemPackage
import TestSupport
import XCTest

/// The daemon's bounds, each on a daemon started with a small value: per-uid quotas, the
/// number of connections, and the replies a client may leave unread. Each refusal costs only
/// the client that crossed the bound.
final class LimitTests: XCTestCase {
    /// The quotas are checked before the device is asked, so they answer the same on a host
    /// without RDMA as on one with it.
    func testRegionAndByteQuotasAreQuotaExceededBeforeAnyRegistration() throws {
        let scratch = try ScratchDirectory()
        let fd = try FileDescriptor.open(try scratch.file("data", size: 16384), .readWrite)
        defer { try? fd.close() }
        let none = try RunningDaemon(environment: ["MRLEASED_MAX_REGIONS_PER_UID": "0"])
        let client = try MRLeaseClient.connect(path: none.socketPath)
        defer { client.close() }
        let regions = assertRefused(.quotaExceeded) { _ = try client.register(fd: fd, offset: 0, length: 4096, access: [.read]) }
        XCTAssertEqual(regions?.code, .quotaExceeded)
        XCTAssertTrue(regions?.message.contains("max-regions-per-uid") == true, "\(String(describing: regions))")

        let small = try RunningDaemon(environment: ["MRLEASED_MAX_BYTES_PER_UID": "8192"])
        let other = try MRLeaseClient.connect(path: small.socketPath)
        defer { other.close() }
        XCTAssertEqual(try other.hello().limits.maxBytesPerUid, 8192)
        let bytes = assertRefused(.quotaExceeded) { _ = try other.register(fd: fd, offset: 0, length: 12288, access: [.read]) }
        XCTAssertEqual(bytes?.code, .quotaExceeded)
        XCTAssertTrue(bytes?.message.contains("would hold 12288 bytes in regions; its limit is 8192") == true, "\(String(describing: bytes))")
        let batch = assertRefused(.quotaExceeded) {
            _ = try other.registerBatch(fd: fd, ranges: [.init(offset: 0, length: 4096, access: [.read]),
                                                         .init(offset: 4096, length: 8192, access: [.read])])
        }
        XCTAssertEqual(batch?.code, .quotaExceeded)
        XCTAssertEqual(batch?.index, 1, "the range that crosses the limit")
        XCTAssertEqual(try other.stats().regions, 0)
    }

    func testAConnectionOverMaxConnectionsIsToldWhyAndClosedWhileTheOthersStay() throws {
        let (daemon, first) = try daemonWithOneClient(["MRLEASED_MAX_CONNECTIONS": "2"])
        defer { first.close() }
        let second = try MRLeaseClient.connect(path: daemon.socketPath)
        defer { second.close() }
        XCTAssertEqual(try second.stats().clients, 2)

        let third = try UnixSocket.connect(path: daemon.socketPath)
        defer { try? third.close() }
        try third.setNonBlocking(true)
        var received: [UnixSocket.Received] = []
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, received.last.map({ if case .endOfStream = $0 { false } else { true } }) ?? true {
            let next = try third.receive(maxSize: Codec.maxMessageBytes)
            if case .wouldBlock = next { usleep(5_000) } else { received.append(next) }
        }
        guard case .message(let message)? = received.first,
              case .reply(let reply) = try Codec.decodeServerMessage(message.bytes),
              case .failure(let error) = reply.outcome else {
            return XCTFail("expected an error reply, got \(received)")
        }
        XCTAssertEqual(error.code, .tooManyRequests)
        XCTAssertTrue(error.message.contains("at most 2 connections"), error.message)
        guard case .endOfStream? = received.last else { return XCTFail("the refused connection stayed open: \(received)") }
        XCTAssertEqual(try second.stats().clients, 2, "the two admitted clients are untouched")

        first.close()
        var admitted = false
        while Date() < deadline.addingTimeInterval(5), !admitted {
            let fourth = try MRLeaseClient.connect(path: daemon.socketPath)
            admitted = (try? fourth.stats().clients) == 2
            fourth.close()
            if !admitted { usleep(20_000) }
        }
        XCTAssertTrue(admitted, "a place freed by a disconnect is given to the next client")
    }

    /// A daemon with `environment`, and a client once the daemon counts it alone
    /// (RunningDaemon's start-up probe counts until the daemon has seen it close).
    func daemonWithOneClient(_ environment: [String: String]) throws -> (RunningDaemon, MRLeaseClient) {
        let daemon = try RunningDaemon(environment: environment)
        let client = try MRLeaseClient.connect(path: daemon.socketPath)
        try waitForClients(1, asking: client)
        return (daemon, client)
    }

    func waitForClients(_ count: UInt64, asking client: MRLeaseClient) throws {
        let deadline = Date().addingTimeInterval(5)
        while try client.stats().clients != count {
            guard Date() < deadline else { throw TestFailure("the daemon still counts \(try client.stats().clients) clients, not \(count)") }
            usleep(10_000)
        }
    }

    func testAClientThatNeverReadsItsRepliesIsDisconnectedAndNobodyElseNotices() throws {
        let (daemon, reader) = try daemonWithOneClient(["MRLEASED_MAX_QUEUED_MESSAGES": "8"])
        defer { reader.close() }
        let greedy = try UnixSocket.connect(path: daemon.socketPath)
        defer { try? greedy.close() }
        try greedy.setNonBlocking(true)
        try waitForClients(2, asking: reader)
        // Requests until the daemon gives up on us: the kernel's socket buffer takes replies
        // first, then the daemon queues 8 and disconnects.
        let request = Codec.encode(.stats, id: 1)
        var sent = 0
        var gone = false
        let deadline = Date().addingTimeInterval(10)
        while !gone && Date() < deadline {
            do {
                try greedy.send(request)
                sent += 1
            } catch {
                gone = error == .brokenPipe || error == .connectionReset
                if !gone && error != .wouldBlock && error != .resourceTemporarilyUnavailable { throw error }
                if !gone { usleep(1_000) }
            }
            if sent % 500 == 0, (try? reader.stats().clients) == 1 { gone = true }
        }
        XCTAssertTrue(gone, "still connected after \(sent) unread replies")
        XCTAssertEqual(try reader.stats().clients, 1, "the reader is still served")
    }
}
