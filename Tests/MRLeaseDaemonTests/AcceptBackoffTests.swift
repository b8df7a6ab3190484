import Foundation
import Glibc
import LinuxFile
import MRLeaseProtocol
import TestSupport
import XCTest

/// The built daemon out of file descriptors: accept4 fails with EMFILE while connections
/// queue. It must pause accepting (the listener is level-triggered: going on would spin a
/// CPU), say so once per pause, and accept again once fds are free.
final class AcceptBackoffTests: XCTestCase {
    func openFDs(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }

    /// User plus system CPU time of `pid`, in seconds (/proc/PID/stat fields 14 and 15).
    func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try readProcFile("/proc/\(pid)/stat")
        let fields = stat[stat.index(after: try XCTUnwrap(stat.lastIndex(of: ")")))...].split(separator: " ")
        // Field 3 (state) is fields[0] here, so utime (14) is fields[11] and stime (15) fields[12].
        let ticks = try XCTUnwrap(Double(fields[11])) + XCTUnwrap(Double(fields[12]))
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    func pauses(in log: String) -> Int {
        log.components(separatedBy: "pausing accepts").count - 1
    }

    func testOutOfFDsItPausesAcceptingInsteadOfSpinningAndResumesWhenFDsFree() throws {
        let daemon = try RunningDaemon()
        let limit = openFDs(daemon.pid) + 6
        let prlimit = try Subprocess.run("/usr/bin/prlimit", ["--pid", "\(daemon.pid)", "--nofile=\(limit):\(limit)"])
        XCTAssertEqual(prlimit.status, 0, prlimit.stderr)

        // More connections than it has fds for: the rest wait in the listen backlog.
        let held = try (0..<16).map { _ in try UnixSocket.connect(path: daemon.socketPath) }
        let full = Date().addingTimeInterval(5)
        while pauses(in: daemon.log) == 0 && Date() < full { usleep(10_000) }
        XCTAssertEqual(pauses(in: daemon.log), 1, "accept4 should have failed with EMFILE: \(daemon.log.suffix(2000))")
        XCTAssertTrue(daemon.log.contains("EMFILE"), "the log names the errno: \(daemon.log.suffix(2000))")

        let cpuBefore = try cpuSeconds(daemon.pid)
        let pausesBefore = pauses(in: daemon.log)
        sleep(3)
        let cpu = try cpuSeconds(daemon.pid) - cpuBefore
        let logged = pauses(in: daemon.log) - pausesBefore
        print("[measure] out of fds for 3 s: daemon CPU \(String(format: "%.2f", cpu)) s, \(logged) pause lines")
        XCTAssertLessThan(cpu, 0.3, "a daemon retrying accept on a level-triggered listener spins a core (~3 s here)")
        XCTAssertGreaterThanOrEqual(logged, 2, "one line per 1 s pause: \(daemon.log.suffix(2000))")
        XCTAssertLessThanOrEqual(logged, 5, "one line per pause, not per attempt")

        // Connections the daemon had accepted close: a queued one is accepted and served.
        for socket in held.prefix(6) { try socket.close() }
        let waiting = held[8]
        try waiting.setNonBlocking(true)
        try waiting.send(Codec.encode(.stats, id: 1))
        var reply = UnixSocket.Received.wouldBlock
        let served = Date().addingTimeInterval(5)
        while case .wouldBlock = reply, Date() < served {
            usleep(10_000)
            reply = try waiting.receive(maxSize: Codec.maxMessageBytes + 1)
        }
        guard case .message(let message) = reply, case .reply(let answer) = try Codec.decodeServerMessage(message.bytes) else {
            return XCTFail("no reply within 5 s once fds were free: \(reply); \(daemon.log.suffix(2000))")
        }
        XCTAssertEqual(answer.id, 1)
        XCTAssertNotNil(try? answer.outcome.get())
        XCTAssertEqual(daemon.stop(), 0)
    }
}
