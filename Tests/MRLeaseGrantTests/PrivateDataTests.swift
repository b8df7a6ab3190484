import XCTest

@testable import MRLeaseGrant

final class PrivateDataTests: XCTestCase {
    func assertFails<T>(_ layout: GrantFormatError.Layout, _ problem: GrantFormatError.Problem, line: UInt = #line,
                        _ decode: () throws -> T) {
        XCTAssertThrowsError(try decode(), line: line) { error in
            XCTAssertEqual(error as? GrantFormatError, GrantFormatError(layout, problem), line: line)
        }
    }

    func testLayoutsFitTheirRdmaCmLimits() {
        XCTAssertLessThanOrEqual(ConnectPrivateData.size, PrivateDataLimit.connectRequest)
        XCTAssertLessThanOrEqual(AcceptPrivateData.size, PrivateDataLimit.accept)
        XCTAssertLessThanOrEqual(RejectPrivateData.size, PrivateDataLimit.reject)
        XCTAssertEqual([PrivateDataLimit.connectRequest, PrivateDataLimit.accept, PrivateDataLimit.reject], [56, 196, 148])
    }

    /// The IB CM delivers the whole private-data field, zero-filled: exactly at the limit decodes,
    /// one byte over does not, and nothing after the layout may be non-zero.
    func testPaddingUpToTheLimitAndNotBeyond() throws {
        let connect = KnownAnswerTests.connectBytes, accept = KnownAnswerTests.acceptBytes, reject = KnownAnswerTests.rejectBytes
        func padded(_ bytes: [UInt8], to size: Int) -> [UInt8] { bytes + [UInt8](repeating: 0, count: size - bytes.count) }

        XCTAssertEqual(try ConnectPrivateData(decoding: padded(connect, to: 56)).grantID, 0x0102_0304_0506_0708)
        XCTAssertEqual(try AcceptPrivateData(decoding: padded(accept, to: 196)).rkey, 0x1234_5678)
        XCTAssertEqual(try RejectPrivateData(decoding: padded(reject, to: 148)).reason, .regionRevoking)

        assertFails(.connectRequest, .oversized(limit: 56, got: 57)) { try ConnectPrivateData(decoding: padded(connect, to: 57)) }
        assertFails(.accept, .oversized(limit: 196, got: 197)) { try AcceptPrivateData(decoding: padded(accept, to: 197)) }
        assertFails(.reject, .oversized(limit: 148, got: 149)) { try RejectPrivateData(decoding: padded(reject, to: 149)) }

        var dirty = padded(connect, to: 56)
        dirty[55] = 1
        assertFails(.connectRequest, .nonZeroReserved(offset: 55)) { try ConnectPrivateData(decoding: dirty) }
        dirty = padded(accept, to: 100)
        dirty[48] = 0x80
        assertFails(.accept, .nonZeroReserved(offset: 48)) { try AcceptPrivateData(decoding: dirty) }
        dirty = reject
        dirty[7] = 1
        assertFails(.reject, .nonZeroReserved(offset: 6)) { try RejectPrivateData(decoding: dirty) }
    }

    func testTruncatedAtEveryLength() {
        for length in 0..<ConnectPrivateData.size {
            assertFails(.connectRequest, .truncated(needed: 32, got: length)) { try ConnectPrivateData(decoding: KnownAnswerTests.connectBytes.prefix(length)) }
        }
        for length in 0..<AcceptPrivateData.size {
            assertFails(.accept, .truncated(needed: 48, got: length)) { try AcceptPrivateData(decoding: KnownAnswerTests.acceptBytes.prefix(length)) }
        }
        for length in 0..<RejectPrivateData.size {
            assertFails(.reject, .truncated(needed: 12, got: length)) { try RejectPrivateData(decoding: KnownAnswerTests.rejectBytes.prefix(length)) }
        }
    }

    func testHeaderErrors() {
        // All zeros: what rdma_cm delivers for a reject the CM made itself (no listener).
        assertFails(.reject, .badMagic) { try RejectPrivateData(decoding: [UInt8](repeating: 0, count: 148)) }
        var bytes = KnownAnswerTests.connectBytes
        bytes[2] = 9
        assertFails(.connectRequest, .unsupportedVersion(9)) { try ConnectPrivateData(decoding: bytes) }
        // Each block read as another's is the wrong kind.
        assertFails(.accept, .wrongKind(1)) { try AcceptPrivateData(decoding: KnownAnswerTests.connectBytes + [UInt8](repeating: 0, count: 16)) }
        assertFails(.connectRequest, .wrongKind(3)) { try ConnectPrivateData(decoding: KnownAnswerTests.rejectBytes + [UInt8](repeating: 0, count: 20)) }
        assertFails(.reject, .wrongKind(2)) { try RejectPrivateData(decoding: KnownAnswerTests.acceptBytes) }
        // The descriptor is not private data, and private data is not a descriptor.
        assertFails(.connectRequest, .badMagic) { try ConnectPrivateData(decoding: KnownAnswerTests.ipv4Bytes.prefix(32)) }
    }

    func testConnectFlagsMustBeZero() {
        var bytes = KnownAnswerTests.connectBytes
        bytes[7] = 1
        assertFails(.connectRequest, .unknownFlags(1)) { try ConnectPrivateData(decoding: bytes) }
    }

    func testAcceptFieldRules() throws {
        func accept(access: GrantAccess = .write, address: UInt64 = 0x1000, length: UInt64 = 4096, alignment: UInt32 = 1) throws -> AcceptPrivateData {
            try AcceptPrivateData(access: access, remoteAddress: address, length: length, rkey: 1, transferAlignment: alignment, generation: 1, grantID: 1)
        }
        assertFails(.accept, .noAccess) { try accept(access: []) }
        assertFails(.accept, .unknownAccessBits(8)) { try accept(access: GrantAccess(rawValue: 9)) }
        assertFails(.accept, .zeroLength) { try accept(length: 0) }
        assertFails(.accept, .addressOverflow) { try accept(address: UInt64.max - 10, length: 11) }
        XCTAssertEqual(try accept(address: UInt64.max - 10, length: 10).length, 10)
        for bad: UInt32 in [0, 3, 4095, 0xFFFF_FFFF] { assertFails(.accept, .badAlignment(bad)) { try accept(alignment: bad) } }
        for good: UInt32 in [1, 2, 4096, 1 << 31] { XCTAssertEqual(try accept(alignment: good).transferAlignment, good) }
        // The decoder applies the same rules: an accept that says alignment 3 is refused.
        var bytes = KnownAnswerTests.acceptBytes
        bytes[28...31] = [0, 0, 0, 3]
        assertFails(.accept, .badAlignment(3)) { try AcceptPrivateData(decoding: bytes) }
    }

    func testEveryRejectReasonRoundTripsAndUnknownCodesAreNamed() throws {
        for reason in RejectReason.allCases {
            let reject = RejectPrivateData(reason: reason, retryAfterMilliseconds: reason.isRetryable ? 250 : 0)
            XCTAssertEqual(try RejectPrivateData(decoding: reject.encoded()), reject)
        }
        XCTAssertEqual(RejectReason.allCases.map(\.rawValue), Array(1...11))
        var bytes = KnownAnswerTests.rejectBytes
        bytes[4...5] = [0, 99]
        assertFails(.reject, .unknownReason(99)) { try RejectPrivateData(decoding: bytes) }
    }

    func testRandomRoundTrips() throws {
        var generator = SplitMix64(seed: 42)
        for _ in 0..<2_000 {
            let secret = try GrantSecret(bytes: (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) })
            let address: GrantEndpoint.Address = Bool.random(using: &generator)
                ? .ipv4(UInt32.random(in: 0...UInt32.max, using: &generator))
                : .ipv6(high: generator.next(), low: generator.next())
            let descriptor = GrantDescriptor(endpoint: GrantEndpoint(address: address, port: UInt16.random(in: 0...UInt16.max, using: &generator)),
                                             grantID: generator.next(), secret: secret)
            XCTAssertEqual(try GrantDescriptor(decoding: descriptor.encoded()), descriptor)
            XCTAssertEqual(try GrantDescriptor(text: descriptor.text), descriptor)
            XCTAssertTrue(descriptor.text.hasPrefix("mrlg"))
            let connect = ConnectPrivateData(descriptor)
            XCTAssertEqual(try ConnectPrivateData(decoding: connect.encoded()), connect)
            let length = UInt64.random(in: 1...(1 << 40), using: &generator)
            let accept = try AcceptPrivateData(access: GrantAccess(rawValue: UInt32.random(in: 1...7, using: &generator)),
                                               remoteAddress: UInt64.random(in: 0...(UInt64.max - length), using: &generator), length: length,
                                               rkey: UInt32.random(in: 0...UInt32.max, using: &generator),
                                               transferAlignment: 1 << UInt32.random(in: 0...31, using: &generator),
                                               generation: generator.next(), grantID: descriptor.grantID)
            XCTAssertEqual(try AcceptPrivateData(decoding: accept.encoded()), accept)
        }
    }
}
