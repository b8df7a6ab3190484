/// What a client asks remote peers may do with a region: remote read, write, atomics. The verbs
/// flags each maps to live with the code that registers (MRLeaseEngine); this is the pure set.
public struct RegionAccess: OptionSet, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let read = RegionAccess(rawValue: 1 << 0)
    public static let write = RegionAccess(rawValue: 1 << 1)
    public static let atomic = RegionAccess(rawValue: 1 << 2)

    /// Whether the region needs a writable fd and mapping.
    public var isWritable: Bool { contains(.write) || contains(.atomic) }

    public var names: [String] {
        [(RegionAccess.read, "read"), (.write, "write"), (.atomic, "atomic")].filter { contains($0.0) }.map(\.1)
    }

    public var description: String { names.joined(separator: ",") }

    /// Parses "read,write" style lists; nil for unknown words or an empty list.
    public init?(names: String) {
        var access: RegionAccess = []
        for word in names.split(separator: ",") {
            switch word.trimmingSpaces() {
            case "read": access.insert(.read)
            case "write": access.insert(.write)
            case "atomic": access.insert(.atomic)
            default: return nil
            }
        }
        guard !access.isEmpty else { return nil }
        self = access
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return text
    }
}
