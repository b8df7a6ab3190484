import Foundation
import LinuxFile
import XCTest

final class SystemFactsTests: XCTestCase {
    func testLeaseBreakTimeMatchesProcAndIsPositive() throws {
        let seconds = try SystemFacts.leaseBreakTime()
        let text = try String(contentsOfFile: "/proc/sys/fs/lease-break-time", encoding: .utf8)
        XCTAssertEqual(seconds, Int(text.trimmingCharacters(in: .whitespacesAndNewlines)))
        XCTAssertGreaterThan(seconds, 0)
        XCTAssertTrue(SystemFacts.leasesEnabled())
        print("[measure] lease-break-time \(seconds) s, kernel \(SystemFacts.kernelRelease)")
    }

    func testMemlockLimitIsReadableAndSoftWithinHard() throws {
        let limit = try SystemFacts.memlockLimit()
        if let soft = limit.soft, let hard = limit.hard { XCTAssertLessThanOrEqual(soft, hard) }
        // /proc/self/limits: "Max locked memory   8388608   8388608   bytes" (or "unlimited").
        let limits = try String(contentsOfFile: "/proc/self/limits", encoding: .utf8)
        let line = try XCTUnwrap(limits.split(separator: "\n").first { $0.hasPrefix("Max locked memory") })
        let columns = line.dropFirst("Max locked memory".count).split(separator: " ")
        XCTAssertEqual(limit.soft.map(String.init) ?? "unlimited", String(columns[0]))
        XCTAssertEqual(limit.hard.map(String.init) ?? "unlimited", String(columns[1]))
        print("[measure] RLIMIT_MEMLOCK soft \(limit.soft.map(String.init) ?? "unlimited") hard \(limit.hard.map(String.init) ?? "unlimited")")
    }

    func testCapabilitiesFollowCapEff() throws {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let capEff = try XCTUnwrap(status.split(separator: "\n").first { $0.hasPrefix("CapEff:") })
        let mask = try XCTUnwrap(UInt64(capEff.split(separator: "\t").last ?? "", radix: 16))
        XCTAssertEqual(SystemFacts.hasCapability(SystemFacts.capLease), mask & (1 << 28) != 0)
        XCTAssertEqual(SystemFacts.hasCapability(SystemFacts.capIPCLock), mask & (1 << 14) != 0)
        XCTAssertFalse(SystemFacts.hasCapability(64))
    }

    func testKernelReleaseLooksLikeUname() throws {
        let release = SystemFacts.kernelRelease
        XCTAssertTrue(release.first?.isNumber ?? false, release)
        let proc = try String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)
        XCTAssertEqual(release, proc.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
