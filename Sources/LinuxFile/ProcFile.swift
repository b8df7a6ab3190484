import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The whole text of a /proc or /sys file. These report a size of 0 and are produced on read,
/// so they are read in chunks until EOF rather than sized with stat. Throws the kernel's errno
/// of the `open` or `read` that failed (ENOENT: no such entry, ESRCH: the process went while
/// it was read).
///
/// The corresponding C functions are `open`, `read` and `close`.
public func readProcFile(_ path: String) throws(Errno) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw Errno(rawValue: errno) }
    // close of a read-only fd of a /proc file has nothing to report.
    defer { _ = close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            throw Errno(rawValue: errno)
        }
        if count == 0 { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
