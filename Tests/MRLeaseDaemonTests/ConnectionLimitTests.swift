import Foundation
import Glibc
import LinuxFile
import MRLeaseProtocol
import TestSupport
import XCTest

/// Connection limits: a client past one is told so (a reply naming the limit), never left in
/// silence; one uid cannot take every slot from the others.
final class ConnectionLimitTests: XCTestCase {
    static let hello = #"{"v":1,"type":"hello","id":1,"versions":[1]}"#

    /// Connects and waits for the hello reply: the daemon has accepted and serves this client.
    func servedConnection(_ daemon: RunningDaemon) throws -> (UnixSocket, String) {
        let socket = try UnixSocket.connect(path: daemon.socketPath)
        let reply = try XCTUnwrap(try DaemonWire.ask(socket, .hello(.init())), "no hello reply")
        return (socket, reply)
    }

    func testOneUIDFillsItsQuotaAndAnotherUIDStillConnectsAndIsServed() throws {
        let daemon = try RunningDaemon(environment: ["MRLEASED_SOCKET_MODE": "0666", "MRLEASED_MAX_CONNECTIONS": "8",
                                                     "MRLEASED_MAX_CONNECTIONS_PER_UID": "3"])
        XCTAssertEqual(chmod(daemon.scratch.path, 0o755), 0)
        let held = try (0..<3).map { _ in try servedConnection(daemon) }
        XCTAssertTrue(held[0].1.contains(#""maxConnectionsPerUid":3"#), "hello reports the per-uid limit: \(held[0].1)")
        XCTAssertTrue(held[0].1.contains(#""maxConnections":8"#), "and the global one: \(held[0].1)")

        // The uid's fourth connection is refused, with a reply that names the limit.
        let fourth = try UnixSocket.connect(path: daemon.socketPath)
        let refusal = try XCTUnwrap(try DaemonWire.receive(fourth), "no refusal: \(daemon.log.suffix(1000))")
        XCTAssertTrue(refusal.contains(#""code":"too-many-requests""#), refusal)
        XCTAssertTrue(refusal.contains("max-connections-per-uid"), refusal)
        XCTAssertNil(try DaemonWire.receive(fourth, within: 1), "the refused connection is closed")

        // Another uid still connects and is served.
        let other = try OtherUserClient().run(socket: daemon.socketPath, requests: [Self.hello], in: daemon.scratch)
        XCTAssertTrue(other.first?.contains(#""result""#) == true, "uid 65534: \(other)")
        _ = held
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testAClientPastTheGlobalLimitIsToldWhyNotLeftInSilence() throws {
        let daemon = try RunningDaemon(environment: ["MRLEASED_MAX_CONNECTIONS": "2"])
        let held = try (0..<2).map { _ in try servedConnection(daemon) }
        let third = try UnixSocket.connect(path: daemon.socketPath)
        let refusal = try XCTUnwrap(try DaemonWire.receive(third), "no refusal")
        XCTAssertTrue(refusal.contains(#""code":"too-many-requests""#), refusal)
        XCTAssertTrue(refusal.contains("max-connections"), refusal)
        _ = held
        XCTAssertEqual(daemon.stop(), 0)
    }
}

/// The socket the daemon binds itself is 0660, as mrleased.socket makes it, with the
/// configured group: who may connect at all is a group's privilege, not every account's.
final class SocketPermissionTests: XCTestCase {
    func socketStat(_ daemon: RunningDaemon) throws -> stat {
        var info = stat()
        XCTAssertEqual(stat(daemon.socketPath, &info), 0)
        return info
    }

    func testTheDaemonsOwnSocketIs0660WithTheConfiguredGroup() throws {
        let plain = try RunningDaemon()
        let info = try socketStat(plain)
        XCTAssertEqual(info.st_mode & 0o777, 0o660, String(info.st_mode & 0o777, radix: 8))
        XCTAssertEqual(info.st_gid, getegid(), "no socket-group: the daemon's own group")
        XCTAssertEqual(plain.stop(), 0)

        let grouped = try RunningDaemon(environment: ["MRLEASED_SOCKET_GROUP": "4242"])
        let groupedInfo = try socketStat(grouped)
        XCTAssertEqual(groupedInfo.st_mode & 0o777, 0o660)
        XCTAssertEqual(groupedInfo.st_gid, 4242)
        XCTAssertEqual(grouped.stop(), 0)
    }

    func testAnUnknownSocketGroupStopsTheDaemonNamingIt() throws {
        XCTAssertThrowsError(try RunningDaemon(environment: ["MRLEASED_SOCKET_GROUP": "no-such-group-mrleased"])) { error in
            XCTAssertTrue("\(error)".contains("no group named 'no-such-group-mrleased'"), "\(error)")
        }
    }
}
