import DaemonLauncher
import Foundation

/// The built `mrleased` on its own socket in a scratch directory, for tests that drive it as a
/// client would. Its stderr goes to a file (`log`). Killed when released, so a failing test
/// never leaves a daemon behind.
public final class RunningDaemon {
    /// The `mrleased` of this build, beside the test bundle.
    public static var executable: String { Subprocess.builtProduct("mrleased") }

    public let scratch: ScratchDirectory
    public let socketPath: String
    private let child: DaemonChild

    /// Starts `mrleased --socket <scratch>/s.sock --config /dev/null` plus `arguments`, with
    /// the test runner's MRLEASED_* and systemd variables removed, and waits until the socket
    /// accepts a connection; throws, with the daemon's log, if it does not within 20 s.
    /// `environment`: settings (`MRLEASED_*`) for this daemon only. `socketPath`: another
    /// daemon's socket, to start a successor on it (the scratch directory is then unused).
    public init(arguments: [String] = [], environment: [String: String] = [:], socketPath: String? = nil) throws {
        scratch = try ScratchDirectory(name: "mrleased-client")
        self.socketPath = socketPath ?? scratch.path + "/s.sock"
        child = try DaemonChild(executable: Self.executable, arguments: ["--socket", self.socketPath, "--config", "/dev/null"] + arguments,
                                environment: environment, stderr: .file(scratch.path + "/mrleased.log"),
                                readyWhen: .accepting(socketPath: self.socketPath))
    }

    public var pid: Int32 { child.pid }

    /// What the daemon has written to stderr so far.
    public var log: String { child.log }

    /// Sends `signal` and returns the exit status, or nil if it is still running after `seconds`.
    public func stop(_ signal: Int32 = SIGTERM, within seconds: Double = 10) -> Int32? {
        child.stop(signal, within: seconds)
    }
}
