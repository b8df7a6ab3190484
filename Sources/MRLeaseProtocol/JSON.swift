/// A JSON value as the protocol reads and writes it.
///
/// The codec has its own small JSON layer instead of JSONSerialization or Codable for three
/// reasons the wire needs: ids, addresses and byte counts use the full UInt64 range, which
/// Foundation's parser turns into lossy Doubles beyond Int64; object keys are written in a fixed
/// order so the bytes on the wire are the ones docs/protocol.md shows; and every rejection names
/// the field and the rule, which a generic decoder's errors do not.
enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's literal as written (RFC 8259 grammar checked), converted exactly on use.
    case number(String)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    static func integer(_ value: some BinaryInteger) -> JSONValue { .number(String(value)) }

    /// What kind of value this is, for error messages ("an object", "a string", the number).
    var summary: String {
        switch self {
        case .null: "null"
        case .bool(let value): String(value)
        case .number(let literal): literal.count <= 40 ? literal : String(literal.prefix(40)) + "…"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// A JSON object whose fields keep their order: the order the encoder wrote them in, or the
/// order they arrived in.
struct JSONObject: Sendable, Equatable {
    struct Field: Sendable, Equatable {
        var key: String
        var value: JSONValue
    }

    var fields: [Field] = []

    init(_ fields: [Field] = []) { self.fields = fields }

    subscript(key: String) -> JSONValue? {
        fields.first { $0.key == key }?.value
    }

    /// Appends `key: value`; a nil value writes nothing (an optional field that is absent).
    mutating func set(_ key: String, _ value: JSONValue?) {
        guard let value else { return }
        fields.append(Field(key: key, value: value))
    }
}

// MARK: Writing

extension JSONValue {
    /// The compact UTF-8 serialization.
    var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out)
        return out
    }

    func write(to out: inout [UInt8]) {
        switch self {
        case .null: out += Array("null".utf8)
        case .bool(let value): out += Array((value ? "true" : "false").utf8)
        case .number(let literal): out += Array(literal.utf8)
        case .string(let text): Self.writeString(text, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                item.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            for (index, field) in object.fields.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                Self.writeString(field.key, to: &out)
                out.append(UInt8(ascii: ":"))
                field.value.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    private static func writeString(_ text: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case UInt8(ascii: "\n"): out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case UInt8(ascii: "\r"): out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case UInt8(ascii: "\t"): out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
