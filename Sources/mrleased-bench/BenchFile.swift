import Glibc

/// Benchmark files: written in full (not sparse), so every page has blocks behind it.
enum BenchFile {
    static func create(_ path: String, size: UInt64) throws(BenchError) {
        let fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BenchError("create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0xA5, count: 1 << 20)
        var written: UInt64 = 0
        while written < size {
            let n = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, Int(min(UInt64(chunk.count), size - written)), off_t(written)) }
            guard n > 0 else { throw BenchError("write \(path): \(String(cString: strerror(errno)))") }
            written += UInt64(n)
        }
        guard fsync(fd) == 0 else { throw BenchError("fsync \(path): \(String(cString: strerror(errno)))") }
    }
}
