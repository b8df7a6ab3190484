import Foundation
import TestSupport
import XCTest

/// `mrlease status`, `list`, `stats`, `register`, `deregister` against the real daemon on a
/// host without an RDMA device, as a user or a script runs them.
final class ClientCommandTests: XCTestCase {
    let mrlease = Subprocess.builtProduct("mrlease")

    func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Subprocess {
        let inherited = ProcessInfo.processInfo.environment.filter { key, _ in !key.hasPrefix("MRLEASED_") }
        return try Subprocess.run(mrlease, arguments, environment: inherited.merging(environment) { $1 })
    }

    func json(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text)
    }

    func testStatusShowsTheDaemonItsMissingDevicesAndCounters() throws {
        try Facility.requireNoRDMADevice()
        let daemon = try RunningDaemon()
        let result = try run(["status", "--socket", daemon.socketPath])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("mrleased 0."), result.stdout)
        XCTAssertTrue(result.stdout.contains("at \(daemon.socketPath)"), result.stdout)
        XCTAssertTrue(result.stdout.contains("none: every registration is refused (strategy-unavailable)"), result.stdout)
        XCTAssertTrue(result.stdout.contains("clients     1"), result.stdout)
    }

    func testStatusFindsTheSocketThroughMRLEASED_SOCKET() throws {
        let daemon = try RunningDaemon()
        let result = try run(["status", "--json"], environment: ["MRLEASED_SOCKET": daemon.socketPath])
        XCTAssertEqual(result.status, 0, result.stderr)
        let status = try json(result.stdout)
        XCTAssertEqual(status["socket"] as? String, daemon.socketPath)
        let strategies = (status["hello"] as? [String: Any])?["strategies"] as? [String]
        if Facility.rdmaDevice.value == nil {
            XCTAssertEqual(strategies, [], "no device, no strategy")
        } else {
            XCTAssertEqual(strategies?.contains("pinned"), true, "\(strategies ?? [])")
        }
        XCTAssertEqual((status["stats"] as? [String: Any])?["clients"] as? Int, 1)
    }

    func testListJSONOfAnIdleDaemonHasNoRegions() throws {
        let daemon = try RunningDaemon()
        let result = try run(["list", "--json", "--socket", daemon.socketPath])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stdout, "{\"regions\":[]}\n")
        XCTAssertEqual(try run(["list", "--socket", daemon.socketPath]).stdout, "no regions\n")
    }

    func testStatsJSONIsTheProtocolsStatsObject() throws {
        let daemon = try RunningDaemon()
        let result = try run(["stats", "--json", "--socket", daemon.socketPath])
        XCTAssertEqual(result.status, 0, result.stderr)
        let stats = try json(result.stdout)
        XCTAssertEqual(stats["clients"] as? Int, 1)
        XCTAssertEqual(stats["regions"] as? Int, 0)
        XCTAssertEqual(stats["bytesByStrategy"] as? [String: Int], ["odp": 0, "pinned": 0])
        XCTAssertNotNil(stats["breakToUnlockMicros"] as? [String: Any])
        XCTAssertEqual(stats["layoutChangesHandled"] as? Int, 0)
        XCTAssertEqual(stats["layoutChecks"] as? Int, 0)
    }

    func testStatsShowsTheLayoutCounters() throws {
        let daemon = try RunningDaemon()
        let result = try run(["stats", "--socket", daemon.socketPath])
        XCTAssertEqual(result.status, 0, result.stderr)
        let rows = result.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        XCTAssertTrue(rows.contains(["layout-changes-handled", "0"]), result.stdout)
        XCTAssertTrue(rows.contains(["layout-checks", "0"]), result.stdout)
    }

    func testUnreachableDaemonExits1NamingTheSocketAndErrno() throws {
        let scratch = try ScratchDirectory()
        let missing = scratch.path + "/missing.sock"
        for command in ["status", "list", "stats"] {
            let result = try run([command, "--socket", missing])
            XCTAssertEqual(result.status, 1, command)
            XCTAssertEqual(result.stdout, "", command)
            XCTAssertTrue(result.stderr.contains("mrlease \(command): connect \(missing): ENOENT — is mrleased running?"), result.stderr)
        }
    }

    func testStoppedDaemonsLeftoverSocketIsECONNREFUSED() throws {
        let daemon = try RunningDaemon()
        // SIGKILL: the daemon cannot remove its socket file, so nobody listens behind it.
        XCTAssertNotNil(daemon.stop(SIGKILL))
        let result = try run(["status", "--socket", daemon.socketPath])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("connect \(daemon.socketPath): ECONNREFUSED"), result.stderr)
    }

    func testRegisterOnAHostWithoutRDMAExits1WithStrategyUnavailable() throws {
        try Facility.requireNoRDMADevice()
        let daemon = try RunningDaemon()
        let scratch = try ScratchDirectory()
        let file = try scratch.file("data", size: 1 << 16)
        let result = try run(["register", file, "--length", "64K", "--access", "read,write", "--socket", daemon.socketPath])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("mrlease register: mrleased refused register: strategy-unavailable"), result.stderr)
        XCTAssertTrue(result.stderr.contains("(ENODEV)"), result.stderr)
    }

    func testRegisterReportsTheDaemonsChecksBeforeTheDevice() throws {
        let daemon = try RunningDaemon()
        let scratch = try ScratchDirectory()
        let file = try scratch.file("data", size: 8192)
        let misaligned = try run(["register", file, "--offset", "100", "--length", "4096", "--socket", daemon.socketPath])
        XCTAssertEqual(misaligned.status, 1)
        XCTAssertTrue(misaligned.stderr.contains("bad-alignment: offset 100"), misaligned.stderr)
        let tooLong = try run(["register", file, "--length", "1M", "--socket", daemon.socketPath])
        XCTAssertEqual(tooLong.status, 1)
        XCTAssertTrue(tooLong.stderr.contains("range-out-of-file"), tooLong.stderr)
    }

    func testRegisterCountChecksEveryRangeAndNamesTheOneOutsideTheFile() throws {
        let daemon = try RunningDaemon()
        let scratch = try ScratchDirectory()
        let file = try scratch.file("data", size: 3 * 4096)
        let result = try run(["register", file, "--length", "4096", "--count", "4", "--socket", daemon.socketPath])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("refused register-batch: range-out-of-file: range 3: range [12288, 16384)"), result.stderr)
    }

    func testRegisterUsageErrorsExit2() throws {
        for arguments in [["register", "/etc/hostname"], ["register", "/etc/hostname", "--length", "4096", "--access", "exec"],
                          ["register", "/etc/hostname", "--length", "4096", "--strategy", "fast"],
                          ["register", "/etc/hostname", "--length", "4096", "--count", "0"],
                          ["register", "/etc/hostname", "--length", "4096", "--count", "65"],
                          ["register", "/etc/hostname", "--offset", "18446744073709547520", "--length", "4096", "--count", "2"]] {
            let result = try run(arguments + ["--socket", "/nonexistent.sock"])
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
        }
    }

    func testDeregisterFromAnotherProcessIsUnknownRegionAndSaysWhy() throws {
        let daemon = try RunningDaemon()
        let result = try run(["deregister", "3", "--socket", daemon.socketPath])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("unknown-region"), result.stderr)
        XCTAssertTrue(result.stderr.contains("Regions belong to the connection that registered them"), result.stderr)
    }
}
