import Foundation
import TestSupport
import XCTest

/// `mrlease grant` and `mrlease revoke-grant` reach the `mrlease register` process holding the
/// region (its control socket); with none, they say so and how to get one. The granting itself
/// needs an RDMA device and a listening daemon: Scripts/demo-guest runs it in the guests.
final class GrantCommandTests: XCTestCase {
    func run(_ arguments: [String], runtime: String) throws -> Subprocess {
        var environment = ProcessInfo.processInfo.environment.filter { key, _ in !key.hasPrefix("MRLEASED_") }
        environment["XDG_RUNTIME_DIR"] = runtime
        return try Subprocess.run(Subprocess.builtProduct("mrlease"), arguments, environment: environment)
    }

    func testGrantWithoutAHolderNamesTheWayToGetOne() throws {
        let scratch = try ScratchDirectory()
        let result = try run(["grant", "5", "--max-peers", "2", "--socket", "/nonexistent.sock"], runtime: scratch.path)
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("no `mrlease register` process of this user holds region 5"), result.stderr)
        XCTAssertTrue(result.stderr.contains("mrlease register … --grant"), result.stderr)
    }

    func testRevokeGrantWithoutAHolderSaysSo() throws {
        let scratch = try ScratchDirectory()
        // A stale socket of a holder that exited is skipped, not an error.
        try FileManager.default.createDirectory(atPath: scratch.path + "/mrlease", withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
        FileManager.default.createFile(atPath: scratch.path + "/mrlease/register-1.sock", contents: nil)
        let result = try run(["revoke-grant", "7", "--socket", "/nonexistent.sock"], runtime: scratch.path)
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("no `mrlease register` process of this user holds grant 7"), result.stderr)
    }

    func testGrantRejectsUnknownAccess() throws {
        let scratch = try ScratchDirectory()
        let result = try run(["grant", "5", "--access", "fly"], runtime: scratch.path)
        XCTAssertEqual(result.status, 2, result.stderr)
    }
}
