import Foundation
import MRLeaseGrant
import TestSupport
import Verbs
import XCTest

@testable import MRLeasePeer

/// Transfers from and into the application's registered buffers (`PeerBuffer`), against
/// `TestResponder` on the guest's rxe1: the bytes move without the staging buffer, the buffer is
/// registered once per connection (again after a reconnect), and every misuse is refused
/// before anything is posted.
final class PeerBufferVMTests: XCTestCase {
    private func responder() throws -> TestResponder {
        let responder = try TestResponder(address: try Facility.rdmaCMAddress.require(), length: 1 << 20, access: .all, alignment: 1)
        addTeardownBlock { responder.stop() }
        return responder
    }

    private func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        memory.initializeMemory(as: UInt8.self, repeating: 0)
        addTeardownBlock { memory.deallocate() }
        return memory
    }

    func testRegisteredBuffersMoveBytesWithoutTheStagingBufferAndAreRegisteredAgainAfterAReconnect() throws {
        let responder = try responder()
        var options = PeerOptions()
        options.stagingBytes = 64 << 10
        options.workRequestBytes = 16 << 10
        let peer = try Peer(descriptor: responder.descriptor, options: options)
        defer { peer.close() }

        // 200 000 bytes from 100 bytes into the buffer: three times the staging buffer, one call.
        let pattern = PeerPattern.seeded(21)
        let offset = 8192 + 5, count = 200_000, lead = 100
        let source = allocate(lead + count)
        pattern.bytes(at: UInt64(offset), count: count).withUnsafeBytes { (source.baseAddress! + lead).copyMemory(from: $0.baseAddress!, byteCount: count) }
        let outgoing = try peer.register(source)
        let firstMR = try XCTUnwrap(peer.connection).memoryRegion(for: outgoing)
        try peer.write(from: outgoing, bufferOffset: lead, count: count, at: UInt64(offset))
        let staging = try XCTUnwrap(peer.connection).staging
        XCTAssertTrue(UnsafeRawBufferPointer(start: staging, count: options.stagingBytes).allSatisfy { $0 == 0 },
                      "the write went straight from the application's buffer: the staging buffer is untouched")
        try peer.persist()
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: responder.memory + offset, count: count)),
                       pattern.bytes(at: UInt64(offset), count: count), "the write landed byte for byte")
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: responder.memory + offset - 5, count: 5)), [0, 0, 0, 0, 0], "nothing before it")

        let sink = allocate(count)
        let incoming = try peer.register(sink)
        try peer.read(into: incoming, at: UInt64(offset))
        XCTAssertEqual(Array(sink), pattern.bytes(at: UInt64(offset), count: count), "the read filled the buffer to its end")
        XCTAssertTrue(try XCTUnwrap(peer.connection).memoryRegion(for: outgoing) === firstMR, "registered once per connection, not per transfer")

        // A revocation: the next connection has a new PD, in which the buffer is registered again.
        let second = PeerPattern.seeded(22)
        second.bytes(at: 0, count: 4096).withUnsafeBytes { source.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: 4096) }
        try responder.revoke(whileDown: .reject(RejectPrivateData(reason: .regionRevoking, retryAfterMilliseconds: 20)), downFor: 0.2)
        let revokedAt = MonotonicClock.now()
        while peer.terms.generation == 1, MonotonicClock.now() - revokedAt < 10 {
            try peer.write(from: outgoing, count: 4096, at: 0)
        }
        try peer.write(from: outgoing, count: 4096, at: 0)
        try peer.persist()
        XCTAssertEqual(peer.terms.generation, 2, "the peer reconnected after the revocation")
        XCTAssertFalse(try XCTUnwrap(peer.connection).memoryRegion(for: outgoing) === firstMR, "the new connection registered the buffer anew")
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: responder.memory, count: 4096)), second.bytes(at: 0, count: 4096),
                       "the write from the buffer landed under the new generation")

        // Misuse is refused before posting.
        XCTAssertThrowsError(try peer.write(from: outgoing, bufferOffset: lead + count - 10, count: 11, at: 0)) {
            XCTAssertTrue("\($0)".contains("outside the \(lead + count)-byte buffer"), "\($0)")
        }
        let other = try Peer(descriptor: responder.descriptor, options: options)
        defer { other.close() }
        XCTAssertThrowsError(try other.read(into: incoming, at: 0)) { XCTAssertTrue("\($0)".contains("not registered with this peer"), "\($0)") }
        try peer.release(incoming)
        XCTAssertFalse(incoming.isRegistered)
        XCTAssertThrowsError(try peer.read(into: incoming, at: 0)) { XCTAssertTrue("\($0)".contains("not registered with this peer"), "\($0)") }
        XCTAssertThrowsError(try peer.register(UnsafeMutableRawBufferPointer(start: nil, count: 0))) {
            XCTAssertTrue("\($0)".contains("an empty buffer"), "\($0)")
        }
        XCTAssertEqual(peer.statistics.reconnects, 1)
    }
}
