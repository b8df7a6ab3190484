import Foundation
import Glibc
import LinuxFile
import SystemPackage

/// A started `mrleased` (or a launcher that execs it, such as `systemd-socket-activate`), owned
/// by whoever started it: every test target and the benchmark start the daemon through this one
/// type. Killed with SIGKILL when released, so a failing test or an aborted benchmark never
/// leaves a daemon behind; `stop` is the graceful way out.
public final class DaemonChild {
    /// Where the child's stderr goes; `log` reads it back.
    public enum StandardError: Sendable {
        /// A file (created or truncated), still readable after the child has gone.
        case file(String)
        /// A pipe drained by a background thread, so a chatty child never blocks on it.
        case pipe
        /// A pipe whose st_dev:st_ino is put in $JOURNAL_STREAM, as systemd does for the
        /// journal's stream socket: the daemon then believes its stderr is the journal.
        case journal
        /// This process's own stderr (the benchmark's terminal); `log` is then empty.
        case inherited
    }

    /// Which of this process's variables the child starts with, before `environment`.
    public enum Inheritance: Sendable {
        case all
        /// All but the daemon's settings (MRLEASED_*) and systemd's (LISTEN_*, WATCHDOG_*,
        /// NOTIFY_SOCKET, JOURNAL_STREAM): a run under systemd or with MRLEASED_* set must not
        /// change what a test's daemon does.
        case withoutServiceVariables
    }

    /// What "started" means: what `init` waits for before it returns.
    public enum Readiness: Sendable {
        /// Running; the caller watches for what it tests itself (READY=1, an exit status).
        case spawned
        /// The socket at the path accepts a connection. The probe is closed at once; the daemon
        /// counts it as a connection until its next loop turn sees the close.
        case accepting(socketPath: String)
        /// The log contains the text (not with `.inherited`, whose log is empty).
        case logged(String)
    }

    public let executable: String
    private let process = Process()
    private let stderr: StandardError
    private let collected = OutputCollector()

    /// Starts `executable` with `arguments` and waits until it is `readyWhen`, at most
    /// `seconds`. A child that exits first, or is not ready in time, is killed and the error
    /// carries its log: a daemon that does not start fails the caller, never skips.
    /// `environment`: set on top of what the child inherits (`MRLEASED_*` settings, systemd's).
    /// `standardInput`: the child's fd 0 (the same open file), else /dev/null.
    public init(executable: String, arguments: [String], environment: [String: String] = [:],
                inheriting inheritance: Inheritance = .withoutServiceVariables, stderr: StandardError = .pipe,
                standardInput: FileDescriptor? = nil,
                readyWhen readiness: Readiness = .spawned, within seconds: Double = 20) throws(DaemonLaunchError) {
        self.executable = executable
        self.stderr = stderr
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = standardInput.map { FileHandle(fileDescriptor: $0.rawValue, closeOnDealloc: false) } ?? FileHandle.nullDevice
        var environment = environment
        let pipe = try Self.connect(stderr, of: process, environment: &environment, executable: executable)
        process.environment = Self.inherited(inheritance).merging(environment) { $1 }
        do { try process.run() } catch { throw .notStarted(executable: executable, reason: "\(error)") }
        if let pipe {
            // Our copy of the write end would keep the pipe open after the child exits.
            try? pipe.fileHandleForWriting.close()
            collected.drain(dup(pipe.fileHandleForReading.fileDescriptor))
        }
        try wait(until: readiness, within: seconds)
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// What the child has written to stderr so far (empty when it is `.inherited`).
    public var log: String {
        switch stderr {
        case .file(let path):
            // A missing or unreadable log file reads as empty: it only decorates a message.
            return (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        case .pipe, .journal: return collected.text
        case .inherited: return ""
        }
    }

    public func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// The exit status once the child has exited, or nil if it is still running after `seconds`.
    public func exitStatus(within seconds: Double) -> Int32? {
        _ = poll(within: seconds) { !process.isRunning }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// Sends `signal` (unless the child has already exited) and returns the exit status, or
    /// nil if it is still running after `seconds` (then the release kills it).
    public func stop(_ signal: Int32 = SIGTERM, within seconds: Double = 10) -> Int32? {
        if process.isRunning { kill(process.processIdentifier, signal) }
        return exitStatus(within: seconds)
    }

    /// Waits until the log contains `text`; false after `seconds`, or once the child has exited
    /// without writing it (all of it: the pipe's reader has caught up).
    public func waitForLog(_ text: String, within seconds: Double = 10) -> Bool {
        if poll(within: seconds, { log.contains(text) || !process.isRunning }), log.contains(text) { return true }
        guard !process.isRunning else { return false }
        return logOnceExited.contains(text)
    }

    /// The log of a child that has exited, once the pipe's reader has read what it wrote; at
    /// most a second later, since a grandchild may still hold the pipe open.
    private var logOnceExited: String {
        _ = collected.waitForEnd(within: 1)
        return log
    }

    /// Polls `condition` every 10 ms until it holds or `seconds` pass.
    private func poll(within seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    private func wait(until readiness: Readiness, within seconds: Double) throws(DaemonLaunchError) {
        let awaited: String
        switch readiness {
        case .spawned:
            return
        case .accepting(let path):
            var refused: Errno?
            var accepted = false
            _ = poll(within: seconds) {
                do throws(Errno) {
                    let probe = try UnixSocket.connect(path: path)
                    // The probe only had to connect; how its close goes does not matter.
                    try? probe.close()
                    accepted = true
                } catch {
                    refused = error
                }
                return accepted || !process.isRunning
            }
            if accepted { return }
            awaited = "accept a connection on \(path)" + (refused.map { " (connect: \($0.symbolicName))" } ?? "")
        case .logged(let text):
            if waitForLog(text, within: seconds) { return }
            awaited = "log \"\(text)\""
        }
        let status = process.isRunning ? nil : process.terminationStatus
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let log: String? = if case .inherited = stderr { nil } else { logOnceExited }
        throw .notReady(executable: executable, awaited: awaited, seconds: seconds, exitStatus: status, log: log)
    }

    /// Points the child's stderr where asked; returns the pipe to drain, if it is one.
    private static func connect(_ stderr: StandardError, of process: Process, environment: inout [String: String],
                                executable: String) throws(DaemonLaunchError) -> Pipe? {
        switch stderr {
        case .file(let path):
            guard FileManager.default.createFile(atPath: path, contents: nil),
                  let handle = FileHandle(forWritingAtPath: path) else {
                throw .notStarted(executable: executable, reason: "cannot create its log file \(path)")
            }
            process.standardError = handle
            return nil
        case .pipe, .journal:
            let pipe = Pipe()
            if case .journal = stderr {
                var status = stat()
                guard fstat(pipe.fileHandleForWriting.fileDescriptor, &status) == 0 else {
                    throw .notStarted(executable: executable, reason: "fstat of its stderr pipe: \(Errno(rawValue: errno).symbolicName)")
                }
                environment["JOURNAL_STREAM"] = "\(status.st_dev):\(status.st_ino)"
            }
            process.standardError = pipe
            return pipe
        case .inherited:
            return nil
        }
    }

    private static func inherited(_ inheritance: Inheritance) -> [String: String] {
        let all = ProcessInfo.processInfo.environment
        switch inheritance {
        case .all: return all
        case .withoutServiceVariables:
            return all.filter { key, _ in
                !key.hasPrefix("MRLEASED_") && !key.hasPrefix("LISTEN_") && !key.hasPrefix("WATCHDOG_")
                    && key != "NOTIFY_SOCKET" && key != "JOURNAL_STREAM"
            }
        }
    }
}
