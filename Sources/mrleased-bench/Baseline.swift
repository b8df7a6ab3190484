import Glibc
import LinuxFile
import SystemPackage

/// The floor any lease holder can reach: one write lease and one signalfd, unlocked the moment
/// the break signal is read. No engine, no MRs, no mappings.
final class BaselineLease {
    let path: String
    let fd: FileDescriptor
    let signals: SignalFD
    var lease: FileLease { FileLease(fd: fd) }

    init(path: String) throws(BenchError) {
        self.path = path
        do {
            fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.closeOnExec])
            signals = try SignalFD(signals: [FileLease.breakSignal, SIGIO])
            try FileLease(fd: fd).acquire(.write)
        } catch {
            throw BenchError("baseline lease on \(path): \(error)")
        }
    }

    deinit {
        try? lease.release()
        try? fd.close()
        try? signals.close()
    }

    /// One break: a child truncates the file to `size`; we unlock as soon as the signal is
    /// read, wait for the child, and take the lease again. Returns the child's blocked time.
    func breakOnce(size: UInt64) throws(BenchError) -> UInt64 {
        let child = try Breaker(truncating: path, to: size)
        var unlocked = false
        let deadline = ContinuousClock.now + .seconds(60)
        while !unlocked {
            let infos: [SignalInfo]
            do { infos = try signals.wait(timeout: .seconds(1)) } catch { throw BenchError("signalfd read: \(error)") }
            if infos.contains(where: { $0.signal == SIGIO || ($0.signal == FileLease.breakSignal && $0.fd == fd.rawValue) }) {
                do { try lease.release() } catch { throw BenchError("baseline F_SETLEASE F_UNLCK: \(error)") }
                unlocked = true
            } else if child.hasExited {
                throw BenchError("baseline: truncate(2) to \(size) finished without breaking the lease")
            } else if ContinuousClock.now > deadline {
                throw BenchError("baseline: no lease-break signal within 60 s")
            }
        }
        let blocked = try child.blockedNanoseconds()
        // Only after the child is gone: a lease taken while the breaker is still waking up
        // would be broken again by its retry.
        do { try lease.acquire(.write) } catch { throw BenchError("baseline re-lease: \(error)") }
        return blocked
    }
}
