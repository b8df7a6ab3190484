import Foundation
import MRLeaseDaemon
import MRLeaseProtocol
import TestSupport
import XCTest

/// The default socket path has one owner per language: `Codec.defaultSocketPath` in Swift (the
/// daemon's default and the client's), `MRLEASE_DEFAULT_SOCKET` in the C header, and for the
/// shell and systemd `Config/mrleased.socket` (Scripts/install reads it from there). They must
/// say the same, or a C client and the daemon miss each other.
final class SocketPathTests: XCTestCase {
    func text(_ path: String) throws -> String {
        try String(contentsOfFile: Subprocess.repositoryRoot + "/" + path, encoding: .utf8)
    }

    /// The value of the first line of `text` that starts with `prefix`, quotes and spaces trimmed.
    func value(after prefix: String, in text: String) -> String? {
        text.split(separator: "\n").first { $0.hasPrefix(prefix) }
            .map { $0.dropFirst(prefix.count).trimmingCharacters(in: CharacterSet(charactersIn: " \t\"")) }
    }

    func testEveryLanguageNamesTheSameDefaultSocket() throws {
        let swift = Codec.defaultSocketPath
        XCTAssertEqual(DaemonConfiguration().socketPath, swift, "the daemon's default")
        XCTAssertEqual(value(after: "#define MRLEASE_DEFAULT_SOCKET", in: try text("clib/include/mrlease.h")), swift,
                       "clib/include/mrlease.h's MRLEASE_DEFAULT_SOCKET")
        XCTAssertEqual(value(after: "ListenSequentialPacket=", in: try text("Config/mrleased.socket")), swift,
                       "Config/mrleased.socket (what Scripts/install reports)")
        XCTAssertEqual(value(after: "socket =", in: try text("Config/mrleased.conf")), swift, "Config/mrleased.conf")
        XCTAssertFalse(try text("Scripts/install").contains(swift), "Scripts/install spells the path itself instead of reading the unit")
    }
}
