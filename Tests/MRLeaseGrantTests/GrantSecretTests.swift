import XCTest

@testable import MRLeaseGrant

final class GrantSecretTests: XCTestCase {
    func testRandomSecretsComeFromTheKernelAndDiffer() throws {
        // 2^-128 per pair to collide: a repeat means the generator is broken, not bad luck.
        let secrets = try (0..<64).map { _ in try GrantSecret.random() }
        for (index, secret) in secrets.enumerated() {
            for other in secrets[(index + 1)...] { XCTAssertNotEqual(secret, other) }
        }
        // All zero is what a buffer getrandom never filled would hold.
        XCTAssertFalse(secrets.contains { $0.bytes.allSatisfy { $0 == 0 } })
    }

    /// Equality has no early exit (a timing attack on it would reveal the secret byte by byte);
    /// timing cannot be asserted reliably in a test, so this checks it is still right equality:
    /// equal when every byte is, unequal when any single byte or bit differs, wherever it is.
    func testConstantTimeEqualityIsEquality() throws {
        let base = (0..<16).map { UInt8($0 * 7 + 3) }
        let secret = try GrantSecret(bytes: base)
        XCTAssertTrue(secret == (try GrantSecret(bytes: base)))
        for index in 0..<16 {
            for bit in 0..<8 {
                var changed = base
                changed[index] ^= 1 << bit
                let other = try GrantSecret(bytes: changed)
                XCTAssertFalse(secret == other, "byte \(index) bit \(bit)")
                XCTAssertTrue(secret != other)
            }
        }
    }

    func testBytesRoundTripInOrder() throws {
        let bytes = (0..<16).map { UInt8($0) }
        XCTAssertEqual(try GrantSecret(bytes: bytes).bytes, bytes)
    }

    func testWrongLengthIsRefused() {
        for count in [0, 15, 17, 32] {
            XCTAssertThrowsError(try GrantSecret(bytes: [UInt8](repeating: 1, count: count))) { error in
                XCTAssertEqual(error as? GrantFormatError, GrantFormatError(.secret, .wrongSecretLength(count)))
            }
        }
    }

    /// Every way Swift turns a value into text: none may contain the secret, in hex (either case),
    /// as decimal words, as a byte list, or (through a descriptor) as the descriptor's text.
    func testNoDescriptionLeaksTheSecret() throws {
        let secret = try GrantSecret.random()
        let descriptor = GrantDescriptor(endpoint: GrantEndpoint(address: .ipv4(0xC000_0201), port: 7471), grantID: 9, secret: secret)
        let connect = ConnectPrivateData(descriptor)
        var dumped = ""
        dump(secret, to: &dumped)
        dump(descriptor, to: &dumped)
        dump(connect, to: &dumped)
        let renderings = [
            "\(secret)", String(describing: secret), String(reflecting: secret),
            "\(descriptor)", String(describing: descriptor), String(reflecting: descriptor),
            "\(connect)", String(reflecting: connect), "\([secret])", "\(Optional(descriptor) as Any)", dumped,
        ]
        let bytes = secret.bytes
        let hexLower = bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        let forbidden = [hexLower, hexLower.uppercased(), String(secret.high), String(secret.low),
                         bytes.map(String.init).joined(separator: ", "), descriptor.text,
                         Base64URL.encode(bytes)]
        for text in renderings {
            XCTAssertTrue(text.contains("hidden"), text)
            for secretForm in forbidden { XCTAssertFalse(text.contains(secretForm), "\(text) contains the secret") }
        }
    }
}
