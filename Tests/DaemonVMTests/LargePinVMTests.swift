import Foundation
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

/// Issue 19, "large ranges off the loop", on real verbs: a pinned range of at least
/// `offload-pin-bytes` is pinned by the daemon's worker thread in the region PD the loop
/// registers in too, and restored there after a break. tmpfs: the one backing with a writable
/// pin on every kernel the guests boot. (How long other clients wait meanwhile is measured by
/// `mrleased-bench --large-registration`, docs/benchmarks.md, not here.)
final class LargePinVMTests: XCTestCase {
    func testALargePinnedRangeIsPinnedOnTheWorkerAndRestoredThereWhileSmallOnesGoOnTheLoop() throws {
        let device = try Facility.rdmaDevice.require()
        // 4 MiB and up on the worker, so a 32 MiB range goes there on the 256 MiB test tmpfs.
        let daemon = try RunningDaemon(device: device, environment: ["MRLEASED_OFFLOAD_PIN_BYTES": "\(4 << 20)",
                                                                          "MRLEASED_MAX_BYTES_PER_UID": "\(1 << 40)"])
        let scratch = try ScratchDirectory(in: try Facility.tmpfs.require())
        let path = try scratch.file("large", size: 40 << 20)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close(); _ = scratch }
        let owner = try RawClient(path: daemon.socketPath), other = try RawClient(path: daemon.socketPath)

        let pinned = { (offset: UInt64, length: UInt64) in
            Request.register(.init(offset: offset, length: length, access: [.read, .write], strategy: .pinned))
        }
        guard case .success(.register(let large)) = try owner.request(pinned(0, 32 << 20), fds: [fd]) else {
            return XCTFail("the large register failed")
        }
        guard case .success(.register(let small)) = try other.request(pinned(36 << 20, 1 << 20), fds: [fd]) else {
            return XCTFail("the small register failed")
        }
        XCTAssertEqual(large.strategy, .pinned)
        XCTAssertEqual(large.length, 32 << 20)
        XCTAssertEqual(small.strategy, .pinned)
        let before = try daemon.holdings()
        XCTAssertTrue(before.mrs.isSuperset(of: [large.rkey, small.rkey]), "both MRs are the daemon's: \(before.mrs)")
        XCTAssertEqual(before.leases, 1)

        // Another process opens the file: both owners ack, and after the reader's close both
        // regions come back, the large one pinned again by the worker.
        let reader = try Subprocess.start("/bin/cat", [path])
        for client in [owner, other] {
            try client.waitForEvents { $0.contains { $0.name == .revoking } }
            for case .revoking(let revoking) in client.events { _ = try client.request(.ack(region: revoking.region)) }
        }
        reader.waitUntilExit()
        XCTAssertEqual(reader.terminationStatus, 0)
        for (client, region) in [(owner, large), (other, small)] {
            try client.waitForEvents { $0.contains { $0.name == .restored } }
            XCTAssertEqual(client.events.map(\.name), [.revoking, .revoked, .restored], "\(client.events)")
            guard case .restored(let restored)? = client.events.last else { return XCTFail("\(client.events)") }
            XCTAssertEqual(restored.region, region.region)
            XCTAssertNotEqual(restored.rkey, region.rkey)
        }
        guard case .success(.list(let list)) = try owner.request(.list(after: nil)) else { return XCTFail("list") }
        XCTAssertEqual(list.regions.map(\.state), [.registered])
        XCTAssertEqual(list.regions.first?.generation, 2)
        let after = try daemon.settledHoldings()
        XCTAssertEqual(after.mrs.count, before.mrs.count, "one MR per region again: \(after.mrs)")
        XCTAssertEqual(after.leases, 1)

        owner.close()
        other.close()
        XCTAssertEqual(try daemon.settledHoldings().mrs, [], "nothing left once both owners went")
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// A pin of 1 GiB as two slices (`pin-slices = 2`): the client sees one region and one set
    /// of keys, the kernel two MRs, and both go at the revocation and at the end.
    func testAGibibytePinIsMadeOfSlicesThatComeAndGoAsOneRegion() throws {
        let device = try Facility.rdmaDevice.require()
        let daemon = try RunningDaemon(device: device, environment: ["MRLEASED_PIN_SLICES": "2", "MRLEASED_MAX_BYTES_PER_UID": "\(1 << 40)"])
        // /dev/shm: the test tmpfs (256 MiB) is too small for a GiB.
        let scratch = try ScratchDirectory(in: "/dev/shm")
        let path = try scratch.file("gib", size: 1 << 30)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close(); _ = scratch }
        let everyMR = { () throws -> Int in try RDMAResources.entries("mr", threads: nil).count }
        let baseline = try everyMR()
        let owner = try RawClient(path: daemon.socketPath)
        guard case .success(.register(let region)) = try owner.request(
            .register(.init(offset: 0, length: 1 << 30, access: [.read, .write], strategy: .pinned)), fds: [fd]) else {
            return XCTFail("the register failed")
        }
        XCTAssertEqual(region.length, 1 << 30)
        XCTAssertEqual(try everyMR(), baseline + 2, "two slices")

        let reader = try Subprocess.start("/bin/cat", [path])
        try owner.waitForEvents { $0.contains { $0.name == .revoking } }
        _ = try owner.request(.ack(region: region.region))
        reader.waitUntilExit()
        try owner.waitForEvents { $0.contains { $0.name == .restored } }
        XCTAssertEqual(owner.events.map(\.name), [.revoking, .revoked, .restored], "\(owner.events)")
        XCTAssertEqual(try everyMR(), baseline + 2, "the old slices went, two new ones came")

        owner.close()
        let deadline = Date().addingTimeInterval(10)
        while try everyMR() != baseline && Date() < deadline { usleep(50_000) }
        XCTAssertEqual(try everyMR(), baseline, "both slices went with the client")
        XCTAssertEqual(daemon.stop(), 0)
    }
}
