/// `revoking-file`: one event for a connection's regions of one file that a revocation takes
/// (docs/protocol.md §5), sent instead of one `revoking` per region to a connection whose
/// `hello` asked for `revokingPerFile`. Answered with one `ack` of `file`.
public struct RevokingFile: Sendable, Equatable {
    /// The file as `list` names it: `major:minor:inode`.
    public var file: String
    /// The regions as runs of ids, ascending and apart: every id in a run is one of the
    /// connection's regions of `file`.
    public var runs: [ClosedRange<UInt64>]
    public var reason: RevocationReason
    /// Milliseconds from now until the daemon revokes without waiting for `ack`.
    public var deadlineMillis: UInt64
    /// The same deadline as Unix time in milliseconds, for logs.
    public var deadlineUnixMillis: UInt64?
    /// Another `revoking-file` for the same file and revocation follows (the runs did not fit
    /// one message).
    public var more: Bool

    /// The most runs one event carries: each takes at most 44 bytes (`[first,last],` with
    /// 20-digit ids), so 1024 fit a message with room to spare.
    public static let maxRuns = 1024

    public init(file: String, runs: [ClosedRange<UInt64>], reason: RevocationReason, deadlineMillis: UInt64,
                deadlineUnixMillis: UInt64? = nil, more: Bool = false) {
        self.file = file
        self.runs = runs
        self.reason = reason
        self.deadlineMillis = deadlineMillis
        self.deadlineUnixMillis = deadlineUnixMillis
        self.more = more
    }

    /// How many regions the runs hold.
    public var count: UInt64 { runs.reduce(0) { $0 + ($1.upperBound - $1.lowerBound + 1) } }

    /// Every region id the runs hold, ascending.
    public var regions: [UInt64] { runs.flatMap { Array($0) } }

    /// Ascending ids cut into runs of consecutive ids, then into events of at most `maxRuns`
    /// runs each; every event but the last says `more`.
    public static func events(file: String, regions ids: [UInt64], reason: RevocationReason, deadlineMillis: UInt64,
                              deadlineUnixMillis: UInt64? = nil) -> [RevokingFile] {
        var runs: [ClosedRange<UInt64>] = []
        for id in ids {
            if let last = runs.last, last.upperBound &+ 1 == id, last.upperBound != .max {
                runs[runs.count - 1] = last.lowerBound...id
            } else {
                runs.append(id...id)
            }
        }
        var events: [RevokingFile] = []
        var start = 0
        repeat {
            let end = Swift.min(start + maxRuns, runs.count)
            events.append(RevokingFile(file: file, runs: Array(runs[start..<end]), reason: reason, deadlineMillis: deadlineMillis,
                                       deadlineUnixMillis: deadlineUnixMillis, more: end < runs.count))
            start = end
        } while start < runs.count
        return events
    }
}

extension RevokingFile {
    init(_ f: Fields) throws(ProtocolError) {
        file = try f.string("file")
        guard FileName.isValid(file) else { throw .invalid("file", "must be major:minor:inode in decimal, not \"\(file)\"") }
        runs = try f.array("regions") { value, path throws(ProtocolError) in
            guard case .array(let pair) = value, pair.count == 2 else {
                throw .wrongType(path(), expected: "a run [first, last]", got: value)
            }
            let first: UInt64 = try Fields.unsigned(pair[0], "\(path())[0]")
            let last: UInt64 = try Fields.unsigned(pair[1], "\(path())[1]")
            guard first <= last else { throw .invalid(path(), "a run's first id \(first) is above its last \(last)") }
            return first...last
        }
        guard !runs.isEmpty, runs.count <= Self.maxRuns else {
            throw .invalid("regions", "must hold 1 to \(Self.maxRuns) runs, not \(runs.count)")
        }
        for (previous, next) in zip(runs, runs.dropFirst()) where previous.upperBound >= next.lowerBound {
            throw .invalid("regions", "runs must be ascending and apart: \(previous) is followed by \(next)")
        }
        // Each run is at most 2^64 ids: summed with overflow checked, for a count that disagrees.
        var total: UInt64 = 0
        for run in runs {
            let (sum, overflow) = total.addingReportingOverflow(run.upperBound - run.lowerBound)
            let (counted, overflowAgain) = sum.addingReportingOverflow(1)
            guard !overflow, !overflowAgain else { throw .invalid("regions", "hold more than 2^64 ids") }
            total = counted
        }
        let count = try f.uint64("count")
        guard count == total else { throw .invalid("count", "is \(count), but the runs hold \(total) regions") }
        reason = try f.enumValue("reason")
        deadlineMillis = try f.uint64("deadlineMillis")
        deadlineUnixMillis = try f.uint64IfPresent("deadlineUnixMillis")
        more = try f.boolIfPresent("more") ?? false
    }

    func write(to o: inout ObjectWriter) {
        o.set("file", .string(file))
        o.set("regions", .array(runs.map { .array([.integer($0.lowerBound), .integer($0.upperBound)]) }))
        o.set("count", .integer(count))
        o.set("reason", .string(reason.rawValue))
        o.set("deadlineMillis", .integer(deadlineMillis))
        o.set("deadlineUnixMillis", deadlineUnixMillis.map(JSONValue.integer))
        o.set("more", more ? .bool(true) : nil)
    }
}

/// A file's name on the wire: `major:minor:inode`, decimal (`list`'s `file`).
public enum FileName {
    public static func isValid(_ name: String) -> Bool { parse(name) != nil }

    /// The three numbers, or nil when `name` is not three decimal numbers joined by `:`.
    public static func parse(_ name: String) -> (major: UInt32, minor: UInt32, inode: UInt64)? {
        let parts = name.utf8.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.count <= 20 && $0.allSatisfy { $0 >= 48 && $0 <= 57 } }),
              let major = UInt32(String(decoding: parts[0], as: UTF8.self)),
              let minor = UInt32(String(decoding: parts[1], as: UTF8.self)),
              let inode = UInt64(String(decoding: parts[2], as: UTF8.self)) else { return nil }
        return (major, minor, inode)
    }
}
