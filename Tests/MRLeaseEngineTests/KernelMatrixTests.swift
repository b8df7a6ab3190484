import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import TestSupport
import XCTest

/// Pins down KERNEL-FACTS' registration matrix through the doctor's own probe and strategy
/// logic, on the guest kernels Scripts/vm-test boots (6.1, 6.12 and 7.x) with soft-RoCE.
final class KernelMatrixTests: XCTestCase {
    var rxeHasODP: Bool { TestKernel.rxeHasODP }

    func report(on facility: Facility, access: RegionAccess = [.read, .write]) throws -> FileReport {
        _ = try Facility.rdmaDevice.require()
        let root = try facility.require()
        let scratch = try ScratchDirectory(in: root)
        let file = try scratch.file("matrix", size: 1 << 20)
        let report = Doctor(access: access).run(paths: [file])
        let fileReport = try XCTUnwrap(report.files.first)
        XCTAssertNil(fileReport.error, fileReport.error ?? "")
        XCTAssertNil(report.host.rdmaProblem)
        return fileReport
    }

    func trial(_ report: FileReport, _ kind: TrialKind) throws -> TrialReport {
        // Failures print the whole trial (op, errno) through the assertion messages below.
        try XCTUnwrap(report.trials.first { $0.kind == kind.rawValue }, "no \(kind) trial in \(report.trials)")
    }

    func assertFSDAX(_ facility: Facility) throws {
        let report = try report(on: facility)
        XCTAssertEqual(report.backing, "fs-dax")
        XCTAssertEqual(report.dax, true)
        XCTAssertGreaterThanOrEqual(report.extentCount ?? 0, 1)
        XCTAssertEqual(report.lease?.granted, true, report.lease?.message ?? "")
        // The kernel never long-term pins FS-DAX pages, whatever the access.
        XCTAssertEqual(try trial(report, .pinnedWrite).errno, "EOPNOTSUPP")
        XCTAssertEqual(try trial(report, .pinnedReadOnly).errno, "EOPNOTSUPP")
        if rxeHasODP {
            XCTAssertEqual(try trial(report, .odp).result, "registered", "\(report.trials)")
            XCTAssertEqual(report.strategy, "odp")
            // The daemon's plan, as the doctor prints it: ODP first, then pinned.
            XCTAssertEqual(report.plan?.map { String($0.prefix(9)) }, ["1. odp (o", "2. pinned"], "\(report.plan ?? [])")
        } else {
            XCTAssertEqual(try trial(report, .odp).errno, TestKernel.odpRefusalErrno)
            XCTAssertNil(report.strategy)
            XCTAssertEqual(report.refusalCode, "strategy-unavailable")
            XCTAssertEqual(report.plan?.first?.hasPrefix("1. pinned (pinned-write)"), true, "\(report.plan ?? [])")
            XCTAssertEqual(report.plan?.last?.hasPrefix("not odp: rxe0 has no ODP support"), true, "\(report.plan ?? [])")
            XCTAssertEqual(report.refusalErrno, "EOPNOTSUPP")
            XCTAssertTrue(report.refusal?.contains("no ODP support") == true, report.refusal ?? "")
        }
    }

    func assertPageCache(_ facility: Facility) throws {
        let report = try report(on: facility)
        XCTAssertEqual(report.backing, "page-cache")
        XCTAssertEqual(report.dax, false)
        XCTAssertEqual(try trial(report, .pinnedReadOnly).result, "registered", "\(report.trials)")
        if TestKernel.refusesWritableFilePins {
            XCTAssertEqual(try trial(report, .pinnedWrite).errno, "EFAULT")
        } else {
            XCTAssertEqual(try trial(report, .pinnedWrite).result, "registered", "\(report.trials)")
        }
        if rxeHasODP {
            XCTAssertEqual(try trial(report, .odp).result, "registered", "\(report.trials)")
            XCTAssertEqual(report.strategy, "odp")
        } else if TestKernel.refusesWritableFilePins {
            // 6.5 to ~6.14 (6.12 measured): neither a writable pin nor ODP, so a read+write
            // region over the page cache is refused, naming both reasons.
            XCTAssertEqual(try trial(report, .odp).errno, TestKernel.odpRefusalErrno)
            XCTAssertNil(report.strategy)
            XCTAssertEqual(report.refusalCode, "strategy-unavailable")
            XCTAssertEqual(report.refusalErrno, "EFAULT")
            XCTAssertTrue(report.refusal?.contains("Linux 6.5+") == true, report.refusal ?? "")
            XCTAssertTrue(report.refusal?.contains("no ODP support") == true, report.refusal ?? "")
        } else {
            XCTAssertEqual(try trial(report, .odp).errno, TestKernel.odpRefusalErrno)
            XCTAssertEqual(report.strategy, "pinned")
        }
    }

    func testExt4DAXPinnedIsRefusedAndODPDecides() throws { try assertFSDAX(.ext4DAX) }
    func testXFSDAXPinnedIsRefusedAndODPDecides() throws { try assertFSDAX(.xfsDAX) }
    func testExt4PageCacheWritablePinsDependOnTheKernel() throws { try assertPageCache(.ext4) }
    func testXFSPageCacheWritablePinsDependOnTheKernel() throws { try assertPageCache(.xfs) }

    func testTmpfsPinsOnEveryKernel() throws {
        let report = try report(on: .tmpfs)
        XCTAssertEqual(report.backing, "shmem")
        XCTAssertEqual(try trial(report, .pinnedWrite).result, "registered", "\(report.trials)")
        XCTAssertEqual(try trial(report, .pinnedReadOnly).result, "registered", "\(report.trials)")
        XCTAssertEqual(report.strategy, rxeHasODP ? "odp" : "pinned", report.refusal ?? "")
    }

    /// A read-only request opens the file O_RDONLY, so the mapping is read-only too. 6.1 pins
    /// even read-only MRs with FOLL_FORCE|FOLL_WRITE (removed in 6.2) and refuses that.
    func testReadOnlyFDRegionNeverAsksForWriteAndPinsFrom62() throws {
        let report = try report(on: .ext4, access: [.read])
        XCTAssertEqual(report.openedWritable, false)
        let pinned = try trial(report, .pinnedReadOnly)
        XCTAssertFalse(pinned.flags.contains("WRITE"), pinned.flags)
        XCTAssertEqual(try trial(report, .pinnedWrite).result, "not-tried")
        let release = TestKernel.release
        if release.major == 6 && release.minor < 2 {
            XCTAssertEqual(pinned.errno, "EFAULT", "\(pinned)")
            XCTAssertNil(report.strategy)
            XCTAssertTrue(report.refusal?.contains("before 6.2") == true, report.refusal ?? "")
        } else {
            XCTAssertEqual(pinned.result, "registered", "\(pinned)")
            XCTAssertNotNil(report.strategy, report.refusal ?? "")
        }
    }
}
