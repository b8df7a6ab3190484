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

