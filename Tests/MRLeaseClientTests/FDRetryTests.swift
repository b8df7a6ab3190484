import Foundation
import LinuxFile
import MRLeaseClient
import SystemPackage
import TestSupport
import XCTest

/// `fd-not-received` (the daemon was out of file descriptors) is retried with the fd sent
/// again, a bounded number of times, then thrown. The daemon is a stand-in that refuses the
/// first `failures` requests so, then succeeds, and logs each request it got with its fd count.
final class FDRetryTests: XCTestCase {
    static let script = """
        import json, os, socket, sys
        path, log, failures = sys.argv[1], sys.argv[2], int(sys.argv[3])
        refusal, success = (json.loads(bytes.fromhex(a)) for a in sys.argv[4:6])
        server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server.bind(path + ".tmp")
        server.listen()
        os.rename(path + ".tmp", path)  # there once it accepts
        connection, _ = server.accept()
        for attempt in range(1, 1000):
            request, fds, _, _ = socket.recv_fds(connection, 65536, 1)
            if not request:
                break
            for fd in fds:
                os.close(fd)
            request = json.loads(request)
            with open(log, "a") as f:
                f.write("%s %d\\n" % (request["type"], len(fds)))
            reply = dict(refusal if attempt <= failures else success, id=request["id"])
            connection.send(json.dumps(reply).encode())
        """

    /// A stand-in that refuses `failures` requests with `fd-not-received` and then answers
    /// `success`; the client connected to it, the data file, and the stand-in's request log.
    func standIn(failures: Int, success: ReplyResult) throws -> (MRLeaseClient, String, () throws -> [String]) {
        let scratch = try ScratchDirectory()
        let path = try scratch.file("data", size: 65536)
        let socketPath = scratch.path + "/s.sock", log = scratch.path + "/requests"
        let refusal = Codec.encode(Reply(id: 1, type: .register, error: ProtocolError(.fdNotReceived, "stand-in: out of fds")))
        let hex = { (bytes: [UInt8]) in bytes.map { String(format: "%02x", $0) }.joined() }
        let process = try Subprocess.start("/usr/bin/python3", ["-c", Self.script, socketPath, log, "\(failures)",
                                                               hex(refusal), hex(Codec.encode(Reply(id: 1, success)))])
        addTeardownBlock { _ = scratch; if process.isRunning { kill(process.processIdentifier, SIGKILL) }; process.waitUntilExit() }
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: socketPath) { usleep(10_000) }
        let requests = { try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init) }
        return (try MRLeaseClient.connect(path: socketPath), path, requests)
    }

    static let registration = Registration(region: 7, lkey: 1, rkey: 2, address: 0x1000, length: 4096, strategy: .pinned,
                                           strategyReason: "stand-in", device: "none", backing: .pageCache)

    func testRegisterRetriesFDNotReceivedWithTheFDSentAgainAndSucceeds() throws {
        let (client, path, requests) = try standIn(failures: 2, success: .register(Self.registration))
        let start = ContinuousClock.now
        let region = try client.register(path: path, offset: 0, length: 4096, access: [.read])
        let took = ContinuousClock.now - start
        XCTAssertEqual(region, Self.registration)
        XCTAssertEqual(try requests(), ["register 1", "register 1", "register 1"], "two refusals, the fd each time, then the success")
        XCTAssertGreaterThanOrEqual(took, .milliseconds(60), "paused 10 then 50 ms")
        XCTAssertNotNil(client.file(region: region.region), "the fd is kept for the region, as without a retry")
    }

    func testRegisterBatchThrowsFDNotReceivedAfterTheBoundedRetries() throws {
        let (client, path, requests) = try standIn(failures: 99, success: .registerBatch([Self.registration]))
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        let start = ContinuousClock.now
        XCTAssertThrowsError(try client.registerBatch(fd: fd, ranges: [.init(offset: 0, length: 4096, access: [.read])])) { error in
            XCTAssertEqual(error as? ClientError, .refused(.registerBatch, ProtocolError(.fdNotReceived, "stand-in: out of fds")))
        }
        let took = ContinuousClock.now - start
        XCTAssertEqual(try requests(), Array(repeating: "register-batch 1", count: 4), "the first try and one retry per delay")
        XCTAssertGreaterThanOrEqual(took, .milliseconds(310), "paused 10, 50 and 250 ms")
        XCTAssertEqual(client.fdNotReceivedRetryDelays.count, 3)
    }

    func testNoDelaysMeansNoRetry() throws {
        let (client, path, requests) = try standIn(failures: 1, success: .register(Self.registration))
        client.fdNotReceivedRetryDelays = []
        XCTAssertThrowsError(try client.register(path: path, offset: 0, length: 4096, access: [.read])) { error in
            XCTAssertEqual((error as? ClientError)?.code, .fdNotReceived)
        }
        XCTAssertEqual(try requests(), ["register 1"])
        // The refusal was final for that call only: the next one is answered.
        XCTAssertEqual(try client.register(path: path, offset: 0, length: 4096, access: [.read]), Self.registration)
    }
}
