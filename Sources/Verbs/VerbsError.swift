import CRDMA
import Glibc
import LinuxFile
import SystemPackage

/// A verbs call failed. Carries the C function that failed and the errno it reported,
/// so a log line or a reply can say exactly what the kernel or provider refused.
public struct VerbsError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The C function that failed, e.g. `ibv_reg_mr`.
    public var op: String
    public var errno: Errno
    /// What was being done, when the call alone does not say (a device name, a QP state).
    public var detail: String?

    public init(op: String, errno: Errno, detail: String? = nil) {
        self.op = op
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        var text = "\(op) failed: \(errno.symbolicName) (\(errno.rawValue)) \(errno)"
        if let detail { text += " [\(detail)]" }
        return text
    }
}

/// Reads the thread's errno after a verbs call that returned NULL or -1.
@inline(__always)
func currentErrno() -> Errno { Errno(rawValue: Glibc.errno) }

/// Verbs calls that return an errno value directly (0 on success), like `ibv_dereg_mr`.
@inline(__always)
func check(_ op: String, _ rc: Int32, detail: @autoclosure () -> String? = nil) throws(VerbsError) {
    guard rc == 0 else {
        // Some providers return -1 and set errno instead of returning the errno.
        let code = rc > 0 ? Errno(rawValue: rc) : currentErrno()
        // The detail is spelled only for an error: a revocation deregisters thousands of MRs.
        throw VerbsError(op: op, errno: code, detail: detail())
    }
}
