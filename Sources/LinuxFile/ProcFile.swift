import Glibc
import SystemPackage

/// The whole text of a /proc or /sys file. These report a size of 0 and are produced on read,
/// so they are read in chunks until EOF rather than sized with stat.
public func readProcFile(_ path: String) throws -> String {
    let fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
    defer { try? fd.close() }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = try chunk.withUnsafeMutableBytes { try fd.read(into: $0) }
        if count == 0 { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// What the symbolic link at `path` points to (`/proc/self/fd/N`: the path the fd was opened
/// by, as the kernel last knew it).
///
/// The corresponding C function is `readlink`.
public func readProcLink(_ path: String) throws(Errno) -> String {
    var buffer = [CChar](repeating: 0, count: 4097)
    let count = try valueOrErrno(retryOnInterrupt: false) { readlink(path, &buffer, 4096) }.get()
    return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
