import DaemonLauncher
import Foundation
import Glibc
import TestSupport
import XCTest

/// DaemonChild with `/bin/sh` standing in for the daemon: what "not ready" says, that no child
/// outlives its owner, and what the child inherits.
final class DaemonChildTests: XCTestCase {
    func notReady(_ start: () throws -> DaemonChild) throws -> (exitStatus: Int32?, log: String?, description: String) {
        do {
            _ = try start()
        } catch let error as DaemonLaunchError {
            guard case .notReady(_, _, _, let exitStatus, let log) = error else { throw error }
            return (exitStatus, log, error.description)
        }
        throw TestFailure("the child was ready")
    }

    /// Whether a process with this pid exists (a zombie would still count).
    func exists(_ pid: Int32) -> Bool { kill(pid, 0) == 0 || errno != ESRCH }

    func testAChildThatExitsBeforeItsSocketAcceptsFailsWithItsStatusAndLog() throws {
        let scratch = try ScratchDirectory(name: "daemon-child")
        let failure = try notReady {
            try DaemonChild(executable: "/bin/sh", arguments: ["-c", "echo 'bad.conf:2: unknown key' >&2; exit 3"],
                            readyWhen: .accepting(socketPath: scratch.path + "/s.sock"))
        }
        XCTAssertEqual(failure.exitStatus, 3)
        XCTAssertEqual(failure.log, "bad.conf:2: unknown key\n")
        XCTAssertTrue(failure.description.contains("exited with status 3 before it would accept a connection on \(scratch.path)/s.sock (connect: ENOENT)"),
                      failure.description)
        XCTAssertTrue(failure.description.hasSuffix("its stderr:\nbad.conf:2: unknown key\n"), failure.description)
    }

    func testAChildNotReadyInTimeIsKilledAndItsLogSaysHowFarItGot() throws {
        let scratch = try ScratchDirectory(name: "daemon-child")
        let log = scratch.path + "/child.log"
        let failure = try notReady {
            try DaemonChild(executable: "/bin/sh", arguments: ["-c", "echo $$ > \(scratch.path)/pid; echo starting >&2; exec sleep 60"],
                            stderr: .file(log), readyWhen: .logged("listening"), within: 0.3)
        }
        XCTAssertNil(failure.exitStatus)
        XCTAssertEqual(failure.log, "starting\n")
        XCTAssertTrue(failure.description.contains("did not log \"listening\" within 0.3 s (killed)"), failure.description)
        let pid = try XCTUnwrap(Int32(String(contentsOfFile: scratch.path + "/pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        XCTAssertFalse(exists(pid), "the child outlived the failed start")
    }

    func testAReleasedChildIsKilled() throws {
        var child: DaemonChild? = try DaemonChild(executable: "/bin/sleep", arguments: ["60"])
        let pid = try XCTUnwrap(child?.pid)
        XCTAssertTrue(exists(pid))
        child = nil
        XCTAssertFalse(exists(pid), "the released child is still there")
    }

    /// The children exec: Foundation's Process sees an exit only once every process holding its
    /// end of the child's status socket has gone, so a lingering grandchild would delay it.
    func testStopReturnsTheExitStatusOrNilWhileTheChildRunsOn() throws {
        let stubborn = try DaemonChild(executable: "/bin/sh", arguments: ["-c", "trap '' TERM; echo trapped >&2; exec sleep 60"],
                                       readyWhen: .logged("trapped"))
        XCTAssertNil(stubborn.stop(SIGTERM, within: 0.2))
        XCTAssertEqual(stubborn.stop(SIGKILL, within: 5), SIGKILL, "Process reports the signal that ended it")
        let clean = try DaemonChild(executable: "/bin/sh", arguments: ["-c", "trap 'exit 0' TERM; echo trapped >&2; while :; do sleep 0.01; done"],
                                    readyWhen: .logged("trapped"))
        XCTAssertEqual(clean.stop(), 0, clean.log)
    }

    /// systemd.exec(5): $JOURNAL_STREAM is stderr's st_dev:st_ino, which the child can stat.
    func testJournalStderrIsAPipeThatJournalStreamNames() throws {
        let child = try DaemonChild(executable: "/bin/sh",
                                    arguments: ["-c", "echo \"$JOURNAL_STREAM\" >&2; stat -L -c %d:%i /proc/self/fd/2 >&2; echo done >&2"],
                                    environment: ["JOURNAL_STREAM": "1:1"], stderr: .journal, readyWhen: .logged("done\n"))
        let lines = child.log.split(separator: "\n")
        XCTAssertEqual(lines.count, 3, child.log)
        XCTAssertEqual(lines.first, lines.dropFirst().first, "JOURNAL_STREAM does not name the child's stderr")
        XCTAssertNotEqual(lines.first, "1:1", "the caller's value was not replaced")
    }

    func testServiceVariablesOfTheRunnerAreDroppedUnlessAllAreInherited() throws {
        setenv("MRLEASED_QUIESCE_MS", "7", 1)
        setenv("NOTIFY_SOCKET", "/run/systemd/notify", 1)
        defer { unsetenv("MRLEASED_QUIESCE_MS"); unsetenv("NOTIFY_SOCKET") }
        func variables(_ inheritance: DaemonChild.Inheritance) throws -> [Substring] {
            let child = try DaemonChild(executable: "/bin/sh", arguments: ["-c", "env >&2; echo done >&2"],
                                        environment: ["MRLEASED_MAX_REGIONS_PER_UID": "1"], inheriting: inheritance,
                                        readyWhen: .logged("done\n"))
            return child.log.split(separator: "\n")
        }
        let clean = try variables(.withoutServiceVariables)
        XCTAssertTrue(clean.contains("MRLEASED_MAX_REGIONS_PER_UID=1"), "\(clean)")
        XCTAssertFalse(clean.contains { $0.hasPrefix("MRLEASED_QUIESCE_MS=") || $0.hasPrefix("NOTIFY_SOCKET=") }, "\(clean)")
        XCTAssertTrue(clean.contains { $0.hasPrefix("PATH=") }, "\(clean)")
        let all = try variables(.all)
        XCTAssertTrue(all.contains("MRLEASED_QUIESCE_MS=7") && all.contains("NOTIFY_SOCKET=/run/systemd/notify"), "\(all)")
        XCTAssertTrue(all.contains("MRLEASED_MAX_REGIONS_PER_UID=1"), "\(all)")
    }
}
