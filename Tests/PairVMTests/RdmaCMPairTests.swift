import Foundation
import TestSupport
import Verbs
import XCTest

/// rdma_cm and one-sided verbs between two kernels over the wire, through the project's Verbs
/// layer: role a listens on its wire address and accepts with the address and rkey of a buffer
/// in its private data; role b connects, RDMA WRITEs the buffer's first half and RDMA READs
/// its second half, which a filled; a then finds b's bytes in its buffer. Once over IPv4, once
/// over IPv6.
final class RdmaCMPairTests: XCTestCase {
    /// The buffer: b writes [0, half), a filled [half, length) for b to read.
    static let length = 16384, half = 8192
    /// A pair of different seeds per family, so one family's bytes cannot pass for the other's.
    static func writerSeed(_ tag: String) -> UInt8 { tag == "v4" ? 0x41 : 0x61 }
    static func ownerSeed(_ tag: String) -> UInt8 { tag == "v4" ? 0x42 : 0x62 }

    static func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
    }

    func testConnectWriteAndReadAcrossTheWireOverIPv4AndIPv6() throws {
        let pair = try Pair.require()
        let step = pair.role == .a ? "listening" : "done"
        try pair.session(publishing: pair.families.map { "cm-\($0.tag).\(step)" }) {
            for family in pair.families {
                switch pair.role {
                case .a: try serve(pair, family.tag, on: family.mine, expecting: family.theirs)
                case .b: try connect(pair, family.tag, to: family.theirs)
                }
            }
        }
    }

    /// The next event on `channel`, which must be `kind`; rdma_cm over the wire under TCG takes
    /// seconds, not milliseconds, hence the minute.
    func expect(_ kind: CMEvent.Kind, on channel: CMEventChannel, _ what: String) throws -> CMEvent {
        let event = try poll("\(kind) (\(what))", seconds: 60) { try channel.nextEvent() }
        guard event.kind == kind else { throw TestFailure("\(what): expected \(kind), got \(event.kind) status \(event.status)") }
        return event
    }

    /// The one completion of the request just posted on `cq`, which must have succeeded.
    func complete(_ cq: CompletionQueue, _ what: String) throws {
        let completion = try poll("the completion of \(what)", seconds: 60) { try cq.poll(max: 1).first }
        guard completion.isSuccess else { throw TestFailure("\(what) completed with \(completion.statusText)") }
    }

    /// A page-aligned buffer of `count` bytes holding `bytes` from offset `at`, zero elsewhere.
    func buffer(_ count: Int, holding bytes: [UInt8], at offset: Int) -> UnsafeMutableRawPointer {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        bytes.withUnsafeBytes { (buffer + offset).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return buffer
    }

    /// Role a: listens on its wire address (port 0), publishes the port, accepts b's request on
    /// rxew with its buffer's address and rkey, and after b's report checks the first half.
    func serve(_ pair: Pair, _ tag: String, on address: String, expecting peer: String) throws {
        let channel = try CMEventChannel()
        let listener = try channel.createID()
        defer { try? listener.destroy() }   // the test has its verdict by then
        try listener.bind(address: address, port: 0)
        try listener.listen()
        try pair.publish("cm-\(tag).listening", "\(try listener.localPort())")

        let request = try expect(.connectRequest, on: channel, "b's connect request to \(address) over \(tag)")
        let from = request.id.peerAddress()
        XCTAssertTrue(from.hasPrefix(tag == "v4" ? "\(peer):" : "[\(peer)]:"), "the request came from b's wire address \(peer), not \(from)")
        let context = try XCTUnwrap(try request.id.context(), "a connect request has a device")
        XCTAssertEqual(context.device.name, pair.device, "the listener's device is the wire's")
        let memory = buffer(Self.length, holding: Self.pattern(Self.half, seed: Self.ownerSeed(tag)), at: Self.half)
        defer { memory.deallocate() }
        // Closed before the memory goes (defers run last first): the QP, the request's id
        // (rdma_destroy_id of a connected id sends the DREQ) and the MR, then the PD.
        let domain = try ClientDomain(context: context)
        defer { try? domain.close() }   // the test has its verdict by then
        let cq = try context.createCompletionQueue(entries: 4)
        let qp = try domain.createQueuePair(on: request.id, sendQueue: cq, receiveQueue: cq)
        let mr = try domain.register(address: memory, length: Self.length, access: [.localWrite, .remoteWrite, .remoteRead])
        let terms = withUnsafeBytes(of: mr.address.littleEndian, Array.init) + withUnsafeBytes(of: mr.rkey.littleEndian, Array.init)
        try request.id.accept(privateData: terms)
        _ = try expect(.established, on: channel, "the connection from \(from) over \(tag)")

        // The QP and the MR must live until b is done: nothing here uses them meanwhile, and
        // Swift may release an object after its last use (a QP gone makes b's WRITE retry
        // into the void; an MR gone, a remote access error).
        let report = try withExtendedLifetime((qp, mr)) {
            try pair.waitFor("cm-\(tag).done", what: "b's RDMA WRITE and READ of \(address)'s buffer over \(tag)")
        }
        XCTAssertEqual(report, "ok", "b over \(tag)")
        let written = Array(UnsafeRawBufferPointer(start: memory, count: Self.half))
        XCTAssertNil(difference(written, Self.pattern(Self.half, seed: Self.writerSeed(tag))),
                     "b's RDMA WRITE over \(tag) in the first half (b reported: \(report))")
    }

    /// Role b: resolves a's wire address through rxew, connects, WRITEs the first half, READs
    /// the second, and publishes "ok" or what went wrong.
    func connect(_ pair: Pair, _ tag: String, to address: String) throws {
        let port = try XCTUnwrap(UInt16(try pair.waitFor("cm-\(tag).listening", what: "a listener on \(address) over \(tag)")))
        let channel = try CMEventChannel()
        let id = try channel.createID()
        try id.resolveAddress(address, port: port)
        _ = try expect(.addressResolved, on: channel, "resolving \(address) over \(tag)")
        try id.resolveRoute()
        _ = try expect(.routeResolved, on: channel, "the route to \(address) over \(tag)")
        let context = try XCTUnwrap(try id.context(), "a resolved id has a device")
        XCTAssertEqual(context.device.name, pair.device, "the route to \(address) goes through the wire's device")
        let memory = buffer(Self.length, holding: Self.pattern(Self.half, seed: Self.writerSeed(tag)), at: 0)
        defer { memory.deallocate() }
        let domain = try ClientDomain(context: context)
        defer { try? domain.close() }   // as in serve: before the memory; the verdict is in by then
        let cq = try context.createCompletionQueue(entries: 4)
        let qp = try domain.createQueuePair(on: id, sendQueue: cq, receiveQueue: cq)
        let mr = try domain.register(address: memory, length: Self.length, access: [.localWrite])
        try id.connect()
        let accepted = try expect(.established, on: channel, "a's accept over \(tag)")
        let terms = try XCTUnwrap(accepted.privateData.count >= 12 ? accepted.privateData : nil, "a's private data: \(accepted.privateData)")
        let remote = terms.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        let rkey = terms.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) }

        var report = "ok"
        do {
            try qp.post(.write, local: mr, localAddress: mr.address, length: UInt32(Self.half), remoteAddress: remote, rkey: rkey, wrID: 1)
            try complete(cq, "RDMA WRITE of \(Self.half) bytes to \(address)")
            try qp.post(.read, local: mr, localAddress: mr.address + UInt64(Self.half), length: UInt32(Self.half),
                        remoteAddress: remote + UInt64(Self.half), rkey: rkey, wrID: 2)
            try complete(cq, "RDMA READ of \(Self.half) bytes from \(address)")
            let read = Array(UnsafeRawBufferPointer(start: memory + Self.half, count: Self.half))
            if let wrong = difference(read, Self.pattern(Self.half, seed: Self.ownerSeed(tag))) { report = "the RDMA READ of a's bytes: \(wrong)" }
        } catch {
            report = "\(error)"
        }
        try pair.publish("cm-\(tag).done", report)
        XCTAssertEqual(report, "ok", "RDMA WRITE + READ of a's buffer at \(address) over \(tag)")
    }
}
