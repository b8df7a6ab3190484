import DaemonLauncher
import Foundation
import LinuxFile

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

    /// Starts the daemon socket-activated on `listener`, bound at `socketPath`, the way a
    /// systemd socket unit does it (`LISTEN_FDS=1`, `LISTEN_PID` the daemon's, the listener as
    /// fd 3): the caller keeps the listener, so connections made while no daemon runs wait in
    /// its backlog for the next one. Waits until the daemon logs that it is listening.
    public init(activatedBy listener: UnixSocket, socketPath: String, arguments: [String] = [], environment: [String: String] = [:]) throws {
        scratch = try ScratchDirectory(name: "mrleased-client")
        self.socketPath = socketPath
        // The shell moves stdin to fd 3 and execs the daemon in place, so $$ is its pid.
        let script = #"exec 3<&0 </dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#
        child = try DaemonChild(executable: "/bin/sh",
                                arguments: ["-c", script, Self.executable, "--socket", socketPath, "--config", "/dev/null"] + arguments,
                                environment: environment, stderr: .file(scratch.path + "/mrleased.log"),
                                standardInput: listener.descriptor, readyWhen: .logged("listening"))
    }

    public var pid: Int32 { child.pid }

    /// What the daemon has written to stderr so far.
    public var log: String { child.log }

    /// Sends `signal` and returns the exit status, or nil if it is still running after `seconds`.
    public func stop(_ signal: Int32 = SIGTERM, within seconds: Double = 10) -> Int32? {
        child.stop(signal, within: seconds)
    }
}
