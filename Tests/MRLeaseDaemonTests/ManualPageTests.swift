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

    struct PageSetting {
        var key: String
        /// As the page writes it; "" for `Pq empty`.
        var defaultValue: String
        /// The item's lines after its `.It` line.
        var body: String
    }

    /// The `.It Cm KEY No = Ar DEFAULT` (or `Pq empty`) items of mrleased.conf(5)'s SETTINGS.
    func settings() throws -> [PageSetting] {
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
            return PageSetting(key: head[1], defaultValue: value, body: lines.dropFirst().joined(separator: "\n"))
        }
    }

    func testConfPageListsEverySettingWithItsDefaultVariableAndFlag() throws {
        let items = try settings()
        XCTAssertEqual(items.map(\.key), DaemonConfiguration.keys, "the page's settings, in the table's order")
        // The page and the table agree, row by row: default, variable, flag, hello field.
        for (item, row) in zip(items, DaemonConfiguration.settings) {
            XCTAssertEqual(item.defaultValue, row.defaultValue, "\(row.key): the page's default is not the table's")
            XCTAssertTrue(item.body.contains(".Ev \(row.variable) "), "\(row.key): the page does not name \(row.variable)")
            if let hello = row.hello {
                XCTAssertTrue(item.body.contains("Ql \(hello)"), "\(row.key): the page does not say hello reports it as \(hello)")
            }
            var parsed = DaemonConfiguration()
            XCTAssertNoThrow(try parsed.set(row.key, row.defaultValue, source: "table"), row.key)
            XCTAssertEqual(parsed, DaemonConfiguration(), "\(row.key): the table's default '\(row.defaultValue)' is not the code's")
        }
        let help = try Subprocess.run(RunningDaemon.executable, ["--help"])
        XCTAssertEqual(help.status, 0, help.stderr)
        let helpText = help.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        let flags = Set(help.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," || $0 == "|" || $0 == "[" || $0 == "]" })
            .filter { $0.hasPrefix("--") }.map(String.init))
        XCTAssertTrue(flags.contains("--quiesce-ms"), "the flags were found in: \(help.stdout)")
        for item in items {
            var parsed = DaemonConfiguration()
            XCTAssertNoThrow(try parsed.set(item.key, item.defaultValue, source: "mrleased.conf(5)"), item.key)
            XCTAssertEqual(parsed, DaemonConfiguration(), "\(item.key): the page's default '\(item.defaultValue)' is not the code's")
            let variable = "MRLEASED_" + item.key.uppercased().replacingOccurrences(of: "-", with: "_")
            XCTAssertTrue(item.body.contains(".Ev \(variable) "), "\(item.key): the page does not name \(variable)")
            let row = try XCTUnwrap(DaemonConfiguration.setting(item.key))
            XCTAssertEqual(flags.contains("--" + item.key), row.flag != nil, "\(item.key): mrleased's flags and the table disagree")
            if let help = row.flag {
                XCTAssertTrue(helpText.contains(help.split(whereSeparator: \.isWhitespace).joined(separator: " ")),
                              "\(item.key): --help does not show the table's help '\(help)'")
            }
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

/// `hello` against the table of keys: each row that names a `hello` field is reported there.
final class SettingTableTests: XCTestCase {
    func testHelloReportsEverySettingTheTableSaysItReports() throws {
        let daemon = try InProcessDaemon()
        let client = try daemon.connect()
        client.reading = false  // the reply is read here, as bytes
        try client.socket.send(Codec.encode(.hello(.init(clientName: "table")), id: 1))
        var text = ""
        daemon.drive { () -> Bool in
            if case .message(let message)? = try? client.socket.receive(maxSize: Codec.maxMessageBytes) {
                text = String(decoding: message.bytes, as: UTF8.self)
            }
            return !text.isEmpty
        }
        XCTAssertTrue(text.contains("\"limits\":{"), "no hello reply: \(text)")
        let limits = try XCTUnwrap(text.components(separatedBy: "\"limits\":{").last?.components(separatedBy: "}").first, text)
        let reported = DaemonConfiguration.settings.compactMap(\.hello)
        XCTAssertGreaterThanOrEqual(reported.count, 10)
        for field in reported { XCTAssertTrue(limits.contains("\"\(field)\":"), "hello's limits lack \(field): \(limits)") }
    }
}
