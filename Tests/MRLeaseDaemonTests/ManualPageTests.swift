import Foundation
import MRLeaseDaemon
import MRLeaseProtocol
import TestSupport
import XCTest

/// docs/man's hand-written pages against the code they describe: mrleased.conf(5) against
/// DaemonConfiguration (keys, defaults, variables) and `mrleased --help` (flags),
/// mrleased-protocol(7) against MRLeaseProtocol's requests, events and error codes.
final class ManualPageTests: XCTestCase {
    static let directory = Subprocess.repositoryRoot + "/docs/man"

    struct Setting {
        var key: String
        /// As the page writes it; "" for `Pq empty`.
        var defaultValue: String
        /// The item's lines after its `.It` line.
        var body: String
    }

    /// The `.It Cm KEY No = Ar DEFAULT` (or `Pq empty`) items of mrleased.conf(5)'s SETTINGS.
    func settings() throws -> [Setting] {
        let page = try String(contentsOfFile: Self.directory + "/mrleased.conf.5", encoding: .utf8)
        let section = try XCTUnwrap(page.components(separatedBy: ".Sh SETTINGS\n").last?.components(separatedBy: "\n.El\n").first)
        return try section.components(separatedBy: "\n.It ").dropFirst().map { item in
            let lines = item.split(separator: "\n", omittingEmptySubsequences: false)
            let head = lines[0].split(separator: " ").map(String.init)
            guard head.count >= 5, head[0] == "Cm", head[2] == "No", head[3] == "=", head[4] == "Ar" || head[4] == "Pq" else {
                throw TestFailure("mrleased.conf(5): item '.It \(lines[0])' is not '.It Cm KEY No = Ar DEFAULT' or '... No = Pq empty'")
            }
            let value = head[4] == "Pq" ? "" : head[5...].joined(separator: " ")
            if head[4] == "Pq" { XCTAssertEqual(head[5...].joined(separator: " "), "empty", head[1]) }
            return Setting(key: head[1], defaultValue: value, body: lines.dropFirst().joined(separator: "\n"))
        }
    }

    func testConfPageListsEverySettingWithItsDefaultVariableAndFlag() throws {
        let items = try settings()
        XCTAssertEqual(items.map(\.key), DaemonConfiguration.keys, "the page's settings, in the code's order")
        let help = try Subprocess.run(RunningDaemon.executable, ["--help"])
        XCTAssertEqual(help.status, 0, help.stderr)
        let flags = Set(help.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," || $0 == "|" || $0 == "[" || $0 == "]" })
            .filter { $0.hasPrefix("--") }.map(String.init))
        XCTAssertTrue(flags.contains("--quiesce-ms"), "the flags were found in: \(help.stdout)")
        for item in items {
            var parsed = DaemonConfiguration()
            XCTAssertNoThrow(try parsed.set(item.key, item.defaultValue, source: "mrleased.conf(5)"), item.key)
            XCTAssertEqual(parsed, DaemonConfiguration(), "\(item.key): the page's default '\(item.defaultValue)' is not the code's")
            let variable = "MRLEASED_" + item.key.uppercased().replacingOccurrences(of: "-", with: "_")
            XCTAssertTrue(item.body.contains(".Ev \(variable) "), "\(item.key): the page does not name \(variable)")
            if flags.contains("--" + item.key) {
                XCTAssertTrue(item.body.contains(".Fl -\(item.key) "), "\(item.key): mrleased has --\(item.key); the page does not name it")
            } else {
                XCTAssertTrue(item.body.contains("\nno flag."), "\(item.key): mrleased has no --\(item.key); the page must say 'no flag.'")
                XCTAssertFalse(item.body.contains(".Fl -\(item.key)"), "\(item.key): the page names a flag mrleased does not have")
            }
        }
        // Every flag but --config, --help and --version sets a key, so none is left out of the page.
        for flag in flags.subtracting(["--config", "--help", "--version"]) {
            XCTAssertTrue(DaemonConfiguration.keys.contains(String(flag.dropFirst(2))), "mrleased \(flag) is not a setting of the page")
        }
    }

    func testProtocolPageNamesEveryRequestEventAndErrorCode() throws {
        let page = try String(contentsOfFile: Self.directory + "/mrleased-protocol.7", encoding: .utf8)
        for name in RequestType.allCases.map(\.rawValue) + ErrorCode.allCases.map(\.rawValue) {
            XCTAssertTrue(page.contains("\n.It Cm \(name)\n"), "mrleased-protocol(7) has no item for \(name)")
        }
        for event in Event.Name.allCases.map(\.rawValue) {
            XCTAssertTrue(page.contains("\n.Cm \(event)\n"), "mrleased-protocol(7) does not name the event \(event)")
        }
        XCTAssertTrue(page.contains("/usr/local/share/doc/mrleased/protocol.md"))
    }

    func testBothPagesRenderWithoutWarningsAndWithTheirNameLines() throws {
        for (file, name) in [("mrleased.conf.5", "mrleased.conf"), ("mrleased-protocol.7", "mrleased-protocol")] {
            let path = Self.directory + "/" + file
            let check = try Subprocess.run("/usr/bin/groff", ["-mandoc", "-ww", "-z", "-Tutf8", path])
            XCTAssertEqual(check.status, 0, file)
            XCTAssertEqual(check.stderr, "", "\(file): groff warns")
            let rendered = try Subprocess.run("/usr/bin/man", ["-l", path], environment: ["MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"])
            XCTAssertEqual(rendered.status, 0, rendered.stderr)
            XCTAssertTrue(rendered.stdout.contains("\(name) — "), "\(file) renders without its NAME line: \(rendered.stdout.prefix(400))")
        }
    }
}
