import DaemonLauncher
import Foundation
import MRLeaseDaemon
import MRLeaseProtocol
import LinuxFile
import TestSupport
import XCTest

/// Config/mrleased.conf, and the order settings override each other in the real binary.
final class ConfigurationTests: XCTestCase {
    static let shipped = SystemdUnitTests.config.appendingPathComponent("mrleased.conf")

    func testShippedConfigFileParsesToTheDefaults() throws {
        let text = try String(contentsOf: Self.shipped, encoding: .utf8)
        var parsed = DaemonConfiguration()
        try parsed.apply(file: text, name: Self.shipped.path)
        XCTAssertEqual(parsed, DaemonConfiguration())
    }

    func testShippedConfigFileDocumentsEveryKey() throws {
        let text = try String(contentsOf: Self.shipped, encoding: .utf8)
        let lines = text.split(separator: "\n")
        for key in DaemonConfiguration.keys {
            XCTAssertTrue(lines.contains { $0.hasPrefix("\(key) =") }, "\(key) is not set in \(Self.shipped.path)")
        }
    }

    func testLeaseOthersListsTakeNumbersAndNamesAndAnUnknownNameIsAnError() throws {
        var parsed = DaemonConfiguration()
        try parsed.apply(file: "lease-others-uids = root, 1000\nlease-others-groups = 4242,root\n", name: "test.conf")
        XCTAssertEqual(parsed.leaseOthersUIDs, [0, 1000])
        XCTAssertEqual(parsed.leaseOthersGroups, [0, 4242])
        XCTAssertThrowsError(try parsed.apply(file: "lease-others-groups = no-such-group-mrleased\n", name: "test.conf")) { error in
            XCTAssertTrue("\(error)".contains("test.conf:1: lease-others-groups: 'no-such-group-mrleased' is neither a number nor a known name"), "\(error)")
        }
        try parsed.apply(environment: ["MRLEASED_LEASE_OTHERS_UIDS": ""])
        XCTAssertEqual(parsed.leaseOthersUIDs, [], "empty: only owners and root")
    }

    func testAQueuedBytesBoundBelowOnePacketIsAnError() throws {
        var parsed = DaemonConfiguration()
        XCTAssertThrowsError(try parsed.apply(file: "max-queued-bytes-per-client = 4096\n", name: "test.conf")) { error in
            XCTAssertTrue("\(error)".contains("max-queued-bytes-per-client must be at least 65536"), "\(error)")
        }
        try parsed.apply(file: "max-queued-bytes = 65536\n", name: "test.conf")
        XCTAssertEqual(parsed.maxQueuedBytes, 65536)
    }

    func testEmptyDeviceMeansTheFirstDevice() throws {
        var parsed = DaemonConfiguration()
        try parsed.apply(file: "device = rxe0\ndevice =\n", name: "test.conf")
        XCTAssertNil(parsed.device)
    }

    /// The quiesce time the daemon reports in `hello`, started with these settings.
    func quiesceReported(file: String, environment: [String: String] = [:], flags: [String] = []) throws -> UInt64? {
        let scratch = try ScratchDirectory(name: "mrleased-config")
        let config = scratch.path + "/mrleased.conf"
        try file.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = scratch.path + "/s.sock"
        let daemon = try DaemonChild(executable: RunningDaemon.executable, arguments: ["--socket", socket, "--config", config] + flags,
                                     environment: environment, readyWhen: .accepting(socketPath: socket), within: 10)
        let client = try UnixSocket.connect(path: socket)
        try client.send(Codec.encode(.hello(.init()), id: 1))
        guard case .message(let message) = try client.receive(maxSize: Codec.maxMessageBytes),
              case .reply(let reply) = try Codec.decodeServerMessage(message.bytes),
              case .success(.hello(let hello)) = reply.outcome else { return nil }
        daemon.signal(SIGTERM)
        XCTAssertEqual(daemon.exitStatus(within: 2), 0)
        return hello.limits.quiesceMillis
    }

    func testFlagOverridesEnvironmentWhichOverridesTheFile() throws {
        let file = "# test\nquiesce-ms = 111\n"
        XCTAssertEqual(try quiesceReported(file: file), 111)
        XCTAssertEqual(try quiesceReported(file: file, environment: ["MRLEASED_QUIESCE_MS": "222"]), 222)
        XCTAssertEqual(try quiesceReported(file: file, environment: ["MRLEASED_QUIESCE_MS": "222"], flags: ["--quiesce-ms", "333"]), 333)
    }

    func failure(file: String, environment: [String: String] = [:]) throws -> (status: Int32?, stderr: String, path: String) {
        let scratch = try ScratchDirectory(name: "mrleased-config")
        let config = scratch.path + "/bad.conf"
        try file.write(toFile: config, atomically: true, encoding: .utf8)
        // Started, no more: the daemon is expected to refuse the file and exit.
        let daemon = try DaemonChild(executable: RunningDaemon.executable, arguments: ["--socket", scratch.path + "/s.sock", "--config", config],
                                     environment: environment)
        let status = daemon.exitStatus(within: 10)
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.path + "/s.sock"))
        _ = daemon.waitForLog("\n", within: 1)
        return (status, daemon.log, config)
    }

    func testUnknownKeyStopsTheDaemonNamingFileAndLine() throws {
        let result = try failure(file: "quiesce-ms = 100\nquiesce-msec = 5\n")
        XCTAssertNotNil(result.status)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("\(result.path):2: unknown key 'quiesce-msec'"), result.stderr)
    }

    func testBadNumberStopsTheDaemonSayingWhichKey() throws {
        let result = try failure(file: "\n\nrestore-backoff-ms = soon\n")
        XCTAssertNotEqual(result.status ?? 0, 0)
        XCTAssertTrue(result.stderr.contains("\(result.path):3: restore-backoff-ms must be a number, got 'soon'"), result.stderr)
    }

    func testBadEnvironmentNumberNamesTheVariable() throws {
        let result = try failure(file: "", environment: ["MRLEASED_QUIESCE_MS": "12ms"])
        XCTAssertNotEqual(result.status ?? 0, 0)
        XCTAssertTrue(result.stderr.contains("MRLEASED_QUIESCE_MS: quiesce-ms must be a number, got '12ms'"), result.stderr)
    }
}
