import Glibc
import LinuxFile
import SystemPackage

/// The metrics file for node_exporter's textfile collector (`metrics-file`), replaced whole
/// each time: written to `<path>.tmp` in the same directory, then renamed over `<path>`, so
/// the collector reads either the old file or the new one, never half of one. The collector
/// reads only `*.prom`, so it never sees the temporary file.
struct MetricsFile {
    let path: String
    var temporaryPath: String { path + ".tmp" }

    /// Why a write failed: the call, its errno, and what the operator can do.
    struct Failure: Error, Equatable, CustomStringConvertible {
        var op: String
        var errno: Errno
        var path: String

        var description: String {
            let fix = switch errno {
            case .noSuchFileOrDirectory: "create the directory"
            case .permissionDenied, .notPermitted, .readOnlyFileSystem:
                "let mrleased's user write to the directory (under systemd: ReadWritePaths= in a drop-in, see mrleased.conf(5))"
            case .noSpace, .diskQuotaExceeded: "free space on that filesystem"
            default: "check the path set in metrics-file"
            }
            return "metrics file: \(op) \(path) failed (\(errno.symbolicName)); \(fix)"
        }
    }

    /// Replaces the file with `text`, mode 0644 whatever the umask: node_exporter runs as
    /// another user. Not fsync'ed: after a crash the file is stale anyway, and a sync on every
    /// interval would stall the daemon's one loop on a busy disk.
    func replace(with text: String) throws(Failure) {
        // The calls themselves (not swift-system's untyped throws), so every failure carries
        // the errno the kernel gave. O_NOFOLLOW: a symlink planted at the temporary name is
        // refused, not written through.
        let fd = Glibc.open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Failure(op: "open", errno: Errno(rawValue: Glibc.errno), path: temporaryPath) }
        // close(2) reports a failed deferred write (NFS, quota), so its error counts too; the fd
        // is gone after close whatever it returns (EINTR included), so it is closed exactly once.
        let written = fill(fd, with: text)
        let closed: Failure? = Glibc.close(fd) == 0 ? nil : Failure(op: "close", errno: Errno(rawValue: Glibc.errno), path: temporaryPath)
        if let failure = written ?? closed {
            // The leftover temporary is overwritten next time, so a failed unlink adds nothing.
            unlink(temporaryPath)
            throw failure
        }
        guard rename(temporaryPath, path) == 0 else {
            let failure = Failure(op: "rename", errno: Errno(rawValue: Glibc.errno), path: path)
            unlink(temporaryPath)
            throw failure
        }
    }

    /// Sets the mode and writes `text`; the failure, if any.
    private func fill(_ fd: CInt, with text: String) -> Failure? {
        guard fchmod(fd, 0o644) == 0 else { return Failure(op: "fchmod", errno: Errno(rawValue: Glibc.errno), path: temporaryPath) }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let wrote = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if wrote < 0 {
                if Glibc.errno == EINTR { continue }
                return Failure(op: "write", errno: Errno(rawValue: Glibc.errno), path: temporaryPath)
            }
            done += wrote
        }
        return nil
    }

    /// Removes the file (at shutdown: a stopped daemon's gauges must not look current).
    func remove() throws(Failure) {
        guard unlink(path) == 0 || Glibc.errno == ENOENT else { throw Failure(op: "unlink", errno: Errno(rawValue: Glibc.errno), path: path) }
    }
}
