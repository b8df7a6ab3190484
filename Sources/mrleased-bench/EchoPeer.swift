import Foundation
import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy

/// The floor for a request round trip: a `SOCK_SEQPACKET` socketpair whose other end a child
/// process (this executable, `--echo-peer`, its end as stdin) serves with blocking `recv` and
/// `send` of a canned reply — the bytes the daemon sent — so packets of the same sizes cross
/// the same kernel path between two processes, with no event loop or JSON behind.
final class EchoPeer {
    let client: UnixSocket
    private let child = Process()

    init(reply: [UInt8]) throws(BenchError) {
        let end: UnixSocket
        do { (client, end) = try UnixSocket.pair() } catch { throw BenchError("socketpair: \(error)") }
        defer { try? end.close() }
        child.executableURL = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        child.arguments = ["--echo-peer"]
        child.standardInput = FileHandle(fileDescriptor: end.descriptor.rawValue, closeOnDealloc: false)
        do { try child.run() } catch { throw BenchError("start the echo peer process: \(error)") }
        // Its reply is the first packet it reads.
        do { try client.send(reply) } catch { throw BenchError("send to the echo peer: \(error)") }
    }

    var pid: pid_t { child.processIdentifier }

    /// The child's loop: answers every packet on `fd` with the first packet it read, until the
    /// other end closes.
    static func serve(fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var answer: [UInt8]?
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            guard let packet = answer else {
                answer = Array(buffer.prefix(n))
                continue
            }
            let sent = packet.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 { return }
        }
    }

    /// Round trips of `request`, timed exactly as `DaemonClient.timeStats` times its own.
    func time(_ request: [UInt8], count: Int, into samples: inout Samples) throws(BenchError) {
        for _ in 0..<count {
            let start = Engine.now()
            let received: UnixSocket.Received
            do {
                try client.send(request)
                received = try client.receive(maxSize: 65_536)
            } catch {
                throw BenchError("echo round trip: \(error)")
            }
            samples.append(Engine.now() - start)
            guard case .message = received else { throw BenchError("echo peer closed") }
        }
    }

    /// Closes our end (the child reads end-of-stream and exits) and waits for it.
    func close() {
        try? client.close()
        child.waitUntilExit()
    }
}
