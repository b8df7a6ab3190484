import Foundation
import LinuxFile
import XCTest

/// The built `mrleased` on its own socket in a scratch directory, for tests that drive it as a
/// client would. Its stderr goes to a file (`log`). Killed when released, so a failing test
/// never leaves a daemon behind.
public final class RunningDaemon {
    public let process = Process()
    public let scratch: ScratchDirectory
    public let socketPath: String
    let logPath: String

    /// Starts `mrleased --socket <scratch>/s.sock --config /dev/null` plus `arguments`, with
    /// the test runner's MRLEASED_* and systemd variables removed, and waits until the socket
    /// accepts a connection.
    /// `environment`: settings (`MRLEASED_*`) for this daemon only.
    public init(arguments: [String] = [], environment: [String: String] = [:]) throws {
        scratch = try ScratchDirectory(name: "mrleased-client")
        socketPath = scratch.path + "/s.sock"
        logPath = scratch.path + "/mrleased.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Subprocess.builtProduct("mrleased"))
        process.arguments = ["--socket", socketPath, "--config", "/dev/null"] + arguments
        process.environment = ProcessInfo.processInfo.environment.filter { key, _ in
            !key.hasPrefix("MRLEASED_") && !key.hasPrefix("LISTEN_") && !key.hasPrefix("WATCHDOG_")
                && key != "NOTIFY_SOCKET" && key != "JOURNAL_STREAM"
        }.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: logPath)
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, process.isRunning {
            if let probe = try? UnixSocket.connect(path: socketPath) {
                try? probe.close()
                return
            }
            usleep(10_000)
        }
        throw TestFailure("mrleased did not start on \(socketPath): \(log)")
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    public var pid: Int32 { process.processIdentifier }

    /// What the daemon has written to stderr so far.
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Sends `signal` and returns the exit status, or nil if it is still running after `seconds`.
    public func stop(_ signal: Int32 = SIGTERM, within seconds: Double = 2) -> Int32? {
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        return process.isRunning ? nil : process.terminationStatus
    }
}
