import Foundation
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

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

    func register(_ fd: FileDescriptor, offset: UInt64, length: UInt64, access: Set<Access> = [.read, .write],
                  layoutPolicy: RegionLayoutPolicy? = nil) throws -> Registration {
        let outcome = try request(.register(.init(offset: offset, length: length, access: access, layoutPolicy: layoutPolicy)), fds: [fd])
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
