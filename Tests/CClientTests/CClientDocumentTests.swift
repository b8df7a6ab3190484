import Foundation
import MRLeaseProtocol
import TestSupport
import XCTest

/// What a C programmer reads: libmrlease(3) names every function mrlease.h exports, renders
/// without warnings, and its example compiles warning-free against the built library;
/// docs/c-client.md prints clib/examples/truncate-demo.c exactly (the program the guests run).
final class CClientDocumentTests: XCTestCase {
    static let header = CLibrary.directory + "/include/mrlease.h"
    static let manual = CLibrary.directory + "/man/libmrlease.3"

    /// The function names the header exports (each declaration starts `MRLEASE_API`, or
    /// `MRLEASE_SIZED_WRAPPER(` for the inline wrappers of the sized calls, exported too).
    func exportedFunctions() throws -> [String] {
        let text = try String(contentsOfFile: Self.header, encoding: .utf8)
        let wrapper = "MRLEASE_SIZED_WRAPPER("
        let declarations = text.split(separator: "\n").compactMap { line -> Substring? in
            if line.hasPrefix("MRLEASE_API ") { return line }
            return line.hasPrefix(wrapper) ? line.dropFirst(wrapper.count) : nil
        }
        let names = declarations.compactMap { declaration -> String? in
            guard let open = declaration.firstIndex(of: "(") else { return nil }
            return declaration[..<open].split(whereSeparator: { $0 == " " || $0 == "*" }).last.map(String.init)
        }
        XCTAssertGreaterThanOrEqual(names.count, 36, "the header's functions: \(names)")
        return names
    }

    func testTheManualDescribesEveryExportedFunction() throws {
        let manual = try String(contentsOfFile: Self.manual, encoding: .utf8)
        guard let synopsisEnd = manual.range(of: "\n.SH DESCRIPTION\n") else { return XCTFail("libmrlease(3) has no DESCRIPTION") }
        let synopsis = manual[..<synopsisEnd.lowerBound], body = manual[synopsisEnd.upperBound...]
        for name in try exportedFunctions() {
            XCTAssertTrue(synopsis.contains(name + "("), "the SYNOPSIS declares \(name)")
            XCTAssertTrue(body.contains(".BR \(name) ()"), "the DESCRIPTION describes \(name)")
        }
        // Every status of the header's enum is explained.
        let header = try String(contentsOfFile: Self.header, encoding: .utf8)
        guard let open = header.range(of: "typedef enum mrlease_status {"), let close = header.range(of: "} mrlease_status;") else {
            return XCTFail("mrlease.h has no mrlease_status enum")
        }
        let statuses = header[open.upperBound..<close.lowerBound].split(separator: "\n").compactMap { line -> String? in
            let word = line.trimmingCharacters(in: .whitespaces).prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            return word.hasPrefix("MRLEASE_") && word != "MRLEASE_OK" ? String(word) : nil
        }
        // One status per protocol error code (each named in its comment), and the 7 local ones.
        for code in ErrorCode.allCases {
            XCTAssertTrue(header.contains("/* \(code.rawValue)"), "mrlease.h has no status for the protocol's \(code.rawValue)")
        }
        XCTAssertEqual(statuses.count, ErrorCode.allCases.count + 7, "the header's statuses: \(statuses)")
        for status in statuses { XCTAssertTrue(body.contains(status), "libmrlease(3) explains \(status)") }
    }

    func testTheManualRendersWithoutWarnings() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/man") else { throw XCTSkip("needs man (apt-get install man-db)") }
        let run = try Subprocess.run("/bin/sh", ["-c", "MANWIDTH=80 exec man --warnings -l \"$0\"", Self.manual])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(run.stderr, "", "groff warnings")
        let words = run.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
        // groff writes the em dash as "--" where the locale is not UTF-8 (the guests).
        XCTAssertTrue(words.contains("libmrlease — C client library of mrleased") || words.contains("libmrlease -- C client library of mrleased"), run.stdout)
        XCTAssertFalse(run.stdout.contains("mrlease_er-"), "identifiers are not hyphenated")
    }

    /// The EXAMPLES program, as a reader copies it out of the page, builds with -Werror.
    func testTheManualsExampleCompilesAgainstTheLibrary() throws {
        try CLibrary.make()
        let manual = try String(contentsOfFile: Self.manual, encoding: .utf8)
        let blocks = manual.components(separatedBy: ".EX\n").dropFirst().compactMap { $0.components(separatedBy: ".EE\n").first }
        let program = try XCTUnwrap(blocks.first { $0.contains("int main") }, "an example program in EXAMPLES")
        let source = program.replacingOccurrences(of: "\\e", with: "\\").replacingOccurrences(of: "\\-", with: "-")
        let scratch = try ScratchDirectory(name: "mrlease-man-example")
        try source.write(toFile: scratch.path + "/example.c", atomically: true, encoding: .utf8)
        let run = try Subprocess.run("/usr/bin/env", ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", CLibrary.directory + "/include",
                                                      scratch.path + "/example.c", "-L", CLibrary.build, "-lmrlease", "-o", scratch.path + "/example"])
        XCTAssertEqual(run.status, 0, run.stdout + run.stderr)
    }

    func testTheDocumentPrintsTheExampleTheGuestsRun() throws {
        let document = try String(contentsOfFile: Subprocess.repositoryRoot + "/docs/c-client.md", encoding: .utf8)
        let blocks = document.components(separatedBy: "\n```c\n").dropFirst().compactMap { $0.components(separatedBy: "\n```").first.map { $0 + "\n" } }
        let example = try String(contentsOfFile: CLibrary.directory + "/examples/truncate-demo.c", encoding: .utf8)
        XCTAssertTrue(blocks.contains(example), "docs/c-client.md holds clib/examples/truncate-demo.c as a ```c block, unchanged")
        let readme = try String(contentsOfFile: Subprocess.repositoryRoot + "/README.md", encoding: .utf8)
        XCTAssertTrue(readme.contains("docs/c-client.md"), "README links docs/c-client.md")
    }
}
