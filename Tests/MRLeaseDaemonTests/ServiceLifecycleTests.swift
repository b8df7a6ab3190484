import DaemonLauncher
import Foundation
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

/// The daemon as systemd runs it: sd_notify on a socket the test listens on, socket activation
/// through systemd-socket-activate, and SIGTERM with clients connected.
final class ServiceLifecycleTests: XCTestCase {
    /// READY=1 (with STATUS= and MAINPID=), WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on
    /// SIGTERM, then exit 0 with the socket file removed.
    func assertNotifyLifecycle(_ notify: NotifyListener, scratch: ScratchDirectory) throws {
        let socket = scratch.path + "/s.sock"
        // Started, no more: READY=1 is what this test waits for.
        let daemon = try DaemonChild(executable: RunningDaemon.executable, arguments: ["--socket", socket, "--config", "/dev/null"],
                                     environment: ["NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000"])
        guard let ready = notify.receive(containing: "READY=1", within: 10) else {
            return XCTFail("no READY=1; stderr: \(daemon.log)")
        }
        let fields = ready.split(separator: "\n")
        XCTAssertTrue(fields.contains { $0.hasPrefix("STATUS=") && $0.count > 7 }, ready)
        XCTAssertTrue(fields.contains(Substring("MAINPID=\(daemon.pid)")), ready)
        XCTAssertTrue(FileManager.default.fileExists(atPath: socket))

        XCTAssertNotNil(notify.receive(containing: "WATCHDOG=1", within: 1), "no WATCHDOG=1 within 1 s of READY")

        daemon.signal(SIGTERM)
        XCTAssertNotNil(notify.receive(containing: "STOPPING=1", within: 2), "no STOPPING=1 after SIGTERM")
        XCTAssertEqual(daemon.exitStatus(within: 2), 0, daemon.log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: socket), "the daemon left its socket file")
    }

    func testNotifySocketPathGetsReadyWatchdogAndStopping() throws {
        let scratch = try ScratchDirectory(name: "mrleased-notify")
        try assertNotifyLifecycle(try NotifyListener(path: scratch.path + "/notify"), scratch: scratch)
    }

    func testAbstractNotifySocketGetsReadyWatchdogAndStopping() throws {
        let scratch = try ScratchDirectory(name: "mrleased-notify")
        let name = "mrleased-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        try assertNotifyLifecycle(try NotifyListener(abstract: name), scratch: scratch)
    }

    func testSocketActivatedDaemonServesTheInheritedListenerAndBindsNothing() throws {
        let launcher = "/usr/bin/systemd-socket-activate"
        guard FileManager.default.isExecutableFile(atPath: launcher) else { throw XCTSkip("needs systemd-socket-activate (apt-get install systemd)") }
        let scratch = try ScratchDirectory(name: "mrleased-activate")
        let activated = scratch.path + "/act.sock"
        // Were the listener not adopted, the daemon would bind this path instead.
        let own = scratch.path + "/own.sock"
        // systemd-socket-activate passes LISTEN_FDS/LISTEN_PID but only the variables named
        // with -E; it execs the daemon in place, so LISTEN_PID is the daemon's pid.
        let daemon = try DaemonChild(executable: launcher,
                                     arguments: ["--seqpacket", "-l", activated, RunningDaemon.executable, "--socket", own, "--config", "/dev/null"],
                                     readyWhen: .accepting(socketPath: activated), within: 10)
        let client = try UnixSocket.connect(path: activated)
        try client.send(Codec.encode(.hello(.init(clientName: "activation-test")), id: 1))
        guard case .message(let message) = try client.receive(maxSize: Codec.maxMessageBytes),
              case .reply(let reply) = try Codec.decodeServerMessage(message.bytes) else {
            return XCTFail("no reply; stderr: \(daemon.log)")
        }
        XCTAssertEqual(reply.id, 1)
        guard case .success(.hello(let hello)) = reply.outcome else { return XCTFail("\(reply)") }
        XCTAssertEqual(hello.version, Codec.version)
        XCTAssertTrue(daemon.waitForLog("fd=3"), "no `socket activation fd=3` line: \(daemon.log)")
        XCTAssertTrue(daemon.waitForLog("socket=fd 3 (socket activation)"), daemon.log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: own), "the daemon bound its own socket")

        daemon.signal(SIGTERM)
        XCTAssertEqual(daemon.exitStatus(within: 2), 0, daemon.log)
        // The listener was systemd's: the daemon leaves its path alone.
        XCTAssertTrue(FileManager.default.fileExists(atPath: activated))
    }

    func testSIGTERMEndsConnectedClientsStreamsAndExitsZero() throws {
        let scratch = try ScratchDirectory(name: "mrleased-shutdown")
        let socket = scratch.path + "/s.sock"
        let daemon = try DaemonChild(executable: RunningDaemon.executable, arguments: ["--socket", socket, "--config", "/dev/null"],
                                     readyWhen: .accepting(socketPath: socket), within: 10)
        let client = try UnixSocket.connect(path: socket)
        // A reply proves the daemon has accepted this connection before it is told to stop.
        try client.send(Codec.encode(.stats, id: 1))
        guard case .message = try client.receive(maxSize: Codec.maxMessageBytes) else { return XCTFail("no stats reply") }

        daemon.signal(SIGTERM)
        try client.setNonBlocking(true)
        var ended = false
        XCTAssertTrue(eventually(within: 2) {
            if case .endOfStream? = try? client.receive(maxSize: Codec.maxMessageBytes) { ended = true }
            return ended
        }, "the client never saw end-of-stream")
        XCTAssertEqual(daemon.exitStatus(within: 2), 0, daemon.log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: socket))
    }

    /// When stderr is the journal ($JOURNAL_STREAM names stderr's own device and inode) each
    /// line is `level message key=value…`: journald stamps time and unit itself. Elsewhere —
    /// the variable unset, or inherited from a service while stderr goes somewhere else —
    /// lines carry their own timestamp.
    func testLogLinesArePlainOnlyWhenJournalStreamNamesTheDaemonsStderr() throws {
        func logLines(environment: [String: String] = [:], stderrAsJournal: Bool = false) throws -> [Substring] {
            let scratch = try ScratchDirectory(name: "mrleased-logs")
            let socket = scratch.path + "/s.sock"
            let daemon = try DaemonChild(executable: RunningDaemon.executable,
                                         arguments: ["--socket", socket, "--config", "/dev/null", "--log-level", "info"],
                                         environment: environment, stderr: stderrAsJournal ? .journal : .pipe,
                                         readyWhen: .logged("listening"), within: 10)
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.exitStatus(within: 2), 0, daemon.log)
            XCTAssertTrue(daemon.waitForLog("stopped", within: 2), daemon.log)
            return daemon.log.split(separator: "\n")
        }
        let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        let journal = try logLines(stderrAsJournal: true)
        XCTAssertFalse(journal.isEmpty)
        for line in journal {
            let level = line.split(separator: " ", maxSplits: 1).first.map(String.init) ?? ""
            XCTAssertTrue(levels.contains(level), "not `level message`: \(line)")
            XCTAssertNil(line.firstMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d/), "timestamped: \(line)")
        }
        XCTAssertTrue(journal.contains { $0.hasPrefix("info listening ") && $0.contains(" socket=/") && $0.contains(" device=") }, "\(journal)")
        XCTAssertTrue(journal.contains("info stopped"), "\(journal)")

        // What a child of a journald-logged service sees: its parent's stream, not its stderr.
        let parentsStream = try JournalStreamTests.streamValue(of: "/dev/null")
        let inherited = try logLines(environment: ["JOURNAL_STREAM": parentsStream])
        XCTAssertFalse(inherited.isEmpty)
        XCTAssertTrue(inherited.allSatisfy { $0.firstMatch(of: /^\d{4}-\d\d-\d\dT/) != nil }, "\(inherited)")

        let terminal = try logLines()
        XCTAssertFalse(terminal.isEmpty)
        XCTAssertTrue(terminal.allSatisfy { $0.firstMatch(of: /^\d{4}-\d\d-\d\dT/) != nil }, "\(terminal)")
    }
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass.
func eventually(within seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}
