/// Turns messages into packets and back: one UTF-8 JSON object per `SOCK_SEQPACKET` packet,
/// every object carrying `"v"` (the protocol version) and `"type"` (docs/protocol.md).
///
/// Decoding never traps: any byte string either decodes or throws a `ProtocolError`, whose
/// message names the field and the rule it broke.
public enum Codec {
    /// The protocol version this module speaks.
    public static let version: UInt64 = 1
    /// The largest packet either side sends. The daemon receives at most this much; the kernel
    /// flags a longer packet as cut (`MSG_TRUNC`), and the daemon answers `message-too-large`.
    public static let maxMessageBytes = 65_536
    /// Where mrleased listens unless configured otherwise (docs/protocol.md §1): the one Swift
    /// spelling, which the daemon's default and the client's share. The C library's
    /// `MRLEASE_DEFAULT_SOCKET`, `Config/mrleased.socket` and `Config/mrleased.conf` say the same
    /// (SocketPathTests); the shell scripts read the unit.
    public static let defaultSocketPath = "/run/mrleased/mrleased.sock"
    /// The longest `tag` and `clientName`, in bytes of UTF-8.
    public static let maxTagBytes = 256
    /// The most ranges one `register-batch` takes. Its reply must fit in one message: a
    /// registration's result is at most about 600 bytes (a long `strategyReason` and device
    /// name), so 64 of them stay well under `maxMessageBytes`.
    public static let maxBatchRanges = 64
    /// The most regions one `ack` may name (`regions`): 2048 ids of up to 20 digits fit in a
    /// message with room to spare.
    public static let maxAckRegions = 2048
    /// The most regions one `list` page holds, and how many when the request names no
    /// `limit`: a page's cost is bounded, so one `list` never holds the daemon's loop for long.
    public static let maxListLimit: UInt64 = 256
    public static let defaultListLimit: UInt64 = 32

    // MARK: Requests (the daemon's side)

    /// The request in `bytes` and its id.
    public static func decodeRequest(_ bytes: [UInt8]) throws(ProtocolError) -> (id: UInt64, request: Request) {
        let f = try envelope(bytes)
        let name = try f.string("type")
        let id = try f.uint64("id")
        guard let type = RequestType(rawValue: name) else {
            let known = RequestType.allCases.map(\.rawValue).joined(separator: ", ")
            throw ProtocolError(.badRequest, "unknown request type \"\(name.prefix(64))\"; expected one of \(known)")
        }
        return (id, try Request(type: type, f))
    }

    /// The error reply to a request that failed: with the request's id and type when `bytes`
    /// got that far, so the client can match it.
    public static func errorReply(to bytes: [UInt8], _ error: ProtocolError) -> Reply {
        // A packet past the limit was not parsed as a request, so it has no id to answer with.
        guard bytes.count <= maxMessageBytes, case .object(let object)? = try? JSONParser.parse(bytes) else {
            return Reply(id: nil, type: nil, error: error)
        }
        let f = Fields(object)
        return Reply(id: try? f.uint64("id"),
                     type: (try? f.string("type")).flatMap(RequestType.init(rawValue:)),
                     error: error)
    }

    /// Checks the number of fds that came with a request of `type`: exactly one for
    /// `register` and `register-batch`, none for the others. The daemon closes them all when
    /// this throws.
    public static func checkDescriptors(_ count: Int, for type: RequestType) throws(ProtocolError) {
        let expected = type.descriptorCount
        if count == expected { return }
        if count < expected {
            throw ProtocolError(.missingFD, "\(type.rawValue) needs the file's fd attached with SCM_RIGHTS; none came")
        }
        let takes = expected == 1 ? "exactly one fd" : "no fds"
        throw ProtocolError(.tooManyFDs, "\(type.rawValue) takes \(takes); \(count) came and were closed")
    }

    public static func encode(_ request: Request, id: UInt64) -> [UInt8] {
        var o = header(type: request.type.rawValue)
        o.set("id", .integer(id))
        request.write(to: &o)
        return o.finish()
    }

    // MARK: Replies and events (the client's side)

    /// The reply's packet, never longer than `maxMessageBytes` (a client reads each packet into
    /// a buffer of that size): an error whose message echoes too much of the request has its
    /// message cut to fit; a result too large for one message (none is, by design: `list`
    /// pages, batches are capped) becomes an `internal` error saying so.
    public static func encode(_ reply: Reply) -> [UInt8] {
        let packet = unbounded(reply)
        if packet.count <= maxMessageBytes { return packet }
        var error: ProtocolError
        switch reply.outcome {
        case .failure(let failure): error = failure
        case .success(let result):
            error = ProtocolError(.internal, "the \(result.type.rawValue) reply came to \(packet.count) bytes, more than maxMessageBytes (\(maxMessageBytes)); please report it")
        }
        return fitting(error.message) { message in
            error.message = message
            return unbounded(Reply(id: reply.id, type: reply.type, error: error))
        }
    }

    /// The event's packet, never longer than `maxMessageBytes` (a `lost` message is cut to fit).
    public static func encode(_ event: Event) -> [UInt8] {
        let packet = unbounded(event)
        guard packet.count > maxMessageBytes, case .lost(var lost) = event, let message = lost.message else { return packet }
        return fitting(message) { message in
            lost.message = message
            return unbounded(.lost(lost))
        }
    }

    private static func unbounded(_ reply: Reply) -> [UInt8] {
        var o = header(type: reply.type?.rawValue ?? "error")
        reply.write(to: &o)
        return o.finish()
    }

    private static func unbounded(_ event: Event) -> [UInt8] {
        var o = header(type: "event")
        event.write(to: &o)
        return o.finish()
    }

    /// `encode(message)` with `message` shortened to its longest prefix (whole Unicode
    /// scalars, then "…") whose packet fits in `maxMessageBytes`; escapes make a character's
    /// encoded size 1 to 6 bytes, so the prefix is found by bisection. An empty message leaves
    /// a packet of a few hundred bytes at most.
    static func fitting(_ message: String, _ encode: (String) -> [UInt8]) -> [UInt8] {
        let whole = encode(message)
        if whole.count <= maxMessageBytes { return whole }
        let scalars = Array(message.unicodeScalars)
        func cut(_ count: Int) -> [UInt8] {
            var text = String.UnicodeScalarView()
            text.append(contentsOf: scalars[..<count])
            return encode(String(text) + "…")
        }
        var fits = 0, tooLong = scalars.count
        var packet = cut(0)
        while tooLong - fits > 1 {
            let middle = (fits + tooLong) / 2
            let candidate = cut(middle)
            if candidate.count <= maxMessageBytes { fits = middle; packet = candidate } else { tooLong = middle }
        }
        return packet
    }

    /// A `list` reply holding as many of `regions` (ascending region ids) as fit in
    /// `maxBytes`, with `next` set when some were left for the client to ask for: cut here, or
    /// (`more`) beyond `regions` already. Each region is encoded once.
    public static func encodeList(id: UInt64, regions: [RegionList.Region], more: Bool = false,
                                  maxBytes: Int = maxMessageBytes) -> [UInt8] {
        func packet(_ page: ArraySlice<JSONValue>, next: UInt64?) -> [UInt8] {
            var o = header(type: RequestType.list.rawValue)
            o.set("id", .integer(id))
            o.set("result", RegionList.json(regions: Array(page), next: next))
            return o.serialized
        }
        let encoded = regions.map(\.json)
        let sizes = encoded.map { $0.bytes.count + 1 }   // + the comma before it
        // Budget for the longest `next` there is, so the page never overflows.
        var budget = maxBytes - packet([], next: .max).count
        var count = 0
        while count < regions.count, sizes[count] <= budget {
            budget -= sizes[count]
            count += 1
        }
        // One region always fits: a region's entry is bounded (a tag of at most maxTagBytes,
        // at most 32 grants of at most RegionList.Grant.maxListedPeers peers each).
        count = max(count, min(1, regions.count))
        let cut = count < regions.count
        return packet(encoded[..<count], next: (cut || more) && count > 0 ? regions[count - 1].region : nil)
    }

    /// A packet from the daemon: a reply or an event.
    public static func decodeServerMessage(_ bytes: [UInt8]) throws(ProtocolError) -> ServerMessage {
        let f = try envelope(bytes)
        let name = try f.string("type")
        if name == "event" { return .event(try Event(f)) }
        if name == "error" { return .reply(try Reply(type: nil, f)) }
        guard let type = RequestType(rawValue: name) else {
            throw ProtocolError(.badRequest, "unknown message type \"\(name.prefix(64))\"")
        }
        return .reply(try Reply(type: type, f))
    }

    // MARK: Envelope

    private static func header(type: String) -> ObjectWriter {
        var o = ObjectWriter()
        o.set("v", .integer(version))
        o.set("type", .string(type))
        return o
    }

    /// The message object, after checking it is one and speaks this version.
    private static func envelope(_ bytes: [UInt8]) throws(ProtocolError) -> Fields {
        guard bytes.count <= maxMessageBytes else { throw .messageTooLarge }
        guard case .object(let object) = try JSONParser.parse(bytes) else {
            throw ProtocolError(.badRequest, "a message must be a JSON object")
        }
        let f = Fields(object)
        let v = try f.uint64("v")
        guard v == version else {
            throw ProtocolError(.unsupportedVersion, "protocol version \(v) is not supported; this side speaks \(version)")
        }
        return f
    }
}
