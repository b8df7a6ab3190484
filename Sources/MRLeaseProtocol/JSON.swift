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
    /// A number the encoder writes (the parser always gives `number`).
    case unsigned(UInt64)
    /// An object the encoder has already written (`ObjectWriter.value`).
    case encoded([UInt8])

    static func integer(_ value: some BinaryInteger) -> JSONValue {
        value >= 0 ? .unsigned(UInt64(value)) : .number(String(value))
    }

    /// What kind of value this is, for error messages ("an object", "a string", the number).
    var summary: String {
        switch self {
        case .null: "null"
        case .bool(let value): String(value)
        case .number(let literal): literal.count <= 40 ? literal : String(literal.prefix(40)) + "…"
        case .unsigned(let value): String(value)
        case .string: "a string"
        case .array: "an array"
        case .object, .encoded: "an object"
        }
    }
}

/// A parsed JSON object, its fields in the order they arrived (the encoder writes objects
/// with `ObjectWriter` instead).
struct JSONObject: Sendable, Equatable {
    struct Field: Sendable, Equatable {
        var key: String
        var value: JSONValue
    }

    var fields: [Field] = []

    subscript(key: String) -> JSONValue? {
        fields.first { $0.key == key }?.value
    }
}

// MARK: Writing

extension JSONValue {
    /// The compact UTF-8 serialization.
    var bytes: [UInt8] {
        var out = JSONBytes()
        write(to: &out)
        return out.array
    }

    func write(to out: inout JSONBytes) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let value): out.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let literal): out.append(contentsOf: literal.utf8)
        case .unsigned(let value): Self.writeUnsigned(value, to: &out)
        case .encoded(let bytes): out.append(contentsOf: bytes)
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

    private static let hex = Array("0123456789abcdef".utf8)

    /// Decimal digits, without a String in between.
    static func writeUnsigned(_ value: UInt64, to out: inout JSONBytes) {
        // Most numbers of a reply are counters under 10.
        if value < 10 {
            out.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        // The digits from the end of a 24-byte buffer on the stack (2^64 has 20), then one copy.
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { buffer in
            var at = buffer.count
            var rest = value
            repeat {
                at -= 1
                buffer[at] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            out.append(raw: UnsafeRawBufferPointer(rebasing: buffer[at...]))
        }
    }

    static func writeString(_ text: String, to out: inout JSONBytes) {
        var text = text
        text.withUTF8 { writeString(utf8: $0, to: &out) }
    }

    private static func writeString(utf8: UnsafeBufferPointer<UInt8>, to out: inout JSONBytes) {
        out.append(UInt8(ascii: "\""))
        // Most strings need no escape: one copy.
        if !utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            out.append(raw: UnsafeRawBufferPointer(utf8))
            out.append(UInt8(ascii: "\""))
            return
        }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "\n"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            case 0..<0x20:
                out.append(contentsOf: "\\u00".utf8)
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xF)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// An object as the encoder writes it: each `set` appends `"key":value` to the bytes at once,
/// so encoding a message builds no tree of fields. Keys come out in the order they were set,
/// which is how the wire's field order (docs/protocol.md) is kept.
struct ObjectWriter {
    /// Shared with the writers of the objects nested in this one (`object`): they write on
    /// into the same bytes.
    private var bytes: JSONBytes
    /// Whether a field was written since this object's `{`: the next one needs a comma.
    private var hasFields = false

    init() {
        bytes = JSONBytes()
        bytes.append(UInt8(ascii: "{"))
    }

    /// Appends `key: value`; a nil value writes nothing (an optional field that is absent).
    mutating func set(_ key: String, _ value: JSONValue?) {
        guard let value else { return }
        if hasFields { bytes.append(UInt8(ascii: ",")) }
        hasFields = true
        JSONValue.writeString(key, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        value.write(to: &bytes)
    }

    /// Appends `key: number` without a JSONValue in between (the hot path of `list`, where a
    /// page writes a dozen fields for each of up to 256 regions).
    mutating func set(_ key: StaticString, unsigned value: UInt64?) {
        guard let value else { return }
        writeKey(key)
        JSONValue.writeUnsigned(value, to: &bytes)
    }

    /// Appends `key: "text"` without a JSONValue in between.
    mutating func set(_ key: StaticString, string value: String?) {
        guard let value else { return }
        writeKey(key)
        JSONValue.writeString(value, to: &bytes)
    }

    /// Appends `key: [n, …]` without a JSONValue in between.
    mutating func set(_ key: StaticString, unsignedArray values: [UInt64]?) {
        guard let values else { return }
        writeKey(key)
        bytes.append(UInt8(ascii: "["))
        for (i, value) in values.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            JSONValue.writeUnsigned(value, to: &bytes)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    /// Appends `key: {…}`, the object `body` writes, into these same bytes: no object of its
    /// own to build and copy in.
    mutating func object(_ key: String, _ body: (inout ObjectWriter) -> Void) {
        if hasFields { bytes.append(UInt8(ascii: ",")) }
        hasFields = true
        JSONValue.writeString(key, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        nest(body)
    }

    /// `object` with one of the protocol's own keys.
    mutating func object(_ key: StaticString, _ body: (inout ObjectWriter) -> Void) {
        writeKey(key)
        nest(body)
    }

    private mutating func nest(_ body: (inout ObjectWriter) -> Void) {
        var inner = ObjectWriter(continuing: bytes)
        body(&inner)
        bytes.append(UInt8(ascii: "}"))
    }

    /// A writer that goes on after `bytes` (the same storage), with the `{` of a new object.
    private init(continuing bytes: JSONBytes) {
        self.bytes = bytes
        self.bytes.append(UInt8(ascii: "{"))
    }

    /// `"key":`, the comma before it when a field precedes. Keys are the protocol's own
    /// ASCII names: nothing to escape.
    private mutating func writeKey(_ key: StaticString) {
        let count = key.utf8CodeUnitCount
        if hasFields { bytes.append(UInt8(ascii: ",")) }
        hasFields = true
        bytes.append(UInt8(ascii: "\""))
        bytes.append(raw: UnsafeRawBufferPointer(start: key.utf8Start, count: count))
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    /// The finished object's bytes. Call once: it closes the object.
    consuming func finish() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        return bytes.array
    }

    /// The finished object's bytes, leaving this writer as it was.
    var serialized: [UInt8] {
        var out = bytes.array
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// The finished object, to nest in another.
    var value: JSONValue { .encoded(serialized) }
}

/// The bytes an encoder appends to: one buffer of its own, grown by doubling, appended to
/// through a pointer. `[UInt8]` checked uniqueness and capacity, and went through the generic
/// `append(contentsOf:)`, on every append: a `stats` reply of 500 bytes cost 20 000
/// instructions (callgrind). Copies of a `JSONBytes` share the buffer (an `ObjectWriter`
/// and the writers of the objects nested in it); `array` copies it out once.
struct JSONBytes {
    final class Storage {
        @exclusivity(unchecked) var base: UnsafeMutablePointer<UInt8>
        @exclusivity(unchecked) var count = 0
        @exclusivity(unchecked) var capacity: Int

        init(capacity: Int) {
            base = .allocate(capacity: capacity)
            self.capacity = capacity
        }

        deinit { base.deallocate() }

        func grow(toHold needed: Int) {
            var size = capacity * 2
            while size < needed { size *= 2 }
            let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: size)
            bigger.update(from: base, count: count)
            base.deallocate()
            base = bigger
            capacity = size
        }
    }

    private let storage = Storage(capacity: 512)

    var count: Int { storage.count }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        let storage = self.storage
        if storage.count == storage.capacity { storage.grow(toHold: storage.count + 1) }
        storage.base[storage.count] = byte
        storage.count += 1
    }

    mutating func append(raw bytes: UnsafeRawBufferPointer) {
        let storage = self.storage
        let n = bytes.count
        guard n > 0, let source = bytes.baseAddress else { return }
        if storage.count + n > storage.capacity { storage.grow(toHold: storage.count + n) }
        (storage.base + storage.count).update(from: source.assumingMemoryBound(to: UInt8.self), count: n)
        storage.count += n
    }

    mutating func append(contentsOf bytes: [UInt8]) {
        bytes.withUnsafeBytes { append(raw: $0) }
    }

    mutating func append(contentsOf text: String.UTF8View) {
        var text = String(text)
        text.withUTF8 { append(raw: UnsafeRawBufferPointer($0)) }
    }

    /// The bytes written so far, as an array of their own.
    var array: [UInt8] { Array(UnsafeBufferPointer(start: storage.base, count: storage.count)) }
}
