/// The daemon's answer to one request: the request's `id` and `type`, and a result or an error.
public struct Reply: Sendable, Equatable {
    /// The request's id; nil only when the request was unreadable before its id.
    public let id: UInt64?
    /// The request's type; nil when the request was unreadable before its type, or had an
    /// unknown one (the wire then says `"type": "error"`).
    public let type: RequestType?
    public let outcome: Result<ReplyResult, ProtocolError>

    /// A successful reply; its type is the result's.
    public init(id: UInt64, _ result: ReplyResult) {
        self.id = id
        self.type = result.type
        self.outcome = .success(result)
    }

    /// An error reply.
    public init(id: UInt64?, type: RequestType?, error: ProtocolError) {
        self.id = id
        self.type = type
        self.outcome = .failure(error)
    }
}

/// One packet from the daemon, as a client reads it.
public enum ServerMessage: Sendable, Equatable {
    case reply(Reply)
    case event(Event)
}

// MARK: Wire form

extension ProtocolError {
    init(_ f: Fields) throws(ProtocolError) {
        let name = try f.string("code")
        let message = try f.string("message")
        // A newer daemon may send codes this client does not know: they mean "failed, and
        // nothing specific to do", like `internal`, and the original code stays in the message.
        if let code = ErrorCode(rawValue: name) {
            self.init(code, message)
        } else {
            self.init(.internal, "\(name): \(message)")
        }
        errnoName = try f.stringIfPresent("errno")
        errnoValue = try f.int32IfPresent("errnoValue")
        index = try f.uint64IfPresent("index")
    }

    var json: JSONValue {
        var o = ObjectWriter()
        o.set("code", .string(code.rawValue))
        o.set("message", .string(message))
        o.set("errno", errnoName.map(JSONValue.string))
        o.set("errnoValue", errnoValue.map(JSONValue.integer))
        o.set("index", index.map(JSONValue.integer))
        return o.value
    }
}

extension Reply {
    init(type: RequestType?, _ f: Fields) throws(ProtocolError) {
        // An error reply has no id when the request was unreadable before its id, whatever
        // its type (docs/protocol.md §2); a result always has one.
        let id = try f.uint64IfPresent("id")
        switch (f.object["result"], f.object["error"]) {
        case (nil, nil), (.some, .some):
            throw ProtocolError(.badRequest, "a reply has exactly one of \"result\" and \"error\"")
        case (.some, nil):
            guard let type else { throw ProtocolError(.badRequest, "a reply of type \"error\" has no result") }
            guard let id else { throw .missingField("id") }
            self.init(id: id, try ReplyResult(type: type, try f.object("result")))
        case (nil, .some):
            self.init(id: id, type: type, error: try ProtocolError(try f.object("error")))
        }
    }

    func write(to o: inout ObjectWriter) {
        o.set("id", id.map(JSONValue.integer))
        switch outcome {
        case .success(.stats(let statistics)): o.object("result") { statistics.write(to: &$0) }
        case .success(let result): o.set("result", result.json)
        case .failure(let error): o.set("error", error.json)
        }
    }
}
