/// Typed access to one JSON object's fields, each failure a `bad-request` naming the field by
/// its path from the message root ("offset", "result.limits.maxMessageBytes").
///
/// Fields the reader is not asked about are ignored, so a newer peer can add fields without
/// breaking an older one. An optional field that is null counts as absent.
///
/// Paths are spelled only for an error: a message's successful decoding builds no path strings.
struct Fields {
    let object: JSONObject
    private let prefix: String
    private let index: Int?

    /// The object at `path`, or element `index` of the array at `path`.
    init(_ object: JSONObject, path: String = "", index: Int? = nil) {
        self.object = object
        self.prefix = path
        self.index = index
    }

    var path: String { index.map { "\(prefix)[\($0)]" } ?? prefix }

    func path(_ key: String) -> String {
        let path = path
        return path.isEmpty ? key : "\(path).\(key)"
    }

    private func present(_ key: String) -> JSONValue? {
        guard let value = object[key], value != .null else { return nil }
        return value
    }

    private func required(_ key: String) throws(ProtocolError) -> JSONValue {
        guard let value = object[key] else { throw .missingField(path(key)) }
        return value
    }

    // MARK: Integers

    /// Integers are written without sign, fraction or exponent. `UInt64("-0")` is 0 (Swift
    /// takes a sign before digits), so the sign is refused here, before the conversion.
    static func unsigned<T: FixedWidthInteger & UnsignedInteger>(
        _ value: JSONValue, _ path: @autoclosure () -> String, as: T.Type = T.self
    ) throws(ProtocolError) -> T {
        guard case .number(let literal) = value, literal.utf8.first != UInt8(ascii: "-"), let number = T(literal) else {
            throw .wrongType(path(), expected: "an integer from 0 to \(T.max)", got: value)
        }
        return number
    }

    func uint64(_ key: String) throws(ProtocolError) -> UInt64 {
        try Self.unsigned(try required(key), path(key))
    }

    func uint32(_ key: String) throws(ProtocolError) -> UInt32 {
        try Self.unsigned(try required(key), path(key))
    }

    /// An array of unsigned integers, when present.
    func uint64ArrayIfPresent(_ key: String) throws(ProtocolError) -> [UInt64]? {
        guard present(key) != nil else { return nil }
        return try array(key) { value, path throws(ProtocolError) in try Self.unsigned(value, path()) }
    }

    func uint64IfPresent(_ key: String) throws(ProtocolError) -> UInt64? {
        guard let value = present(key) else { return nil }
        return try Self.unsigned(value, path(key))
    }

    func uint32IfPresent(_ key: String) throws(ProtocolError) -> UInt32? {
        guard let value = present(key) else { return nil }
        return try Self.unsigned(value, path(key))
    }

    func int32IfPresent(_ key: String) throws(ProtocolError) -> Int32? {
        guard let value = present(key) else { return nil }
        guard case .number(let literal) = value, let number = Int32(literal) else {
            throw .wrongType(path(key), expected: "a 32-bit integer", got: value)
        }
        return number
    }

    // MARK: Strings, booleans, enums

    func string(_ key: String) throws(ProtocolError) -> String {
        let value = try required(key)
        guard case .string(let text) = value else { throw .wrongType(path(key), expected: "a string", got: value) }
        return text
    }

    func stringIfPresent(_ key: String, maxBytes: Int? = nil) throws(ProtocolError) -> String? {
        guard let value = present(key) else { return nil }
        guard case .string(let text) = value else { throw .wrongType(path(key), expected: "a string", got: value) }
        if let maxBytes, text.utf8.count > maxBytes {
            throw .invalid(path(key), "is longer than \(maxBytes) bytes")
        }
        return text
    }

    func boolIfPresent(_ key: String) throws(ProtocolError) -> Bool? {
        guard present(key) != nil else { return nil }
        return try bool(key)
    }

    func bool(_ key: String) throws(ProtocolError) -> Bool {
        let value = try required(key)
        guard case .bool(let flag) = value else { throw .wrongType(path(key), expected: "true or false", got: value) }
        return flag
    }

    static func enumValue<E: RawRepresentable & CaseIterable>(
        _ value: JSONValue, _ path: @autoclosure () -> String, as: E.Type = E.self
    ) throws(ProtocolError) -> E where E.RawValue == String {
        var known: String { E.allCases.map { $0.rawValue }.joined(separator: ", ") }
        guard case .string(let text) = value else { throw .wrongType(path(), expected: "one of \(known)", got: value) }
        guard let result = E(rawValue: text) else {
            throw .invalid(path(), "has unknown value \"\(text.prefix(64))\"; expected one of \(known)")
        }
        return result
    }

    func enumValue<E: RawRepresentable & CaseIterable>(_ key: String, as: E.Type = E.self) throws(ProtocolError) -> E
    where E.RawValue == String {
        try Self.enumValue(try required(key), path(key))
    }

    func enumIfPresent<E: RawRepresentable & CaseIterable>(_ key: String, as: E.Type = E.self) throws(ProtocolError) -> E?
    where E.RawValue == String {
        guard let value = present(key) else { return nil }
        return try Self.enumValue(value, path(key))
    }

    // MARK: Arrays and objects

    func array(_ key: String) throws(ProtocolError) -> [JSONValue] {
        let value = try required(key)
        guard case .array(let items) = value else { throw .wrongType(path(key), expected: "an array", got: value) }
        return items
    }

    /// Each element converted by `convert`, which gets the element and its path ("access[1]"),
    /// spelled when called.
    func array<T>(_ key: String, _ convert: (JSONValue, () -> String) throws(ProtocolError) -> T) throws(ProtocolError) -> [T] {
        let items = try array(key)
        var result: [T] = []
        result.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            result.append(try convert(item, { "\(path(key))[\(index)]" }))
        }
        return result
    }

    /// `key`'s access words, each listed at most once (a request's rule).
    func accessList(_ key: String) throws(ProtocolError) -> Set<Access> {
        var rights: Set<Access> = []
        for right in try accessWords(key) where !rights.insert(right).inserted {
            throw .invalid(key, "lists \"\(right.rawValue)\" twice")
        }
        return rights
    }

    /// `key`'s access words as a set (a result's: the daemon lists each once).
    func accessSet(_ key: String) throws(ProtocolError) -> Set<Access> { Set(try accessWords(key)) }

    private func accessWords(_ key: String) throws(ProtocolError) -> [Access] {
        try array(key) { (item, path) throws(ProtocolError) in try Fields.enumValue(item, path(), as: Access.self) }
    }

    func strings(_ key: String) throws(ProtocolError) -> [String] {
        try array(key) { (item, path) throws(ProtocolError) in
            guard case .string(let text) = item else { throw .wrongType(path(), expected: "a string", got: item) }
            return text
        }
    }

    func object(_ key: String) throws(ProtocolError) -> Fields {
        let value = try required(key)
        guard case .object(let object) = value else { throw .wrongType(path(key), expected: "an object", got: value) }
        return Fields(object, path: path(key))
    }

    func objects(_ key: String) throws(ProtocolError) -> [Fields] {
        let items = try array(key)
        let path = path(key)
        var result: [Fields] = []
        result.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            guard case .object(let object) = item else { throw .wrongType("\(path)[\(index)]", expected: "an object", got: item) }
            result.append(Fields(object, path: path, index: index))
        }
        return result
    }
}
