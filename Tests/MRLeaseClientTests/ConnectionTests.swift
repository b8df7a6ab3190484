import Foundation
import LinuxFile
import MRLeaseClient
import TestSupport
import XCTest

/// Connections as the daemon sees them: counted by peer, dropped on close, ended by SIGTERM.
final class ConnectionTests: XCTestCase {
    func testConnectToAMissingSocketNamesThePathENOENTAndWhatToDo() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.path + "/none.sock"
        XCTAssertThrowsError(try MRLeaseClient.connect(path: path)) { error in
            XCTAssertEqual((error as? ClientError)?.errno, .noSuchFileOrDirectory)
            XCTAssertEqual("\(error)", "connect \(path): ENOENT — is mrleased running? (systemctl start mrleased.socket)")
        }
    }

    func testConnectToASocketNobodyListensOnIsECONNREFUSED() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.path + "/stale.sock"
        // Bound and closed: the file stays, nobody accepts.
        try UnixSocket.listen(path: path).close()
        XCTAssertThrowsError(try MRLeaseClient.connect(path: path)) { error in
            XCTAssertEqual((error as? ClientError)?.errno, .connectionRefused)
            XCTAssertTrue("\(error)".contains("connect \(path): ECONNREFUSED — is mrleased running?"), "\(error)")
        }
    }

    func testConnectWithoutAPathHonoursMRLEASED_SOCKET() throws {
        let daemon = try RunningDaemon()
        setenv("MRLEASED_SOCKET", daemon.socketPath, 1)
        defer { unsetenv("MRLEASED_SOCKET") }
        let client = try MRLeaseClient.connect()
        XCTAssertEqual(client.socketPath, daemon.socketPath)
        XCTAssertEqual(try client.stats().clients, 1)
    }

    func testStatsCountClientsAndADisconnectLowersTheCount() throws {
        let daemon = try RunningDaemon()
        let first = try MRLeaseClient.connect(path: daemon.socketPath)
        let second = try MRLeaseClient.connect(path: daemon.socketPath)
        XCTAssertEqual(try first.stats().clients, 2)
        second.close()
        // The daemon sees the close on its next loop turn.
        var clients: UInt64 = 0
        for _ in 0..<100 {
            clients = try first.stats().clients
            if clients == 1 { break }
            usleep(10_000)
        }
        XCTAssertEqual(clients, 1)
    }

    func testSIGTERMEndsTheDaemonWithStatus0Within2sRemovingItsSocketAndDisconnectingClients() throws {
        let daemon = try RunningDaemon()
        let client = try MRLeaseClient.connect(path: daemon.socketPath)
        try client.hello()
        XCTAssertEqual(daemon.stop(SIGTERM, within: 2), 0, daemon.log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: daemon.socketPath), "the socket file is removed")
        XCTAssertThrowsError(try client.nextEvent(timeout: .seconds(2))) { error in
            guard case .disconnected = error as? ClientError else { return XCTFail("\(error)") }
        }
    }
}
