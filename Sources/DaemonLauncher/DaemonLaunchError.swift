/// Why a daemon child is not running as asked: the test that started it fails with this
/// message (a daemon that does not start is a failure, never a skip).
public enum DaemonLaunchError: Error, CustomStringConvertible {
    /// The executable could not be started at all (Foundation's `Process.run` refused, or the
    /// stderr it was to get could not be set up).
    case notStarted(executable: String, reason: String)
    /// It started but did not do `awaited` within `seconds`: it exited first (`exitStatus`) or
    /// was killed still running (nil). `log` is its stderr; nil when that is ours.
    case notReady(executable: String, awaited: String, seconds: Double, exitStatus: Int32?, log: String?)

    public var description: String {
        switch self {
        case .notStarted(let executable, let reason):
            return "could not start \(executable): \(reason)"
        case .notReady(let executable, let awaited, let seconds, let exitStatus, let log):
            let limit = seconds == seconds.rounded() ? "\(Int(seconds)) s" : "\(seconds) s"
            let what = exitStatus.map { "\(executable) exited with status \($0) before it would \(awaited)" }
                ?? "\(executable) did not \(awaited) within \(limit) (killed)"
            let output = log.map { $0.isEmpty ? "its stderr was empty" : "its stderr:\n\($0)" } ?? "its stderr is this process's"
            return "\(what); \(output)"
        }
    }
}
