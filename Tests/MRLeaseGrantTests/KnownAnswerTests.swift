import Foundation
import XCTest

@testable import MRLeaseGrant

/// Fixed bytes ↔ fixed values, written from the layouts in docs/protocol.md §8 (not from the
/// encoder), with the descriptors' CRC-32 and base64url computed by Python's zlib and base64.
/// A C peer checks itself against the same vectors (the document lists them).
final class KnownAnswerTests: XCTestCase {
    static let secretA = try! GrantSecret(bytes: (0..<16).map { UInt8($0 * 0x11) })  // 00 11 22 … ff
    static let secretB = try! GrantSecret(bytes: (0..<16).reversed().map { UInt8($0) })  // 0f 0e … 00

    static let ipv4Descriptor = GrantDescriptor(
        endpoint: GrantEndpoint(address: .ipv4(0xC000_0201), port: 7471), grantID: 0x0102_0304_0506_0708, secret: secretA)
    static let ipv4Bytes = hex("9ab96001041d2fc0000201010203040506070800112233445566778899aabbccddeeff7c58191a")
    static let ipv4Text = "mrlgAQQdL8AAAgEBAgMEBQYHCAARIjNEVWZ3iJmqu8zd7v98WBka"

    static let ipv6Descriptor = GrantDescriptor(
        endpoint: GrantEndpoint(address: .ipv6(high: 0xFD00_0077_0000_0000, low: 1), port: 7471), grantID: 42, secret: secretB)
    static let ipv6Bytes = hex("9ab96001061d2ffd000077000000000000000000000001000000000000002a0f0e0d0c0b0a09080706050403020100b592f29e")
    static let ipv6Text = "mrlgAQYdL_0AAHcAAAAAAAAAAAAAAAEAAAAAAAAAKg8ODQwLCgkIBwYFBAMCAQC1kvKe"

    static let connectBytes = hex("4d4c0101" + "00000000" + "0102030405060708" + "00112233445566778899aabbccddeeff")
    static let acceptBytes = hex("4d4c0102" + "00000003" + "00007f0000001000" + "0000000000200000" + "12345678"
                                 + "00001000" + "0000000000000007" + "0102030405060708")
    static let rejectBytes = hex("4d4c0103" + "0008" + "0000" + "000001f4")

    func testDescriptorBytesAndText() throws {
        let vectors = [(Self.ipv4Descriptor, Self.ipv4Bytes, Self.ipv4Text, "192.0.2.1:7471"),
                       (Self.ipv6Descriptor, Self.ipv6Bytes, Self.ipv6Text, "[fd00:77::1]:7471")]
        for (descriptor, bytes, text, endpoint) in vectors {
            XCTAssertEqual(descriptor.encoded(), bytes)
            XCTAssertEqual(descriptor.text, text)
            XCTAssertEqual(try GrantDescriptor(decoding: bytes), descriptor)
            XCTAssertEqual(try GrantDescriptor(text: text), descriptor)
            XCTAssertEqual(descriptor.endpoint.description, endpoint)
        }
    }

    func testConnectRequestBytes() throws {
        let request = ConnectPrivateData(Self.ipv4Descriptor)
        XCTAssertEqual(request.encoded(), Self.connectBytes)
        XCTAssertEqual(try ConnectPrivateData(decoding: Self.connectBytes), request)
    }

    func testAcceptBytes() throws {
        let accept = try AcceptPrivateData(access: [.read, .write], remoteAddress: 0x7F00_0000_1000, length: 2 << 20,
                                           rkey: 0x1234_5678, transferAlignment: 4096, generation: 7, grantID: 0x0102_0304_0506_0708)
        XCTAssertEqual(accept.encoded(), Self.acceptBytes)
        XCTAssertEqual(try AcceptPrivateData(decoding: Self.acceptBytes), accept)
    }

    func testRejectBytes() throws {
        let reject = RejectPrivateData(reason: .regionRevoking, retryAfterMilliseconds: 500)
        XCTAssertEqual(reject.encoded(), Self.rejectBytes)
        XCTAssertEqual(try RejectPrivateData(decoding: Self.rejectBytes), reject)
    }

    func testCRC32IsZlibs() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(CRC32.checksum([]), 0)
    }

    func testBase64URLMatchesRFC4648Vectors() throws {
        // RFC 4648 §10, without padding; then the two characters base64 and base64url differ in.
        let vectors = ["": "", "f": "Zg", "fo": "Zm8", "foo": "Zm9v", "foob": "Zm9vYg", "fooba": "Zm9vYmE", "foobar": "Zm9vYmFy"]
        for (plain, encoded) in vectors {
            XCTAssertEqual(Base64URL.encode(Array(plain.utf8)), encoded)
            XCTAssertEqual(try Base64URL.decode(Substring(encoded).utf8, layout: .descriptorText), Array(plain.utf8))
        }
        XCTAssertEqual(Base64URL.encode([0xFB, 0xFF]), "-_8")
        XCTAssertEqual(try Base64URL.decode(Substring("-_8").utf8, layout: .descriptorText), [0xFB, 0xFF])
    }
}

func hex(_ text: String) -> [UInt8] {
    let digits = Array(text.utf8)
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
}

final class DocumentedVectorsTests: XCTestCase {
    /// docs/protocol.md §8 lists the vectors a C peer checks itself against: they must be these.
    func testDocumentListsTheVectors() throws {
        let docURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/protocol.md")
        let document = try String(contentsOf: docURL, encoding: .utf8)
        func hexString(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
        let vectors = [hexString(KnownAnswerTests.ipv4Bytes), KnownAnswerTests.ipv4Text,
                       hexString(KnownAnswerTests.ipv6Bytes), KnownAnswerTests.ipv6Text,
                       hexString(KnownAnswerTests.connectBytes), hexString(KnownAnswerTests.acceptBytes),
                       hexString(KnownAnswerTests.rejectBytes)]
        for vector in vectors {
            XCTAssertTrue(document.contains("\n  \(vector)\n"), "docs/protocol.md lacks \(vector)")
        }
    }
}
