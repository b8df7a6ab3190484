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
        let fd: FileDescriptor
        do {
            // O_NOFOLLOW: a symlink planted at the temporary name is refused, not written through.
            fd = try FileDescriptor.open(temporaryPath, .writeOnly, options: [.create, .truncate, .noFollow, .closeOnExec],
                                         permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw Failure(op: "open", errno: error as? Errno ?? .ioError, path: temporaryPath)
        }
        // close(2) reports a failed deferred write (NFS, quota), so its error counts too; the fd
        // is gone after close whatever it returns, so it is closed exactly once.
        let written = fill(fd, with: text)
        let closed: Failure?
        do { try fd.close(); closed = nil } catch { closed = Failure(op: "close", errno: error as? Errno ?? .ioError, path: temporaryPath) }
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
    private func fill(_ fd: FileDescriptor, with text: String) -> Failure? {
        guard fchmod(fd.rawValue, 0o644) == 0 else { return Failure(op: "fchmod", errno: Errno(rawValue: Glibc.errno), path: temporaryPath) }
        do { _ = try fd.writeAll(Array(text.utf8)) } catch {
            return Failure(op: "write", errno: error as? Errno ?? .ioError, path: temporaryPath)
        }
        return nil
    }

    /// Removes the file (at shutdown: a stopped daemon's gauges must not look current).
    func remove() throws(Failure) {
        guard unlink(path) == 0 || Glibc.errno == ENOENT else { throw Failure(op: "unlink", errno: Errno(rawValue: Glibc.errno), path: path) }
    }
}
