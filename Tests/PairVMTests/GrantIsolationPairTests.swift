import Foundation
import MRLeaseGrant
import TestSupport
import Verbs
import XCTest

/// Two grants of one daemon, across the wire, over IPv4 and over IPv6: role a registers two adjacent 64 KiB
/// regions of one file (`mrlease register --count 2 --grant --max-peers 4`), role b connects
/// with bare rdma_cm and verbs through each grant. Through grant 1's connection b then WRITEs
/// with grant 2's address and rkey, and with the rkey `register` gave region 2's owner: each
/// must complete with an error (remote access error: no key of region 2 exists in grant 1's
/// PD); a WRITE with grant 1's own keys must land. a then finds region 1's bytes where b wrote
/// them and region 2, and the rest of the file, unchanged.
final class GrantIsolationPairTests: XCTestCase {
    static let fill: UInt8 = 0x5A
    static let fileLength = 1 << 20, regionOffset = 65536, regionLength = 65536, writeLength = 4096

    /// A connection through one grant: bare rdma_cm + verbs, one page of local memory.
    final class Connection {
        let channel: CMEventChannel, id: CMID
        /// Closed first in deinit (QP, MR, PD), then the page goes.
        let domain: ClientDomain, cq: CompletionQueue, qp: QueuePair
        /// The page each WRITE sends, registered for local access only.
        let memory: UnsafeMutableRawPointer, mr: MemoryRegion
        /// The daemon's terms: the grant's address, rkey and generation.
        let accept: AcceptPrivateData

        init(_ descriptor: GrantDescriptor) throws {
            channel = try CMEventChannel()
            id = try channel.createID()
            try id.resolveAddress(descriptor.endpoint.host, port: descriptor.endpoint.port)
            _ = try Self.next(.addressResolved, on: channel)
            try id.resolveRoute()
            _ = try Self.next(.routeResolved, on: channel)
            let context = try XCTUnwrap(try id.context(), "a resolved id has a device")
            domain = try ClientDomain(context: context)
            cq = try context.createCompletionQueue(entries: 4)
            qp = try domain.createQueuePair(on: id, sendQueue: cq, receiveQueue: cq)
            memory = UnsafeMutableRawPointer.allocate(byteCount: GrantIsolationPairTests.writeLength, alignment: 4096)
            mr = try domain.register(address: memory, length: GrantIsolationPairTests.writeLength, access: [.localWrite])
            try id.connect(privateData: ConnectPrivateData(descriptor).encoded(), responderResources: 1, initiatorDepth: 1)
            accept = try AcceptPrivateData(decoding: try Self.next(.established, on: channel).privateData)
        }

        deinit {
            try? domain.close()
            memory.deallocate()
        }

        static func next(_ kind: CMEvent.Kind, on channel: CMEventChannel) throws -> CMEvent {
            let event = try poll("rdma_cm \(kind)", seconds: 60) { try channel.nextEvent() }
            guard event.kind == kind else { throw TestFailure("expected \(kind), got \(event.kind) status \(event.status)") }
            return event
        }

        /// WRITEs `bytes` (one page) to `address` with `rkey`; the completion's status text.
        func write(_ bytes: [UInt8], to address: UInt64, rkey: UInt32) throws -> String {
            bytes.withUnsafeBytes { memory.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            try qp.post(.write, local: mr, localAddress: mr.address, length: UInt32(bytes.count), remoteAddress: address, rkey: rkey, wrID: 1)
            let completion = try poll("the WRITE's completion", seconds: 60) { try cq.poll(max: 1).first }
            return completion.isSuccess ? "success" : completion.statusText
        }
    }

    static let written = PeerBytes.seeded(0xD1, count: writeLength)

    func testAPeerOfOneGrantCannotWriteAnotherGrantsRegion() throws {
        let pair = try Pair.require()
        for family in pair.families {
            try pair.split("isolation-\(family.tag)", a: ["grants"], b: ["done"],
                           exporter: { try export($0, $1, listening: family.mine) }, peer: attempt)
        }
    }

    func export(_ pair: Pair, _ name: String, listening address: String) throws {
        let exporter = try PairExporter(name, listening: address, fileSize: Self.fileLength, fill: Self.fill)
        defer { exporter.stop(after: self) }
        try exporter.register(offset: Self.regionOffset, length: Self.regionLength, count: 2, ["--max-peers", "4"])
        XCTAssertEqual(exporter.grants.count, 2, exporter.events)
        // Region 2's own keys, as `register` printed them: "  lkey 0x… rkey 0x…  address 0x…", the second such line.
        let keys = try XCTUnwrap(exporter.events.split(separator: "\n").filter { $0.contains("rkey 0x") }.dropFirst().first,
                                 "region 2's keys in:\n\(exporter.events)").split(separator: " ")
        let rkey = try XCTUnwrap(keys.firstIndex(of: "rkey").map { keys[$0 + 1] }), address = try XCTUnwrap(keys.last)
        try pair.publish("\(name).grants", "\(exporter.grants[0].descriptor) \(exporter.grants[1].descriptor) \(rkey) \(address)")
        let report = try pair.waitFor("\(name).done", what: "WRITEs through grant 1 with its own and with region 2's keys")
        XCTAssertEqual(exporter.release(), 0, "mrlease register after SIGINT")
        print("pair \(name): \(report)")

        var expected = [UInt8](repeating: Self.fill, count: Self.fileLength)
        expected.replaceSubrange(Self.regionOffset..<Self.regionOffset + Self.writeLength, with: Self.written)
        XCTAssertNil(difference(try exporter.contents(), expected),
                     "\(exporter.file): only grant 1's own WRITE at region 1's start may have changed it (b reported: \(report))")
    }

    func attempt(_ pair: Pair, _ name: String) throws {
        let fields = try pair.waitFor("\(name).grants", what: "two regions granted").split(separator: " ").map(String.init)
        guard fields.count == 4, let rkey = UInt32(fields[2].dropFirst(2), radix: 16), let address = UInt64(fields[3].dropFirst(2), radix: 16) else {
            throw TestFailure("not two descriptors, an rkey and an address: \(fields)")
        }
        var report: [String] = []
        do {
            let second = try Connection(try GrantDescriptor(text: fields[1]))
            let viaGrant2Keys = try Connection(try GrantDescriptor(text: fields[0]))
            report.append("grant2-keys=\(try viaGrant2Keys.write(Self.written, to: second.accept.remoteAddress, rkey: second.accept.rkey))")
            let viaRegionKey = try Connection(try GrantDescriptor(text: fields[0]))
            report.append("region2-key=\(try viaRegionKey.write(Self.written, to: address, rkey: rkey))")
            let own = try Connection(try GrantDescriptor(text: fields[0]))
            report.append("own=\(try own.write(Self.written, to: own.accept.remoteAddress, rkey: own.accept.rkey))")
            XCTAssertNotEqual(second.accept.rkey, own.accept.rkey, "two grants, two MRs")
            withExtendedLifetime((second, viaGrant2Keys, viaRegionKey)) {}
        } catch {
            report.append("error=\(error)")
        }
        let text = report.joined(separator: " ").replacingOccurrences(of: "\n", with: " ")
        try pair.publish("\(name).done", text)
        XCTAssertEqual(report.count, 3, text)
        for attempt in report.prefix(2) {
            XCTAssertTrue(attempt.lowercased().contains("remote access error"), "a WRITE through grant 1 with region 2's keys: \(attempt)")
        }
        XCTAssertEqual(report.last, "own=success", "grant 1's own WRITE")
    }
}

/// Reproducible bytes for a WRITE.
enum PeerBytes {
    static func seeded(_ seed: UInt8, count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ Int(seed)) } }
}
