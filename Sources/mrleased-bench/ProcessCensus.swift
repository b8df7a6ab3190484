import Glibc
import LinuxFile

/// What this process holds that a leak would show in: open fds, mappings of benchmark files,
/// and (with an RDMA device) MRs as the rdma tool lists them.
struct ProcessCensus: Equatable, CustomStringConvertible {
    var fds: Int
    var benchMappings: Int
    var mrs: Int?

    static func take(countMRs: Bool) -> ProcessCensus {
        ProcessCensus(fds: countFDs(), benchMappings: countMappings(containing: "mrleased-bench-"),
                      mrs: countMRs ? countProcessMRs() : nil)
    }

    var description: String {
        "fds \(fds), bench mappings \(benchMappings)" + (mrs.map { ", MRs \($0)" } ?? "")
    }

    static func countFDs() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { count += 1 }
        }
        return count - 1  // the directory stream's own fd
    }

    static func countMappings(containing needle: String) -> Int {
        ((try? readProcFile("/proc/self/maps")) ?? "").split(separator: "\n").filter { $0.contains(needle) }.count
    }

    /// `rdma resource show mr pid N` prints one line per MR; nil when the tool is missing.
    static func countProcessMRs() -> Int? {
        guard access("/usr/bin/rdma", X_OK) == 0 || access("/sbin/rdma", X_OK) == 0 else { return nil }
        return lines(of: "PATH=/usr/bin:/usr/sbin:/sbin:/bin rdma resource show mr pid \(getpid()) 2>/dev/null")
            .filter { $0.contains("mrn") }.count
    }

    /// The output lines of a shell command (popen).
    static func lines(of command: String) -> [Substring] {
        guard let pipe = popen(command, "r") else { return [] }
        var text = ""
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, Int32(buffer.count), pipe) != nil {
            text += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        pclose(pipe)
        return text.split(separator: "\n")
    }
}
