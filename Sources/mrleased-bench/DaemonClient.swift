import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage

/// A protocol-level client on a raw socket (no client library): one request at a time, the
/// reply matched by id, events kept aside.
final class DaemonClient {
    let socket: UnixSocket
    var nextID: UInt64 = 1
    private(set) var events = 0

    init(path: String) throws(BenchError) {
        do { socket = try UnixSocket.connect(path: path) } catch { throw BenchError("connect \(path): \(error)") }
    }

    deinit { try? socket.close() }

    /// Sends `packet` and reads until a packet that is not an event arrives: the reply.
    /// Returns the reply's bytes; events that came first are counted and dropped.
    func roundTrip(_ packet: [UInt8], fds: [FileDescriptor] = []) throws(BenchError) -> [UInt8] {
        do { try socket.send(packet, fds: fds) } catch { throw BenchError("send to mrleased: \(error)") }
        while true {
            let message = try receive()
            // An event is the only packet that says "type":"event"; a reply never does at this offset.
            if message.bytes.starts(with: Self.eventPrefix) {
                events += 1
                continue
            }
            return message.bytes
        }
    }

    /// The next packet (blocking); fds that came with it are closed.
    func receive() throws(BenchError) -> UnixSocket.Message {
        let received: UnixSocket.Received
        do { received = try socket.receive(maxSize: Codec.maxMessageBytes) } catch {
            throw BenchError("receive from mrleased: \(error)")
        }
        guard case .message(let message) = received else { throw BenchError("mrleased closed the connection") }
        for fd in message.fds { try? fd.close() }
        return message
    }

    /// One request, its reply decoded; an error reply throws, naming the request.
    func request(_ request: Request, fds: [FileDescriptor] = []) throws(BenchError) -> ReplyResult {
        let id = nextID
        nextID += 1
        let bytes = try roundTrip(Codec.encode(request, id: id), fds: fds)
        let message: ServerMessage
        do { message = try Codec.decodeServerMessage(bytes) } catch { throw BenchError("\(request.type.rawValue) reply: \(error)") }
        guard case .reply(let reply) = message, reply.id == id else {
            throw BenchError("\(request.type.rawValue): expected the reply to id \(id), got \(String(decoding: bytes.prefix(200), as: UTF8.self))")
        }
        switch reply.outcome {
        case .success(let result): return result
        case .failure(let error):
            throw BenchError("\(request.type.rawValue) refused: \(error)", refused: error.code == .strategyUnavailable)
        }
    }

    /// `stats` round trips, timed from just before the send to the reply's bytes in hand
    /// (encoding and decoding outside the clock, as for the echo baseline).
    func timeStats(_ count: Int, into samples: inout Samples) throws(BenchError) {
        for _ in 0..<count {
            let id = nextID
            nextID += 1
            let packet = Codec.encode(.stats, id: id)
            let start = Engine.now()
            let bytes = try roundTrip(packet)
            samples.append(Engine.now() - start)
            guard case .reply(let reply)? = try? Codec.decodeServerMessage(bytes), reply.id == id,
                  case .success(.stats) = reply.outcome else {
                throw BenchError("stats: unexpected reply \(String(decoding: bytes.prefix(200), as: UTF8.self))")
            }
        }
    }

    /// Reads until an event named `name` arrives (other events are dropped): for a client
    /// that waits on its own regions' events between requests.
    func awaitEvent(_ name: Event.Name) throws(BenchError) -> Event {
        while true {
            let message = try receive()
            guard case .event(let event)? = try? Codec.decodeServerMessage(message.bytes) else {
                throw BenchError("waiting for \(name.rawValue): got \(String(decoding: message.bytes.prefix(200), as: UTF8.self))")
            }
            events += 1
            if event.name == name { return event }
        }
    }

    static let eventPrefix = Array(#"{"v":1,"type":"event""#.utf8)
}
