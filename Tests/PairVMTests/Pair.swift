import Foundation
import TestSupport
import XCTest

/// This guest's place in a `Scripts/vm-test --pair` run: two guests joined by one virtual wire,
/// each with an rxe device on it, and a directory both can write (a host directory over 9p)
/// through which they hand each other what the test needs (a port, a grant descriptor, a
/// report). Scripts/vm/guest.sh exports the MRLEASED_PAIR_* variables.
struct Pair {
    enum Role: String { case a, b }

    let role: Role
    /// This guest's and the other guest's IPv4 and IPv6 addresses on the wire (no brackets).
    let selfV4: String, otherV4: String, selfV6: String, otherV6: String
    /// The rxe device on the wire.
    let device: String
    /// The other guest's kernel series ("6.1", "6.12", "7").
    let otherKernel: String
    /// The directory both guests write.
    let shared: String

    /// The pair, or an XCTSkip outside a pair run (the host, a single guest).
    static func require() throws -> Pair {
        let environment = ProcessInfo.processInfo.environment
        guard let raw = environment["MRLEASED_PAIR_ROLE"], !raw.isEmpty else {
            throw XCTSkip("not in a vm-test --pair guest (MRLEASED_PAIR_ROLE unset)")
        }
        guard let role = Role(rawValue: raw) else { throw TestFailure("MRLEASED_PAIR_ROLE=\(raw): neither a nor b") }
        func value(_ name: String) throws -> String {
            guard let value = environment[name], !value.isEmpty else {
                throw TestFailure("\(name) unset although MRLEASED_PAIR_ROLE=\(raw) (Scripts/vm/guest.sh exports them together)")
            }
            return value
        }
        return Pair(role: role, selfV4: try value("MRLEASED_PAIR_SELF"), otherV4: try value("MRLEASED_PAIR_OTHER"),
                    selfV6: try value("MRLEASED_PAIR_SELF6"), otherV6: try value("MRLEASED_PAIR_OTHER6"),
                    device: try value("MRLEASED_PAIR_DEVICE"), otherKernel: try value("MRLEASED_PAIR_KERNEL_OTHER"),
                    shared: try value("MRLEASED_PAIR_SHARED"))
    }

    /// The two address families of the wire: a tag for handshake names, this guest's address
    /// and the other's.
    var families: [(tag: String, mine: String, theirs: String)] {
        [("v4", selfV4, otherV4), ("v6", selfV6, otherV6)]
    }

    /// "the other guest (role b, kernel 6.1)", for messages.
    var other: String { "the other guest (role \(role == .a ? "b" : "a"), kernel \(otherKernel))" }

    private func path(_ name: String) -> String { (shared as NSString).appendingPathComponent(name) }

    /// Publishes `text` as `name` for the other guest: written under a temporary name and
    /// renamed, so the other guest never reads half of it.
    func publish(_ name: String, _ text: String) throws {
        let temporary = path(".\(name).\(role.rawValue).tmp")
        try Data(text.utf8).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path(name)) == 0 else {
            throw TestFailure("publishing \(name) in \(shared): rename errno \(errno)")
        }
    }

    /// Runs `body`, which publishes `names` in turn; if it throws, each of them not yet
    /// published is published as this guest's failure, so the other guest, waiting for one,
    /// fails at once with this guest's reason instead of at its deadline.
    func session(publishing names: [String], _ body: () throws -> Void) throws {
        do { try body() } catch {
            for name in names where !FileManager.default.fileExists(atPath: path(name)) {
                // Best effort: the other guest then fails at its deadline instead, naming `name`.
                try? publish(name, "error: \(error)")
            }
            throw error
        }
    }

    /// Whether the other guest has published `name` yet (one 9p lookup).
    func published(_ name: String) -> Bool { FileManager.default.fileExists(atPath: path(name)) }

    /// The usual shape of a test with an exporter: role a runs `exporter`, which publishes
    /// `name.STEP` for each of `aSteps`, role b runs `peer`, which publishes each of `bSteps`,
    /// both inside `session`.
    func split(_ name: String, a aSteps: [String], b bSteps: [String],
               exporter: (Pair, String) throws -> Void, peer: (Pair, String) throws -> Void) throws {
        try session(publishing: (role == .a ? aSteps : bSteps).map { "\(name).\($0)" }) {
            try (role == .a ? exporter : peer)(self, name)
        }
    }

    /// Waits for the other guest to publish `name` and returns its text; throws, saying what
    /// the other guest was to do, after `seconds`, or at once when it published a failure.
    func waitFor(_ name: String, seconds: Double = 300, what: String) throws -> String {
        // Every 50 ms: each look is a 9p walk to the host, on the guest's only CPU.
        let text = try poll("\(other) to publish \(name) in \(shared): \(what)", seconds: seconds, pausing: 50_000) {
            FileManager.default.contents(atPath: path(name)).map { String(decoding: $0, as: UTF8.self) }
        }
        if text.hasPrefix("error: ") { throw TestFailure("\(other) failed before \(what): \(text.dropFirst(7))") }
        return text
    }
}

/// Calls `attempt` until it returns a value, pausing `microseconds` after each nil (a file, an
/// rdma_cm event, a completion); throws naming `what` once `seconds` have passed without one.
func poll<T>(_ what: String, seconds: Double, pausing microseconds: UInt32 = 1000, _ attempt: () throws -> T?) throws -> T {
    let deadline = Date().addingTimeInterval(seconds)
    repeat {
        if let value = try attempt() { return value }
        usleep(microseconds)
    } while Date() < deadline
    throw TestFailure("timed out after \(Int(seconds)) s waiting for \(what)")
}

/// nil when `actual == expected`; else how many bytes differ and where the first is, for a
/// failure message that does not print kilobytes.
func difference(_ actual: [UInt8], _ expected: [UInt8]) -> String? {
    guard actual != expected else { return nil }
    let differing = zip(actual, expected).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
    return "\(differing.count) of \(expected.count) bytes differ (lengths \(actual.count)/\(expected.count)), "
        + "the first at \(differing.first ?? min(actual.count, expected.count))"
}
