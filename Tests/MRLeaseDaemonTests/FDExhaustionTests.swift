import Foundation
import Glibc
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

/// The built daemon out of file descriptors, past accepting (AcceptBackoffTests covers that):
/// what its clients are told, and how many fds it gives itself.
final class FDExhaustionTests: XCTestCase {
    func prlimit(_ pid: Int32, _ limits: String) throws {
        let run = try Subprocess.run("/usr/bin/prlimit", ["--pid", "\(pid)", "--nofile=\(limits)"])
        XCTAssertEqual(run.status, 0, run.stderr)
    }

    func testARegisterWhoseFDTheDaemonCouldNotReceiveIsToldSoNotTooManyFDs() throws {
        let daemon = try RunningDaemon()
        let scratch = try ScratchDirectory()
        let file = try FileDescriptor.open(FilePath(try scratch.file("data", size: 65536)), .readOnly)
        defer { try? file.close() }
        let client = try UnixSocket.connect(path: daemon.socketPath)
        XCTAssertNotNil(try DaemonWire.ask(client, .hello(.init())), "served before the limit")

        // The soft limit at the lowest free fd number: every number below it is in use, so the
        // kernel cannot install the passed fd, and recvmsg says MSG_CTRUNC with none delivered.
        let open = Set(DaemonWire.openFDs(daemon.pid))
        let limit = (0...).first { !open.contains($0) }!
        try prlimit(daemon.pid, "\(limit):")
        let register = Request.register(.init(offset: 0, length: 4096, access: [.read]))
        let starved = try XCTUnwrap(try DaemonWire.ask(client, register, id: 2, fds: [file]), "no reply out of fds")
        print("[measure] register out of fds: \(starved)")
        XCTAssertTrue(starved.contains(#""code":"fd-not-received""#), "the client sent one fd: \(starved)")
        XCTAssertFalse(starved.contains("too-many-fds"), starved)

        // With fds free the same request goes through the rules.
        try prlimit(daemon.pid, "\(limit + 64):")
        let served = try XCTUnwrap(try DaemonWire.ask(client, register, id: 3, fds: [file]))
        XCTAssertTrue(DaemonWire.passedTheRules(served), served)

        // A client that really sends two fds is still told too-many-fds.
        let twice = try XCTUnwrap(try DaemonWire.ask(client, register, id: 4, fds: [file, file]))
        XCTAssertTrue(twice.contains(#""code":"too-many-fds""#), twice)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// "Max open files  SOFT  HARD  files" of /proc/PID/limits.
    func openFileLimits(_ pid: Int32) throws -> (soft: String, hard: String) {
        let text = try readProcFile("/proc/\(pid)/limits")
        let line = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        let fields = line.dropFirst("Max open files".count).split(separator: " ")
        return (String(fields[0]), String(fields[1]))
    }

    func testTheDaemonRaisesItsSoftFDLimitToTheHardLimitAtStartAndLogsBoth() throws {
        let own = try openFileLimits(getpid())
        // The daemon inherits a soft limit of 256 under the test's hard limit.
        try prlimit(getpid(), "256:\(own.hard)")
        let daemon: RunningDaemon
        do {
            defer { try? prlimit(getpid(), "\(own.soft):\(own.hard)") }
            daemon = try RunningDaemon()
        }
        let limits = try openFileLimits(daemon.pid)
        print("[measure] daemon RLIMIT_NOFILE after start: soft \(limits.soft), hard \(limits.hard) (started with soft 256)")
        XCTAssertEqual(limits.soft, own.hard, "soft raised to the hard limit")
        XCTAssertEqual(limits.hard, own.hard)
        XCTAssertTrue(daemon.log.contains("RLIMIT_NOFILE") && daemon.log.contains("256"), "logs the limit it found: \(daemon.log.prefix(2000))")
        XCTAssertEqual(daemon.stop(), 0)
    }
}
