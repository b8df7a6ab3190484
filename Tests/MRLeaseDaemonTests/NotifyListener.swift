import Foundation
import Glibc

/// The service manager's side of sd_notify: an AF_UNIX datagram socket the test binds and
/// names in `NOTIFY_SOCKET`, either a path or (`@name`) an abstract-namespace name.
final class NotifyListener {
    /// The value to put in `NOTIFY_SOCKET`.
    let address: String
    private let fd: Int32

    /// Binds to `path`, or to the abstract name `abstract` when given (then `address` is "@name").
    init(path: String? = nil, abstract: String? = nil) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var name: [UInt8]
        if let abstract {
            address = "@" + abstract
            name = [0] + Array(abstract.utf8)
        } else {
            address = path ?? ""
            name = Array(address.utf8)
        }
        var sockaddr = sockaddr_un()
        sockaddr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sockaddr.sun_path) { raw in
            for (index, byte) in name.enumerated() { raw[index] = byte }
        }
        // An abstract name's length is exact (no terminating NUL); a path's includes the NUL.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count + (abstract == nil ? 1 : 0))
        let bound = withUnsafePointer(to: &sockaddr) {
            $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            let code = errno
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
    }

    deinit {
        close(fd)
        if !address.hasPrefix("@") { unlink(address) }
    }

    /// The next datagram, or nil if none arrives within `seconds`.
    func receive(within seconds: Double) -> String? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(seconds * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return count >= 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
    }

    /// Datagrams until one contains `line` as a whole line (returned), or nil after `seconds`.
    func receive(containing line: String, within seconds: Double) -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        while case let left = deadline.timeIntervalSinceNow, left > 0 {
            guard let message = receive(within: left) else { return nil }
            if message.split(separator: "\n").contains(Substring(line)) { return message }
        }
        return nil
    }
}
