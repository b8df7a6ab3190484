import Foundation
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

/// The real `mrleased` binary, started for one test on its own socket.
final class DaemonProcess {
    let process = Process()
    let socketPath: String
    let scratch: ScratchDirectory
    let stderr = Pipe()

    /// `environment`: `MRLEASED_*` settings on top of this process's environment.
    init(arguments: [String] = [], environment: [String: String] = [:]) throws {
        scratch = try ScratchDirectory(name: "mrleased-daemon")
        socketPath = scratch.path + "/mrleased.sock"
        process.executableURL = URL(fileURLWithPath: Subprocess.builtProduct("mrleased"))
        process.arguments = ["--socket", socketPath, "--config", "/dev/null", "--log-level", "warning"] + arguments
        process.standardError = stderr
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let socket = try? UnixSocket.connect(path: socketPath) {
                try? socket.close()
                return
            }
            guard process.isRunning else { break }
            usleep(20_000)
        }
        // A daemon that does not come up is a failure of the test, never a skip.
        throw TestFailure("mrleased did not start: \(String(decoding: stderr.fileHandleForReading.availableData, as: UTF8.self))")
    }

    var pid: Int32 { process.processIdentifier }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// What the daemon holds once its fd count has stopped moving (a connection the daemon
    /// has not yet seen close still counts until its next loop turn).
    func settledHoldings() throws -> (fds: Int, mrs: Set<UInt32>, leases: Int) {
        var previous = try holdings()
        for _ in 0..<100 {
            usleep(50_000)
            let now = try holdings()
            if now.fds == previous.fds && now.mrs == previous.mrs && now.leases == previous.leases { return now }
            previous = now
        }
        return previous
    }

    /// What the daemon holds right now, as the kernel sees it.
    func holdings() throws -> (fds: Int, mrs: Set<UInt32>, leases: Int) {
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        let locks = try readProcFile("/proc/locks")
        let leases = locks.split(separator: "\n").filter { $0.contains("LEASE") && $0.split(separator: " ").contains(Substring("\(pid)")) }.count
        return (fds, try RDMAResources.memoryRegionKeys(pid: pid), leases)
    }

    func stop() -> Int32 {
        process.terminate()
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// A protocol-level client: sends requests with optional fds, collects the reply with its id
/// and keeps the events that arrive meanwhile.
final class RawClient {
    let socket: UnixSocket
    var nextID: UInt64 = 1
    var events: [Event] = []

    init(path: String) throws {
        socket = try UnixSocket.connect(path: path)
    }

    func request(_ request: Request, fds: [FileDescriptor] = []) throws -> Result<ReplyResult, ProtocolError> {
        let id = nextID
        nextID += 1
        try socket.send(Codec.encode(request, id: id), fds: fds)
        while true {
            guard case .message(let message) = try socket.receive(maxSize: Codec.maxMessageBytes) else {
                throw Errno.connectionReset
            }
            switch try Codec.decodeServerMessage(message.bytes) {
            case .event(let event): events.append(event)
            case .reply(let reply) where reply.id == id: return reply.outcome
            case .reply: continue
            }
        }
    }

    func register(_ fd: FileDescriptor, offset: UInt64, length: UInt64, access: Set<Access> = [.read, .write]) throws -> Registration {
        let outcome = try request(.register(.init(offset: offset, length: length, access: access)), fds: [fd])
        guard case .success(.register(let registration)) = outcome else { throw Unexpected("register failed: \(outcome)") }
        return registration
    }

    /// Waits for events until `done` holds or `seconds` pass.
    func waitForEvents(seconds: Double = 20, until done: ([Event]) -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        try socket.setNonBlocking(true)
        defer { try? socket.setNonBlocking(false) }
        while !done(events) && Date() < deadline {
            switch try socket.receive(maxSize: Codec.maxMessageBytes) {
            case .message(let message):
                if case .event(let event) = try Codec.decodeServerMessage(message.bytes) { events.append(event) }
            case .wouldBlock: usleep(5_000)
            case .endOfStream: return
            }
        }
    }

    func close() { try? socket.close() }
}

/// A failure the test itself did not expect: thrown so the test fails with the message.
struct Unexpected: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The lines a child prints, collected as they come.
final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer = ""

    init(_ handle: FileHandle) {
        handle.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self else { return }
            if data.isEmpty { handle.readabilityHandler = nil; return }
            self.lock.withLock { self.buffer += String(decoding: data, as: UTF8.self) }
        }
    }

    var text: String { lock.withLock { buffer } }

    /// The lines printed so far, up to the last newline (a line still being written is not one).
    var lines: [String] {
        let text = text
        guard let end = text.lastIndex(of: "\n") else { return [] }
        return text[..<end].split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
    }

    /// Waits until `done` holds for the complete lines so far; fails the test after `seconds`.
    func wait(seconds: Double, until done: ([String]) -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if done(lines) { return }
            usleep(20_000)
        }
        throw TestFailure("not seen within \(seconds) s; the child printed:\n\(text)")
    }
}
