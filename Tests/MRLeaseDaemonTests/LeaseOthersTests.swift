import Foundation
import Glibc
import LinuxFile
import MRLeaseProtocol
import TestSupport
import XCTest

@testable import MRLeaseDaemon

/// The daemon holds CAP_LEASE; the kernel lets only a file's owner (or a CAP_LEASE holder)
/// lease a file. A client that can merely read someone else's file must not get a lease on it
/// through the daemon: every open for write by anyone would then wait out a lease break.
final class LeaseOthersTests: XCTestCase {
    static let nobody: UInt32 = 65534

    /// A root-owned 0644 file: uid 65534 can open it read-only, not lease it itself.
    func rootOwnedFile(in scratch: ScratchDirectory) throws -> String {
        let path = try scratch.file("root-owned", size: 65536)
        XCTAssertEqual(chmod(path, 0o644), 0)
        XCTAssertEqual(chmod(scratch.path, 0o755), 0)
        return path
    }

    static let register = #"{"v":1,"type":"register","id":1,"offset":0,"length":4096,"access":["read"]}"#

    /// Leases on `path`'s inode in /proc/locks (`LEASE ... maj:min:inode ...`).
    func leases(on path: String) throws -> Int {
        var info = stat()
        XCTAssertEqual(stat(path, &info), 0)
        let locks = try String(contentsOfFile: "/proc/locks", encoding: .utf8)
        return locks.split(separator: "\n").filter { line in
            line.contains("LEASE") && line.split(separator: " ").contains { $0.hasSuffix(":\(info.st_ino)") }
        }.count
    }

    /// `client` registers `file` with the in-process daemon (real leases, recorded MRs); returns
    /// the reply and the leases on the file while the client is still connected.
    func register(_ file: String, as client: OtherUserClient, daemon: InProcessDaemon) throws -> (reply: String, leases: Int) {
        let replies = daemon.scratch.path + "/replies-\(UUID().uuidString.prefix(8))"
        let process = try client.start(socket: daemon.daemon.configuration.socketPath, requests: [Self.register], file: file,
                                       replies: replies, holdSeconds: 5, in: daemon.scratch)
        defer {
            process.terminate()
            daemon.drive(seconds: 5) { !process.isRunning && daemon.daemon.sessions.isEmpty }
        }
        daemon.drive(seconds: 10) { ((try? OtherUserClient.replies(replies)) ?? []).count == 1 }
        guard let reply = try OtherUserClient.replies(replies).first else { throw TestFailure("no reply to the client as uid \(client.uid)") }
        return (reply, try leases(on: file))
    }

    func testAClientThatMayOnlyReadAnotherUsersFileIsRefusedAndNoLeaseIsTaken() throws {
        let daemon = try InProcessDaemon { $0.socketMode = 0o666 }
        let file = try rootOwnedFile(in: daemon.scratch)
        let (reply, leases) = try register(file, as: OtherUserClient(uid: Self.nobody, gid: Self.nobody), daemon: daemon)
        XCTAssertTrue(reply.contains(#""code":"access-denied""#), reply)
        XCTAssertTrue(reply.contains("uid 65534 does not own"), "the message says why: \(reply)")
        XCTAssertTrue(reply.contains("lease-others"), "the message says what to do: \(reply)")
        XCTAssertEqual(leases, 0, "the daemon leased a file for a client the kernel would refuse")
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }

    func testTheFilesOwnerMayRegisterAndTheDaemonLeasesItForThem() throws {
        let daemon = try InProcessDaemon { $0.socketMode = 0o666 }
        let file = try rootOwnedFile(in: daemon.scratch)
        XCTAssertEqual(chown(file, Self.nobody, Self.nobody), 0)
        let (reply, leases) = try register(file, as: OtherUserClient(uid: Self.nobody, gid: Self.nobody), daemon: daemon)
        XCTAssertTrue(reply.contains(#""result""#), reply)
        XCTAssertEqual(leases, 1, "the owner's registration holds a lease")
    }

    // MARK: The built daemon: on the host (no RDMA device) the refusal comes before "no device";
    // in the guests the owner's registration is made

    func daemonReply(_ file: String, as client: OtherUserClient, environment: [String: String] = [:]) throws -> String {
        let daemon = try RunningDaemon(environment: ["MRLEASED_SOCKET_MODE": "0666"].merging(environment) { $1 })
        XCTAssertEqual(chmod(daemon.scratch.path, 0o755), 0)
        let replies = try client.run(socket: daemon.socketPath, requests: [Self.register], file: file, in: daemon.scratch)
        XCTAssertEqual(daemon.stop(), 0)
        return try XCTUnwrap(replies.first, "no reply")
    }

    func testOutOfTheBoxOnlyTheOwnerGetsPastTheLeaseRuleAndTheRefusalComesBeforeNoDevice() throws {
        let scratch = try ScratchDirectory()
        let file = try rootOwnedFile(in: scratch)
        let denied = try daemonReply(file, as: OtherUserClient(uid: Self.nobody, gid: Self.nobody))
        XCTAssertTrue(denied.contains(#""code":"access-denied""#), denied)

        XCTAssertEqual(chown(file, Self.nobody, Self.nobody), 0)
        let owner = try daemonReply(file, as: OtherUserClient(uid: Self.nobody, gid: Self.nobody))
        XCTAssertTrue(DaemonWire.passedTheRules(owner), "the owner passes the rule: \(owner)")
    }

    func testAnAllowListedUIDOrGroupMayRegisterAnotherUsersFile() throws {
        let scratch = try ScratchDirectory()
        let file = try rootOwnedFile(in: scratch)
        let byUID = try daemonReply(file, as: OtherUserClient(uid: Self.nobody, gid: Self.nobody),
                                    environment: ["MRLEASED_LEASE_OTHERS_UIDS": "1000,65534"])
        XCTAssertTrue(DaemonWire.passedTheRules(byUID), byUID)

        // A supplementary group counts (from /proc/PID/status Groups:), not only the primary one.
        let byGroup = try daemonReply(file, as: OtherUserClient(uid: Self.nobody, gid: Self.nobody, groups: [4242]),
                                      environment: ["MRLEASED_LEASE_OTHERS_GROUPS": "4242"])
        XCTAssertTrue(DaemonWire.passedTheRules(byGroup), byGroup)
        let otherGroup = try daemonReply(file, as: OtherUserClient(uid: Self.nobody, gid: Self.nobody, groups: [4243]),
                                         environment: ["MRLEASED_LEASE_OTHERS_GROUPS": "4242"])
        XCTAssertTrue(otherGroup.contains(#""code":"access-denied""#), otherGroup)
    }
}
