import Foundation
import Glibc
import LinuxFile
import MRLeaseProtocol
import TestSupport
import XCTest

/// A client that sends requests and never reads its replies: the daemon queues what the socket
/// will not take, and must bound that in bytes (per client and in total), not only in messages.
final class MemoryBoundTests: XCTestCase {
    /// A `hello` the daemon answers with an `unsupported-version` error of a few hundred bytes
    /// (it echoes at most 16 of the versions: every reply fits one packet).
    static let bigHello = Codec.encode(.hello(.init(clientName: "reader-never", versions: Array(2...17))), id: 1)

    /// Sends `bigHello` up to `count` times without reading; returns how many went before the
    /// daemon dropped the connection, or nil if it never did.
    func flood(_ socket: UnixSocket, count: Int) -> Int? {
        for sent in 0..<count {
            do { try socket.send(Self.bigHello) } catch { return sent }
        }
        return nil
    }

    func floodClients(_ daemon: RunningDaemon, clients: Int, count: Int) throws -> [Int?] {
        let sockets = try (0..<clients).map { _ in try UnixSocket.connect(path: daemon.socketPath) }
        return sockets.map { flood($0, count: count) }
    }

    func testClientsThatSendWithoutReadingAreReadNoMoreAndCutOffAfterTheStallBound() throws {
        // The byte and message bounds out of the way: only the stall bound can stop these clients.
        let daemon = try RunningDaemon(environment: ["MRLEASED_MAX_QUEUED_BYTES_PER_CLIENT": "67108864",
                                                     "MRLEASED_MAX_QUEUED_MESSAGES": "1000000",
                                                     "MRLEASED_CLIENT_STALL_MS": "500"])
        let before = try DaemonWire.rssKiB(daemon.pid)
        let start = Date()
        let sent = try floodClients(daemon, clients: 4, count: 20_000)
        let seconds = Date().timeIntervalSince(start)
        let after = try DaemonWire.rssKiB(daemon.pid)
        print("[measure] 4 clients × 20 000 hellos, never reading: daemon VmRSS \(before) KiB → \(after) KiB; requests before disconnect: \(sent); \(seconds) s")
        for (index, count) in sent.enumerated() {
            let count = try XCTUnwrap(count, "client \(index) sent 20 000 requests without reading a reply and was never disconnected")
            // What the daemon read is what fit in its socket and the client's (backpressure):
            // far fewer than were sent.
            XCTAssertLessThan(count, 20_000, "client \(index)")
        }
        XCTAssertLessThan(after - before, 24 * 1024, "RSS grew \(after - before) KiB")
        XCTAssertTrue(daemon.log.contains("client-stall-ms"), "the log names the bound: \(daemon.log.suffix(2000))")
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testAClientReadingSlowlyIsNotCutOffAndGetsEveryReply() throws {
        let daemon = try RunningDaemon(environment: ["MRLEASED_CLIENT_STALL_MS": "300", "MRLEASED_LOG_LEVEL": "debug"])
        defer { if testRun?.hasSucceeded == false { print(daemon.log.suffix(3000)) } }
        let socket = try UnixSocket.connect(path: daemon.socketPath)
        // 400 requests pipelined, more than its socket holds replies for; then read slowly,
        // a pause of 100 ms (a third of the bound) after every 50 replies.
        let raw = socket.descriptor.rawValue
        let writer = Thread {
            for id in 1...400 {
                let packet = Codec.encode(.stats, id: UInt64(id))
                guard packet.withUnsafeBytes({ Glibc.send(raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == packet.count else { return }
            }
        }
        writer.start()
        var ids: [UInt64] = []
        while ids.count < 400 {
            guard case .message(let message) = try socket.receive(maxSize: Codec.maxMessageBytes + 1) else { break }
            guard case .reply(let reply) = try Codec.decodeServerMessage(message.bytes) else { continue }
            ids.append(reply.id ?? 0)
            if ids.count % 50 == 0 { usleep(100_000) }
        }
        XCTAssertEqual(ids, Array(1...400), "every reply, in order")
        XCTAssertEqual(daemon.stop(), 0)
    }
}
