import Foundation
import Glibc
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import XCTest

/// Raw client-side helpers for tests that talk to the built daemon over its socket.
enum DaemonWire {
    /// The next packet on `socket` within `seconds`, as text; nil if none came (or EOF).
    static func receive(_ socket: UnixSocket, within seconds: Double = 5) throws -> String? {
        try socket.setNonBlocking(true)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            switch try socket.receive(maxSize: Codec.maxMessageBytes + 1) {
            case .wouldBlock: usleep(5_000)
            case .endOfStream: return nil
            case .message(let message): return String(decoding: message.bytes, as: UTF8.self)
            }
        }
        return nil
    }

    /// Sends `request` and returns the next packet as text.
    static func ask(_ socket: UnixSocket, _ request: Request, id: UInt64 = 1, fds: [FileDescriptor] = []) throws -> String? {
        try socket.send(Codec.encode(request, id: id), fds: fds)
        return try receive(socket)
    }

    /// Whether a `register` reply shows the request got past the rules about the file and the
    /// caller: registered (a guest, with an RDMA device) or refused only for want of one (the host).
    static func passedTheRules(_ reply: String) -> Bool {
        reply.contains(#""result""#) || reply.contains(#""code":"strategy-unavailable""#)
    }

    static func openFDs(_ pid: Int32) -> [Int] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).compactMap { Int($0) }.sorted()
    }

    /// A field of /proc/PID/status ("VmRSS", "Groups"), its value as written.
    static func status(_ pid: Int32, _ field: String) throws -> String {
        let text = try readProcFile("/proc/\(pid)/status")
        let line = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix(field + ":") })
        return line.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces)
    }

    /// VmRSS of `pid` in KiB.
    static func rssKiB(_ pid: Int32) throws -> Int {
        try XCTUnwrap(Int(try status(pid, "VmRSS").split(separator: " ")[0]))
    }
}
