import Foundation
import MRLeaseClient

/// `--json` output: the protocol's own objects (docs/protocol.md), so a script reads the same
/// shapes whether it asks the CLI or the socket. Keys are sorted for stable output.
enum WireJSON {
    /// The `result` object of a successful reply carrying `result`.
    static func object(_ result: ReplyResult) -> [String: Any] {
        let message = parse(Codec.encode(Reply(id: 0, result)))
        return message["result"] as? [String: Any] ?? [:]
    }

    /// An event's fields, without the envelope's `v` and `type`.
    static func object(_ event: Event) -> [String: Any] {
        var message = parse(Codec.encode(event))
        message["v"] = nil
        message["type"] = nil
        return message
    }

    static func line(_ object: Any, pretty: Bool = false) -> String {
        var options: JSONSerialization.WritingOptions = [.sortedKeys, .withoutEscapingSlashes]
        if pretty { options.insert(.prettyPrinted) }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: options) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    private static func parse(_ bytes: [UInt8]) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? [:]
    }
}

/// Plain-text helpers shared by the tables.
enum Format {
    static func bytes(_ value: UInt64) -> String {
        if value == .max { return "unlimited" }
        if value >= 1 << 30, value % (1 << 30) == 0 { return "\(value >> 30) GiB" }
        if value >= 1 << 20, value % (1 << 20) == 0 { return "\(value >> 20) MiB" }
        if value >= 1 << 10, value % (1 << 10) == 0 { return "\(value >> 10) KiB" }
        return "\(value) B"
    }

    static func hex(_ value: UInt32?) -> String { value.map { "0x" + String($0, radix: 16) } ?? "-" }

    static func access(_ set: Set<Access>) -> String {
        Access.allCases.filter(set.contains).map(\.rawValue).joined(separator: ",")
    }

    /// Columns padded to their widest cell, two spaces apart.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
