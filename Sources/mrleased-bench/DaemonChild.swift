import Foundation
import LinuxFile

/// The real `mrleased` binary, started by the benchmark as a child on its own socket, with
/// the settings a fresh install has (`--config /dev/null`) and logs quiet enough that no log
/// line is part of what we time.
final class DaemonChild {
    let process = Process()
    let socketPath: String

    /// Starts `binary` and waits (at most 20 s) until its socket accepts a connection.
    init(binary: String, socketPath: String, device: String?) throws(BenchError) {
        self.socketPath = socketPath
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--socket", socketPath, "--config", "/dev/null", "--log-level", "warning"]
            + (device.map { ["--device", $0] } ?? [])
        // The per-uid byte quota defaults to the client's RLIMIT_MEMLOCK, which would cap the
        // registration benchmark's regions at a few MiB: the benchmark times the quota check,
        // not its refusal.
        var environment = ProcessInfo.processInfo.environment
        environment["MRLEASED_MAX_BYTES_PER_UID"] = "\(UInt64(1) << 50)"
        process.environment = environment
        do { try process.run() } catch { throw BenchError("start \(binary): \(error)") }
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if let probe = try? UnixSocket.connect(path: socketPath) {
                try? probe.close()
                return
            }
            guard process.isRunning else { break }
            usleep(10_000)
        }
        if process.isRunning { process.terminate() }
        throw BenchError("\(binary) did not accept on \(socketPath) within 20 s (exit status \(process.isRunning ? "none yet" : "\(process.terminationStatus)"))")
    }

    var pid: Int32 { process.processIdentifier }

    /// SIGTERM, then the exit status (0 after a clean shutdown).
    func stop() -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        process.terminate()
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { _ = stop() }

    /// `mrleased` next to this executable (both are products of one `swift build`).
    static func siblingBinary() -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("mrleased").path
    }
}
