import Foundation
import Glibc

/// Bytes read from a pipe by a background thread, so a chatty child never blocks on it.
final class OutputCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    private let reading = DispatchGroup()

    var text: String { lock.withLock { String(decoding: bytes, as: UTF8.self) } }

    /// Reads `fd` until end of file on a thread of its own, then closes it.
    func drain(_ fd: Int32) {
        reading.enter()
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                lock.withLock { bytes.append(contentsOf: buffer[0..<count]) }
            }
            close(fd)
            reading.leave()
        }
        thread.start()
    }

    /// Waits, at most `seconds`, until the pipe has reached end of file: every writer has closed
    /// it, so `text` is all the child wrote. True at once when nothing is being drained.
    func waitForEnd(within seconds: Double) -> Bool {
        reading.wait(timeout: .now() + seconds) == .success
    }
}
