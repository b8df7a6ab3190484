import Foundation
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

/// The daemon routes a revocation's events and, while doing so, disconnects a client that does
/// not read them: with real MRs on the guest's rxe0, every region must still end right
/// (`layout-policy = revoke`: a revocation is what this suite is about).
final class SlowClientVMTests: XCTestCase {
    func testSlowClientDisconnectedWhileItsFileIsRevokedLeavesTheOthersRegionsRestored() throws {
        let device = try Facility.rdmaDevice.require()
        // Acks, not the deadline, end the revocation; a client may fall 4 packets behind.
        let daemon = try RunningDaemon(device: device, layoutPolicy: "revoke", environment: [
            "MRLEASED_MAX_QUEUED_MESSAGES": "4", "MRLEASED_QUIESCE_MS": "3000", "MRLEASED_MAX_BYTES_PER_UID": "1073741824",
        ])
        let scratch = try ScratchDirectory(in: try Facility.writable(.ext4).require())
        let path = try scratch.file("data", size: 4 << 20)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let baseline = try daemon.settledHoldings()

        // 320 regions: their revoking events overflow the daemon's socket buffer (~200 KiB).
        let slow = try RawClient(path: daemon.socketPath)
        for batch in 0..<5 {
            let ranges = (0..<64).map { Request.Register(offset: UInt64(batch * 64 + $0) * 4096, length: 4096, access: [.read, .write]) }
            guard case .success(.registerBatch(let made)) = try slow.request(.registerBatch(ranges), fds: [fd]), made.count == 64 else {
                return XCTFail("batch \(batch) was not registered")
            }
        }
        let bystander = try RawClient(path: daemon.socketPath)
        let kept = try (400..<402).map { try bystander.register(fd, offset: UInt64($0) * 4096, length: 4096) }
        XCTAssertEqual(try daemon.holdings().mrs.count, baseline.mrs.count + 322)

        let start = Date()
        let reader = Process()
        reader.executableURL = URL(fileURLWithPath: "/bin/cat")
        reader.arguments = [path]
        reader.standardOutput = FileHandle.nullDevice
        try reader.run()
        try bystander.waitForEvents { $0.filter { $0.name == .revoking }.count == 2 }
        // By now the slow client has been cut off: its connection ends after what was queued.
        var slowEvents = 0
        var slowClosed = false
        let cut = Date().addingTimeInterval(10)
        try slow.socket.setNonBlocking(true)
        while !slowClosed && Date() < cut {
            switch try slow.socket.receive(maxSize: Codec.maxMessageBytes) {
            case .message: slowEvents += 1
            case .wouldBlock: usleep(5_000)
            case .endOfStream: slowClosed = true
            }
        }
        XCTAssertTrue(slowClosed, "the slow client was not disconnected (\(slowEvents) events read)")
        XCTAssertLessThan(slowEvents, 320, "it cannot have been sent every event")
        XCTAssertTrue(reader.isRunning, "the reader waits for the bystander's acks")

        for region in kept { _ = try bystander.request(.ack(region: region.region)) }
        try bystander.waitForEvents { $0.filter { $0.name == .restored }.count == 2 }
        reader.waitUntilExit()
        XCTAssertEqual(reader.terminationStatus, 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 3, "acks, not the 3 s deadline, ended the revocation")
        XCTAssertEqual(bystander.events.map { "\($0.name.rawValue) \($0.region.map(String.init) ?? "-")" },
                       kept.map { "revoking \($0.region)" } + kept.map { "revoked \($0.region)" } + kept.map { "restored \($0.region)" })

        // What is left: the bystander's two restored MRs under one lease, nothing of the slow client's.
        let restoredKeys = bystander.events.compactMap { event -> UInt32? in
            if case .restored(let restored) = event { return restored.rkey }
            return nil
        }
        XCTAssertEqual(try daemon.holdings().mrs, baseline.mrs.union(restoredKeys))
        XCTAssertEqual(try daemon.holdings().leases, 1)
        guard case .success(.stats(let stats)) = try bystander.request(.stats) else { return XCTFail("stats") }
        XCTAssertEqual(stats.regions, 2)
        XCTAssertEqual(stats.clients, 1)
        guard case .success(.list(let list)) = try bystander.request(.list(after: nil)) else { return XCTFail("list") }
        XCTAssertEqual(list.regions.map(\.state), [.registered, .registered])
        XCTAssertEqual(daemon.stop(), 0)
    }
}
