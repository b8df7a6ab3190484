import Foundation
import LinuxFile
import MRLeaseClient
import SystemPackage
import TestSupport
import XCTest

/// A daemon that dies leaves its lease on the client's open file; the client releases it. On
/// the host (no RDMA device) the daemon is a stand-in that does what mrleased does to the fd:
/// takes a write lease on the open file it received and answers the register.
final class DaemonDeathTests: XCTestCase {
    /// Accepts one connection, takes a write lease on the fd that comes with the first packet
    /// (as mrleased does, on the same open file description), sends the canned reply, and then
    /// either keeps the connection (`hold`) or closes it while living on (`drop`).
    static let standIn = """
        import fcntl, json, os, signal, socket, sys, time
        path, mode, reply = sys.argv[1], sys.argv[2], json.loads(bytes.fromhex(sys.argv[3]))
        signal.signal(signal.SIGIO, signal.SIG_IGN)  # a break's signal must not end us
        if os.path.exists(path):
            os.unlink(path)  # a killed predecessor's
        server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server.bind(path)
        server.listen()
        connection, _ = server.accept()
        request, fds, _, _ = socket.recv_fds(connection, 65536, 1)
        fcntl.fcntl(fds[0], 1024, fcntl.F_WRLCK)  # F_SETLEASE
        reply["id"] = json.loads(request)["id"]
        connection.send(json.dumps(reply).encode())
        if mode == "drop":
            connection.close()
        time.sleep(600)
        """

    /// The stand-in daemon, killed when released; with its scratch directory and data file.
    final class StandIn {
        let process: Process
        let scratch: ScratchDirectory
        let path: String
        var socketPath: String { scratch.path + "/s.sock" }
        var pid: Int32 { process.processIdentifier }

        init(process: Process, scratch: ScratchDirectory, path: String) {
            self.process = process
            self.scratch = scratch
            self.path = path
        }

        deinit {
            if process.isRunning { kill(pid, SIGKILL) }
            process.waitUntilExit()
        }
    }

    /// A stand-in on a new scratch directory, or on `predecessor`'s socket and file.
    func startStandIn(_ mode: String, after predecessor: StandIn? = nil) throws -> StandIn {
        let scratch = try predecessor?.scratch ?? ScratchDirectory()
        let path = try predecessor?.path ?? scratch.file("data", size: 65536)
        let reply = Codec.encode(Reply(id: 1, .register(Registration(
            region: 7, lkey: 1, rkey: 2, address: 0x1000, length: 4096, strategy: .pinned,
            strategyReason: "stand-in", device: "none", backing: .pageCache))))
        let hex = reply.map { String(format: "%02x", $0) }.joined()
        let socketPath = scratch.path + "/s.sock"
        let process = try Subprocess.start("/usr/bin/python3", ["-c", Self.standIn, socketPath, mode, hex])
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: socketPath) { usleep(10_000) }
        return StandIn(process: process, scratch: scratch, path: path)
    }

    /// Connects, retrying while the stand-in has bound but not yet listened.
    func connect(_ standIn: StandIn) throws -> MRLeaseClient {
        var attempts = 0
        while true {
            do {
                return try MRLeaseClient.connect(path: standIn.socketPath)
            } catch {
                attempts += 1
                guard error.errno == .connectionRefused, attempts < 200 else { throw error }
                usleep(10_000)
            }
        }
    }

    /// Whether a writer would have to wait for a lease: an `O_NONBLOCK` open for write fails
    /// with `EWOULDBLOCK` instead of waiting for the break.
    func writerWouldWait(_ path: String) -> Bool {
        do {
            try FileDescriptor.open(FilePath(path), .writeOnly, options: [.nonBlocking]).close()
            return false
        } catch {
            return (error as? Errno) == .wouldBlock
        }
    }

    func testAfterKill9TheClientReleasesTheLeaseTheDaemonLeftAndATruncateTakesUnderASecond() throws {
        let standIn = try startStandIn("hold")
        let path = standIn.path
        let client = try connect(standIn)
        let region = try client.register(path: path, offset: 0, length: 4096, access: [.read, .write]).region
        let kept = try XCTUnwrap(client.file(region: region))
        XCTAssertEqual(try FileLease(fd: kept).holder()?.pid, standIn.pid, "the stand-in's lease is on the client's open file")

        kill(standIn.pid, SIGKILL)
        standIn.process.waitUntilExit()
        // The daemon is gone, its lease is not: it belongs to the open file the client holds.
        XCTAssertTrue(writerWouldWait(path), "the lease went with the daemon, before the client did anything")

        XCTAssertThrowsError(try client.nextEvent(timeout: .seconds(5))) { error in
            guard case .disconnected(_, let end) = error as? ClientError else { return XCTFail("\(error)") }
            XCTAssertFalse(end.shutdownAnnounced)
            XCTAssertEqual(end.leases, [LeaseCleanup(regions: [region], outcome: .released(holder: standIn.pid))])
            XCTAssertTrue("\(error)".contains("released the lease mrleased (pid \(standIn.pid), exited) left on the file of region \(region)"), "\(error)")
        }
        XCTAssertNil(try FileLease(fd: kept).holder())
        XCTAssertFalse(try readProcFile("/proc/locks").contains(":\(try FileFacts.inspect(kept, mount: false).inode) "), "/proc/locks still lists a lease on the file")
        let start = ContinuousClock.now
        XCTAssertEqual(truncate(path, 4096), 0, "truncate: errno \(errno)")
        let took = ContinuousClock.now - start
        print("truncate after kill -9 and the client's release: \(took)")
        XCTAssertLessThan(took, .seconds(1))
        // Every later call fails the same way, and releases nothing twice.
        XCTAssertThrowsError(try client.stats()) { error in
            guard case .disconnected(_, let end) = error as? ClientError else { return XCTFail("\(error)") }
            XCTAssertEqual(end, client.connectionEnd)
        }
    }

    func testADaemonThatDropsTheClientButRunsKeepsItsLease() throws {
        let standIn = try startStandIn("drop")
        let path = standIn.path
        let client = try connect(standIn)
        let region = try client.register(path: path, offset: 0, length: 4096, access: [.read, .write]).region

        XCTAssertThrowsError(try client.nextEvent(timeout: .seconds(5))) { error in
            guard case .disconnected(_, let end) = error as? ClientError else { return XCTFail("\(error)") }
            XCTAssertEqual(end.leases, [LeaseCleanup(regions: [region], outcome: .heldByRunningProcess(standIn.pid))])
            XCTAssertTrue("\(error)".contains("left the lease on the file of region \(region) to pid \(standIn.pid), which still runs"), "\(error)")
        }
        // A live daemon may guard other connections' regions of this open file with it.
        XCTAssertEqual(try FileLease(fd: try XCTUnwrap(client.file(region: region))).holder()?.pid, standIn.pid)
        XCTAssertTrue(writerWouldWait(path))
    }

    func testRegisterByFDKeepsADuplicateSoTheClientCanReleaseAfterTheApplicationClosedItsFD() throws {
        let standIn = try startStandIn("hold")
        let path = standIn.path
        let client = try connect(standIn)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        let region = try client.register(fd: fd, offset: 0, length: 4096, access: [.read, .write]).region
        let kept = try XCTUnwrap(client.file(region: region))
        XCTAssertNotEqual(kept.rawValue, fd.rawValue)
        try fd.close()

        kill(standIn.pid, SIGKILL)
        standIn.process.waitUntilExit()
        XCTAssertThrowsError(try client.nextEvent(timeout: .seconds(5))) { error in
            guard case .disconnected(_, let end) = error as? ClientError else { return XCTFail("\(error)") }
            XCTAssertEqual(end.released.map(\.regions), [[region]])
        }
        XCTAssertFalse(writerWouldWait(path))
        // Deregistering closes the duplicate (the request itself fails: the daemon is gone).
        XCTAssertThrowsError(try client.deregister(region: region))
        XCTAssertNil(client.file(region: region))
    }

    func testReconnectAfterTheDaemonDiedRegistersTheKeptRangeAgainThroughTheKeptFile() throws {
        let first = try startStandIn("hold")
        let client = try connect(first)
        XCTAssertThrowsError(try client.reconnect()) { XCTAssertEqual(($0 as? ClientError)?.errno, .socketIsConnected) }
        let region = try client.register(path: first.path, offset: 0, length: 4096, access: [.read, .write]).region
        let kept = try XCTUnwrap(client.file(region: region))
        kill(first.pid, SIGKILL)
        first.process.waitUntilExit()
        XCTAssertThrowsError(try client.nextEvent(timeout: .seconds(5)))
        // Nothing listens on the socket yet (no socket unit keeps it): try again later.
        XCTAssertThrowsError(try client.reconnect()) { XCTAssertEqual(($0 as? ClientError)?.errno, .connectionRefused) }

        let second = try startStandIn("hold", after: first)
        for _ in 0..<200 where try FileLease(fd: kept).holder() == nil {
            guard (try? client.reconnect()) == nil else { break }
            usleep(10_000)
        }
        XCTAssertNil(client.connectionEnd)
        XCTAssertEqual(client.file(region: region)?.rawValue, kept.rawValue, "the same open file, registered again")
        XCTAssertEqual(try FileLease(fd: kept).holder()?.pid, second.pid)
    }
}
