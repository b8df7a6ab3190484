import XCTest

@testable import MRLeaseGrant

/// Every class of bad input is refused with its own error; random bytes never trap.
final class MalformedInputTests: XCTestCase {
    let v4 = KnownAnswerTests.ipv4Bytes
    let v6 = KnownAnswerTests.ipv6Bytes

    func assertDescriptor(_ bytes: [UInt8], fails problem: GrantFormatError.Problem, line: UInt = #line) {
        XCTAssertThrowsError(try GrantDescriptor(decoding: bytes), line: line) { error in
            XCTAssertEqual(error as? GrantFormatError, GrantFormatError(.descriptor, problem), line: line)
        }
    }

    /// The descriptor's CRC-32 recomputed after an edit, so the edit itself is what is caught.
    func resealed(_ bytes: [UInt8]) -> [UInt8] {
        var body = Array(bytes.dropLast(4))
        let crc = CRC32.checksum(body)
        body += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: crc >> $0) }
        return body
    }

    func testDescriptorTruncatedAtEveryLength() {
        for length in 0..<v4.count {
            assertDescriptor(Array(v4.prefix(length)), fails: .truncated(needed: 39, got: length))
        }
        // Once the family byte says IPv6, the IPv6 size is what is needed.
        for length in 5..<v6.count {
            assertDescriptor(Array(v6.prefix(length)), fails: .truncated(needed: 51, got: length))
        }
    }

    func testDescriptorHeaderErrors() {
        var bytes = v4
        bytes[0] = 0x9B
        assertDescriptor(bytes, fails: .badMagic)
        bytes = v4
        bytes[3] = 2
        assertDescriptor(resealed(bytes), fails: .unsupportedVersion(2))
        bytes[3] = 0
        assertDescriptor(resealed(bytes), fails: .unsupportedVersion(0))
        bytes = v4
        for family: UInt8 in [0, 2, 5, 10, 255] {
            bytes[4] = family
            assertDescriptor(bytes, fails: .badAddressFamily(family))
        }
    }

    func testDescriptorChecksumCatchesAnyFlippedBit() {
        // Every bit after the family byte (earlier ones fail on magic, version or family first).
        for index in 5..<v4.count {
            for bit in 0..<8 {
                var bytes = v4
                bytes[index] ^= 1 << bit
                assertDescriptor(bytes, fails: .checksumMismatch)
            }
        }
    }

    func testDescriptorTrailingBytes() {
        assertDescriptor(v4 + [0], fails: .trailingBytes(count: 1))
        assertDescriptor(v4 + v4, fails: .trailingBytes(count: 39))
        assertDescriptor(v6 + [1, 2, 3], fails: .trailingBytes(count: 3))
    }

    func assertText(_ text: String, fails expected: GrantFormatError, line: UInt = #line) {
        XCTAssertThrowsError(try GrantDescriptor(text: text), line: line) { error in
            XCTAssertEqual(error as? GrantFormatError, expected, line: line)
        }
    }

    func testDescriptorTextErrors() throws {
        let text = KnownAnswerTests.ipv4Text
        assertText("TUwB" + text.dropFirst(4), fails: GrantFormatError(.descriptorText, .badMagic))
        assertText("", fails: GrantFormatError(.descriptor, .truncated(needed: 39, got: 0)))
        assertText("mrlgA", fails: GrantFormatError(.descriptorText, .invalidTextLength(5)))
        assertText(text + "=", fails: GrantFormatError(.descriptorText, .invalidTextLength(53)))
        assertText(String(text.dropLast()) + "=", fails: GrantFormatError(.descriptorText, .invalidCharacter(offset: 51)))
        assertText("mrlg+AQQ", fails: GrantFormatError(.descriptorText, .invalidCharacter(offset: 4)))
        assertText("mrlgA QQ", fails: GrantFormatError(.descriptorText, .invalidCharacter(offset: 5)))
        // Standard base64's "/" in base64url's "_" position.
        assertText(KnownAnswerTests.ipv6Text.replacingOccurrences(of: "_", with: "/"),
                   fails: GrantFormatError(.descriptorText, .invalidCharacter(offset: 9)))
        // "mrlgAQ" decodes to 4 bytes with the last character's low 4 bits unused: "mrlgAR" sets one.
        assertText("mrlgAR", fails: GrantFormatError(.descriptorText, .nonCanonicalText))
        assertText(text + "mrlg", fails: GrantFormatError(.descriptor, .trailingBytes(count: 3)))
        // A pasted line's surrounding whitespace is not an error.
        XCTAssertEqual(try GrantDescriptor(text: "  " + text + "\n"), KnownAnswerTests.ipv4Descriptor)
    }

    func testErrorsSayWhatToDoWithoutQuotingInput() {
        let error = GrantFormatError(.descriptor, .truncated(needed: 39, got: 20))
        XCTAssertEqual(error.description, "grant descriptor: truncated: 20 bytes where 39 are needed; copy the whole grant descriptor")
        XCTAssertTrue(GrantFormatError(.descriptorText, .badMagic).description.contains("starts with \"mrlg\""))
        XCTAssertTrue(GrantFormatError(.reject, .badMagic).description.contains("all zeros"))
    }

    func testRandomBytesAndMutationsNeverTrap() throws {
        var generator = SplitMix64(seed: 0x6D72_6C65_6173_6564)
        let seeds = [v4, v6, KnownAnswerTests.connectBytes, KnownAnswerTests.acceptBytes, KnownAnswerTests.rejectBytes]
        var accepted = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int(generator.next() % 210)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            } else {
                bytes = seeds[Int(generator.next() % UInt64(seeds.count))]
                for _ in 0..<Int(generator.next() % 3) where !bytes.isEmpty {
                    bytes[Int(generator.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: generator.next())
                }
                bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count + 8))))
            }
            // Whatever decodes must encode back to the bytes it came from (minus zero padding).
            if let value = try? GrantDescriptor(decoding: bytes) { accepted += 1; XCTAssertEqual(value.encoded(), bytes) }
            if let value = try? ConnectPrivateData(decoding: bytes) { accepted += 1; XCTAssertEqual(value.encoded(), Array(bytes.prefix(ConnectPrivateData.size))) }
            if let value = try? AcceptPrivateData(decoding: bytes) { accepted += 1; XCTAssertEqual(value.encoded(), Array(bytes.prefix(AcceptPrivateData.size))) }
            if let value = try? RejectPrivateData(decoding: bytes) { accepted += 1; XCTAssertEqual(value.encoded(), Array(bytes.prefix(RejectPrivateData.size))) }
            let text = String(decoding: bytes.map { $0 & 0x7F }, as: UTF8.self)
            if let value = try? GrantDescriptor(text: text) { accepted += 1; XCTAssertEqual(value.text, text) }
        }
        // The mutations leave some inputs valid (a mutation of padding, or of a field to a valid value).
        XCTAssertGreaterThan(accepted, 0)
    }
}

/// SplitMix64, seeded, so a failing round can be replayed. The same generator as
/// MRLeaseProtocolTests' SeededGenerator: a copy because this target links MRLeaseGrant alone
/// (TestSupport would bring Verbs and libibverbs), as MRLeasePolicyTests does.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
