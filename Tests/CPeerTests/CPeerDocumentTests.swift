import Foundation
import TestSupport
import XCTest

@testable import MRLeaseGrant

/// docs/protocol.md's C peer on any machine: it is one block of under 200 lines, compiles
/// warning-free with the printed command, and refuses bad input before it opens rdma_cm.
final class CPeerDocumentTests: XCTestCase {
    /// The known-answer descriptors listed in docs/protocol.md §8 (IPv4 and IPv6).
    private func knownAnswers() throws -> [String] {
        let lines = try CPeerProgram.document("protocol.md").split(separator: "\n")
        let found = lines.map { $0.trimmingCharacters(in: .whitespaces) }.filter { $0.hasPrefix("mrlg") }
        XCTAssertEqual(found.count, 2, "docs/protocol.md lists an IPv4 and an IPv6 descriptor")
        return found
    }

    func testTheSectionHoldsOneCBlockUnder200LinesAndPrintsItsBuildCommand() throws {
        let section = try CPeerProgram.section()
        XCTAssertEqual(CPeerProgram.blocks(in: section).count, 1, "exactly one ```c block")
        let source = try CPeerProgram.source()
        let lines = source.split(separator: "\n", omittingEmptySubsequences: false).count - 1
        print("cpeer: the C peer is \(lines) lines")
        XCTAssertLessThan(lines, CPeerProgram.lineLimit, "the C peer must stay under \(CPeerProgram.lineLimit) lines")
        XCTAssertTrue(section.contains("cc " + CPeerProgram.buildArguments.joined(separator: " ")), "the section prints the build command the test uses")
        XCTAssertTrue(source.contains(CPeerProgram.Exit.declaration), "the exit statuses the tests expect")
        XCTAssertFalse(source.contains("zlib.h"), "the CRC-32 is computed in the program")
    }

    func testItCompilesWarningFreeWithThePrintedCommand() throws {
        let build = try CPeerProgram.build()
        XCTAssertEqual(build.compilerOutput, "", "cc said something: warnings count")
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: build.binary))
    }

    /// Each malformed descriptor is refused with status 2 and a message naming what is wrong,
    /// before any rdma_cm call (none is named): on the host there is no device to reach anyway,
    /// in the guests there is one and it must not be touched.
    func testMalformedDescriptorsAreRefusedBeforeAnyRDMACall() throws {
        let good = try knownAnswers()[0]
        let bytes = try GrantDescriptor(text: good).encoded()
        func resealed(_ change: (inout [UInt8]) -> Void) -> String {
            var body = Array(bytes.dropLast(4))
            change(&body)
            let crc = CRC32.checksum(body)
            return Base64URL.encode(body + [UInt8(crc >> 24), UInt8(truncatingIfNeeded: crc >> 16), UInt8(truncatingIfNeeded: crc >> 8), UInt8(truncatingIfNeeded: crc)])
        }
        var badCRC = bytes
        badCRC[badCRC.count - 1] ^= 0x01
        var otherGrant = bytes
        otherGrant[12] ^= 0x40   // a grant id byte changed, CRC kept: a copying mistake
        var plus = Array(good)
        plus[10] = "+"
        let cases: [(String, String, String)] = [
            ("a wrong CRC", Base64URL.encode(badCRC), "CRC-32 mismatch"),
            ("a changed grant id under the old CRC", Base64URL.encode(otherGrant), "CRC-32 mismatch"),
            ("a standard-base64 character", String(plus), "character 11 (0x2b) is not base64url"),
            ("padding", good + "=", "53 characters"),
            ("inner whitespace", String(good.prefix(20)) + " " + String(good.dropFirst(20)), "53 characters"),
            ("one character short", String(good.dropLast()), "51 characters"),
            ("four characters more", good + "AAAA", "56 characters"),
            ("nothing", "", "0 characters"),
            ("another magic", resealed { $0[0] = 0x9B }, "magic"),
            ("version 2", resealed { $0[3] = 2 }, "version 2"),
            ("family 6 on an IPv4 length", resealed { $0[4] = 6 }, "family 6"),
        ]
        for (what, descriptor, message) in cases {
            let run = try CPeerProgram.run([descriptor, "write", "0", "4096"])
            XCTAssertEqual(run.status, CPeerProgram.Exit.usage.rawValue, "\(what): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains("descriptor: ") && run.stderr.contains(message), "\(what): expected '\(message)', got \(run.stderr)")
            XCTAssertFalse(run.stderr.contains("rdma_"), "\(what) reached rdma_cm: \(run.stderr)")
            XCTAssertEqual(run.stdout, [], what)
        }
    }

    func testBadArgumentsAreRefusedWithTheUsageStatus() throws {
        let good = try knownAnswers()[0]
        let cases: [([String], String)] = [
            ([], "usage: peer"),
            ([good, "copy", "0", "1"], "usage: peer"),
            ([good, "read", "0", "1", "7"], "usage: peer"),
            ([good, "write", "0", "0"], "LENGTH: must be at least 1"),
            ([good, "write", "-1", "1"], "OFFSET: '-1' is not a number"),
            ([good, "write", "0", "4k"], "LENGTH: '4k' is not a number"),
            ([good, "write", "0", "4096", "256"], "BYTE: '256' is not a number from 0 to 255"),
            ([good, "read", "0", "\(1 << 30 + 1)"], "LENGTH: '\(1 << 30 + 1)' is not a number from 0 to \(1 << 30)"),
        ]
        for (arguments, message) in cases {
            let run = try CPeerProgram.run(arguments)
            XCTAssertEqual(run.status, CPeerProgram.Exit.usage.rawValue, "\(arguments.dropFirst()): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains(message), "expected '\(message)', got \(run.stderr)")
            XCTAssertFalse(run.stderr.contains("rdma_"), "reached rdma_cm: \(run.stderr)")
        }
    }

    /// The documented descriptors (IPv4 and IPv6, also with a pasted line's whitespace) decode;
    /// on a machine without RDMA the first thing that fails is rdma_cm, and it says so.
    func testTheKnownAnswerDescriptorsDecodeAndFailOnlyAtRDMACM() throws {
        try Facility.requireNoRDMADevice()
        for descriptor in try knownAnswers() {
            for text in [descriptor, " \(descriptor)\n"] {
                let run = try CPeerProgram.run([text, "read", "0", "64"])
                XCTAssertEqual(run.status, CPeerProgram.Exit.verbs.rawValue, run.stderr)
                XCTAssertTrue(run.stderr.hasPrefix("peer: rdma_"), "not an rdma_cm failure: \(run.stderr)")
                XCTAssertFalse(run.stderr.contains("descriptor"), run.stderr)
                XCTAssertEqual(run.stderr.split(separator: "\n").count, 1, "one clear line: \(run.stderr)")
            }
        }
    }
}
