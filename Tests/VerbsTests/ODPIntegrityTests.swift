import TestSupport
import Verbs
import XCTest

/// The ODP integrity self-test on the guest's rxe0: it finds rxe's ODP defect where the kernel
/// has ODP (7.x), has nothing to test where it has none (6.1), confirms the alignment it
/// advises, and leaves no verbs object behind.
final class ODPIntegrityTests: XCTestCase {
    /// What this process holds per the kernel: QPs, PDs, MRs, CQs.
    func holdings() throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for kind in ["qp", "pd", "mr", "cq"] { counts[kind] = try GuestRDMA.resources(kind).count }
        return counts
    }

    /// Runs `check` on the guest's device and asserts nothing it created outlives it.
    func run(_ check: ODPIntegrityCheck) throws -> (ODPIntegrity, ODPCaps) {
        let context = try GuestRDMA.openDevice()
        let odp = try context.query().odp
        let before = try holdings()
        let result = check.run(on: context)
        XCTAssertEqual(try holdings(), before, "QPs, PDs, MRs and CQs the check left behind (result \(result))")
        return (result, odp)
    }

    func testUnalignedMultiPacketWriteAndReadOnRXEODPAreReportedAsCorrupting() throws {
        let (result, odp) = try run(ODPIntegrityCheck())
        guard odp.rc.isSuperset(of: [.write, .read]) else { throw XCTSkip("needs RC ODP WRITE and READ (rxe gained ODP in 6.15)") }
        guard Facility.rdmaDevice.value?.hasPrefix("rxe") == true else {
            return XCTAssertEqual(result, .intact, "a device other than rxe")
        }
        // docs/kernel-matrix.md: rxe_odp.c copies every packet to the start of its page.
        guard case .corrupts(let detail) = result else { return XCTFail("rxe ODP on \(TestKernel.release): \(result)") }
        XCTAssertTrue(detail.contains("RDMA WRITE of 5000 bytes to ODP offset 100"), detail)
        XCTAssertTrue(detail.contains("RDMA READ of 5000 bytes from ODP offset 100"), detail)
        // Each 1024-byte packet went to its page's start; the last whole one in page 0
        // (written bytes 3072..., aimed at offset 3172) is what stays there.
        XCTAssertTrue(detail.contains("page start 0 holds written bytes 3072..."), detail)
        XCTAssertTrue(detail.contains("returned the bytes at the page start (offset 0)"), detail)
        XCTAssertEqual(result.code, "corrupts-unaligned")
        XCTAssertEqual(result.transferAlignment, 4096)
    }

    func testAPageAlignedTransferAtMTU4096LandsIntactSoTheAdvisedAlignmentHolds() throws {
        // Two pages from offset 0: each 4096-byte packet starts a page.
        let (result, odp) = try run(ODPIntegrityCheck(offset: 0, length: 2 * 4096, mtu: .bytes4096))
        guard odp.rc.isSuperset(of: [.write, .read]) else { throw XCTSkip("needs RC ODP WRITE and READ (rxe gained ODP in 6.15)") }
        XCTAssertEqual(result, .intact)
    }

    func testADeviceWithoutODPHasNothingToTest() throws {
        let (result, odp) = try run(ODPIntegrityCheck())
        guard !odp.rc.isSuperset(of: [.write, .read]) else { throw XCTSkip("the device has RC ODP WRITE and READ") }
        guard case .notApplicable(let reason) = result else { return XCTFail("no ODP, yet: \(result)") }
        XCTAssertTrue(reason.contains("no RC ODP WRITE and READ"), reason)
        XCTAssertEqual(result.transferAlignment, 1)
    }

    func testTheSameUnalignedTransfersIntoPinnedMemoryLandIntact() throws {
        // The control: the loopback pair moves these very bytes correctly when the MR is pinned,
        // so what the check reports is ODP's doing, not the QP's.
        let context = try GuestRDMA.openDevice()
        let pd = try context.allocateProtectionDomain()
        defer { XCTAssertNoThrow(try pd.close()) }
        let loopback = try Loopback(protectionDomain: pd, mtu: .bytes1024)
        let access: AccessFlags = [.localWrite, .remoteWrite, .remoteRead]
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: 5000, alignment: 4096)
        let target = UnsafeMutableRawBufferPointer.allocate(byteCount: 3 * 4096, alignment: 4096)
        defer { source.deallocate(); target.deallocate() }
        for index in 0..<source.count { source[index] = UInt8(index % 251 + 1) }
        target.initializeMemory(as: UInt8.self, repeating: 0)
        let sourceMR = try pd.register(address: source.baseAddress!, length: source.count, access: access)
        let targetMR = try pd.register(address: target.baseAddress!, length: target.count, access: access)
        XCTAssertTrue(try loopback.write(from: sourceMR, length: 5000, to: targetMR.address + 100, rkey: targetMR.rkey).isSuccess)
        XCTAssertEqual(Array(target[100..<5100]), Array(source))
        XCTAssertEqual(target[0..<100].filter { $0 != 0 }.count, 0, "bytes before the offset")
    }
}
