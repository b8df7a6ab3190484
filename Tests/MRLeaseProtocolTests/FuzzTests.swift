import MRLeaseProtocol
import XCTest

/// SplitMix64: a fixed seed gives the same inputs on every run and machine.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class FuzzTests: XCTestCase {
    static let alphabet = Array(#"{}[]:,"\-.0123456789eEtrufalsn uv\"#.utf8) + [0x00, 0x1F, 0x7F, 0xC3, 0xA9, 0xED, 0xA0, 0xFF]

    func mutate(_ packet: [UInt8], _ rng: inout SeededGenerator) -> [UInt8] {
        var bytes = packet
        for _ in 0...Int.random(in: 0...3, using: &rng) {
            let at = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<6, using: &rng) {
            case 0 where !bytes.isEmpty: bytes[at] = UInt8.random(in: 0...255, using: &rng)
            case 1: bytes.insert(Self.alphabet.randomElement(using: &rng)!, at: at)
            case 2 where !bytes.isEmpty: bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...8, using: &rng)))
            case 3: bytes = Array(bytes.prefix(at))
            case 4 where !bytes.isEmpty:
                let end = min(bytes.count, at + Int.random(in: 1...16, using: &rng))
                bytes.insert(contentsOf: bytes[at..<end], at: at)
            default: bytes[at...].reverse()
            }
        }
        return bytes
    }

    func testTwentyThousandHostileInputsOnlyEverThrowProtocolErrors() {
        var rng = SeededGenerator(state: 0x6D72_6C65_6173_6564)  // "mrleased"
        let packets = Samples.packets
        let expected: Set<ErrorCode> = [.badRequest, .unsupportedVersion, .messageTooLarge]
        var decoded = 0, rejected: [ErrorCode: Int] = [:]
        for round in 0..<20_000 {
            let input: [UInt8]
            switch round % 4 {
            case 0: input = (0..<Int.random(in: 0...96, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1: input = (0..<Int.random(in: 0...96, using: &rng)).map { _ in Self.alphabet.randomElement(using: &rng)! }
            default: input = mutate(packets.randomElement(using: &rng)!, &rng)
            }
            // Typed throws: whatever escapes these is a ProtocolError by construction.
            do { _ = try Codec.decodeRequest(input); decoded += 1 } catch { rejected[error.code, default: 0] += 1 }
            do { _ = try Codec.decodeServerMessage(input); decoded += 1 } catch { rejected[error.code, default: 0] += 1 }
            _ = Codec.errorReply(to: input, .messageTooLarge)
        }
        XCTAssertTrue(Set(rejected.keys).isSubset(of: expected), "\(rejected)")
        XCTAssertGreaterThan(decoded, 100, "mutations reached past the parser into the field checks")
        XCTAssertGreaterThan(rejected[.badRequest, default: 0], 10_000)
    }

    func testDeepNestingIsRefusedWithoutExhaustingTheStack() {
        let deep = Array(repeating: UInt8(ascii: "["), count: Codec.maxMessageBytes)
        XCTAssertThrowsError(try Codec.decodeRequest(deep))
        let objects = Array(String(repeating: "{\"a\":", count: 10_000).utf8)
        XCTAssertThrowsError(try Codec.decodeServerMessage(objects))
    }
}
