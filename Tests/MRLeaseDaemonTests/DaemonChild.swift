import Foundation
import Glibc
import TestSupport
import XCTest

/// The built `mrleased` (or a launcher that execs it, such as `systemd-socket-activate`) as a
/// child process with a chosen environment and its stderr collected. Killed when released, so
/// a failing test never leaves a daemon behind.
final class DaemonChild {
    static var executable: String { Subprocess.builtProduct("mrleased") }

    let process = Process()
    private let log = OutputCollector()

    /// Starts `executable` (the daemon by default). The test runner's own systemd and mrleased
    /// variables are dropped first, so a test run under systemd or with MRLEASED_* set sees
    /// only what the test passes in `environment`. With `stderrAsJournal`, $JOURNAL_STREAM is
    /// the device and inode of the pipe the child's stderr goes to, as systemd sets it for
    /// the journal's stream socket.
    init(_ arguments: [String], executable: String = DaemonChild.executable, environment: [String: String] = [:],
         stderrAsJournal: Bool = false) throws {
        let inherited = ProcessInfo.processInfo.environment.filter { key, _ in
            !key.hasPrefix("MRLEASED_") && !key.hasPrefix("LISTEN_") && !key.hasPrefix("WATCHDOG_")
                && key != "NOTIFY_SOCKET" && key != "JOURNAL_STREAM"
        }
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        var environment = environment
        if stderrAsJournal {
            var status = stat()
            guard fstat(pipe.fileHandleForWriting.fileDescriptor, &status) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
            environment["JOURNAL_STREAM"] = "\(status.st_dev):\(status.st_ino)"
        }
        process.environment = inherited.merging(environment) { $1 }
        process.standardError = pipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        try? pipe.fileHandleForWriting.close()
        log.drain(dup(pipe.fileHandleForReading.fileDescriptor))
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    var pid: Int32 { process.processIdentifier }
    var stderr: String { log.text }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// The exit status once the process has exited, or nil if it is still running after `seconds`.
    func exitStatus(within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        guard !process.isRunning else { return nil }
        return process.terminationStatus
    }

    /// Waits until stderr contains `text`; false after `seconds` or once the process has exited
    /// without printing it.
    func waitForStderr(_ text: String, within seconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if stderr.contains(text) { return true }
            if !process.isRunning { usleep(50_000); return stderr.contains(text) }
            usleep(10_000)
        }
        return false
    }
}

/// Bytes read from a pipe by a background thread, so a chatty child never blocks on it.
final class OutputCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [UInt8] = []

    var text: String { lock.withLock { String(decoding: bytes, as: UTF8.self) } }

    func drain(_ fd: Int32) {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                lock.withLock { bytes.append(contentsOf: buffer[0..<count]) }
            }
            close(fd)
        }
        thread.start()
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
