import Foundation
import TestSupport
import XCTest

/// `mrlease doctor` as a user runs it: output, JSON and exit status.
final class DoctorCommandTests: XCTestCase {
    let mrlease = Subprocess.builtProduct("mrlease")

    func doctor(_ arguments: [String]) throws -> Subprocess {
        try Subprocess.run(mrlease, ["doctor"] + arguments)
    }

    func testMissingPathIsAnErrorNamingENOENT() throws {
        let result = try doctor(["/nonexistent/mrleased-file"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("cannot open /nonexistent/mrleased-file"), result.stderr)
        XCTAssertTrue(result.stderr.contains("ENOENT"), result.stderr)
    }

    func testDirectoryIsRejectedAsNotARegularFile() throws {
        let scratch = try ScratchDirectory()
        let result = try doctor([scratch.path])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("is a directory, not a regular file"), result.stderr)
    }

    func testFIFOIsRejectedWithoutBlocking() throws {
        let scratch = try ScratchDirectory()
        let fifo = scratch.path + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let result = try doctor([fifo])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("is a fifo, not a regular file"), result.stderr)
    }

    func testFileOnAFilesystemWithoutFIEMAPIsRejected() throws {
        // procfs answers FS_IOC_FIEMAP with EOPNOTSUPP (or, if a kernel ever answers, the
        // pseudo-filesystem check refuses it): either way exit 1 with the reason.
        let result = try doctor(["/proc/self/status"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("FIEMAP") || result.stderr.contains("pseudo filesystem"), result.stderr)
        XCTAssertTrue(result.stderr.contains("proc"), result.stderr)
    }

    func testUnknownAccessWordIsAUsageError() throws {
        let result = try doctor(["--access", "read,exec", "/etc/hostname"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("--access takes a comma list of read, write, atomic"), result.stderr)
    }

    func testRegularFileReportsFileFactsAndLeaseEvenWithoutRDMA() throws {
        let scratch = try ScratchDirectory(in: Facility.ext4.value)
        let file = try scratch.file("data", size: 1 << 20)
        let result = try doctor([file, "--json"])
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], result.stdout)
        let files = try XCTUnwrap(json["files"] as? [[String: Any]])
        let report = try XCTUnwrap(files.first)
        XCTAssertEqual(report["backing"] as? String, "page-cache")
        XCTAssertEqual(report["dax"] as? Bool, false)
        XCTAssertGreaterThanOrEqual(report["extentCount"] as? Int ?? 0, 1)
        let lease = try XCTUnwrap(report["lease"] as? [String: Any])
        XCTAssertEqual(lease["granted"] as? Bool, true, "\(lease)")
        XCTAssertEqual(lease["type"] as? String, "write")
        let host = try XCTUnwrap(json["host"] as? [String: Any])
        XCTAssertGreaterThan(host["leaseBreakTimeSeconds"] as? Int ?? 0, 0)
        XCTAssertEqual(host["layoutProtection"] as? String, "inotify-detect")
        if Facility.rdmaDevice.value == nil {
            XCTAssertEqual(result.status, 3, "a file without any RDMA device gets no strategy")
            XCTAssertTrue((host["rdmaProblem"] as? String)?.contains("no RDMA devices") == true)
            XCTAssertEqual(report["refusal"] as? String, "no RDMA device on this host")
        } else if TestKernel.hasWritableStrategy(on: .ext4) {
            XCTAssertEqual(result.status, 0, result.stdout)
        } else {
            XCTAssertEqual(result.status, 3, "6.12's rxe: no writable pin of the page cache, no ODP: \(result.stdout)")
        }
    }

    /// The acceptance pair: on an ext4 FS-DAX file, 7.x names ODP and 6.1 refuses naming
    /// EOPNOTSUPP and the missing ODP support.
    func testDoctorOnExt4DAXNamesODPOn7AndRefusesOn61() throws {
        _ = try Facility.rdmaDevice.require()
        let scratch = try ScratchDirectory(in: try Facility.ext4DAX.require())
        let file = try scratch.file("dax", size: 1 << 20)
        let result = try doctor([file])
        print(result.stdout)
        XCTAssertTrue(result.stdout.contains("DAX                       on"), result.stdout)
        if TestKernel.rxeHasODP {
            XCTAssertEqual(result.status, 0)
            XCTAssertTrue(result.stdout.contains("strategy                  ODP on rxe0"), result.stdout)
        } else {
            XCTAssertEqual(result.status, 3)
            XCTAssertTrue(result.stdout.contains("strategy                  REFUSE"), result.stdout)
            XCTAssertTrue(result.stdout.contains("EOPNOTSUPP"), result.stdout)
            XCTAssertTrue(result.stdout.contains("no ODP support"), result.stdout)
        }
    }

    func testDoctorReportsTheODPIntegritySelfTestForEachDevice() throws {
        _ = try Facility.rdmaDevice.require()
        let result = try doctor(["--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let devices = try XCTUnwrap((report["host"] as? [String: Any])?["devices"] as? [[String: Any]])
        XCTAssertFalse(devices.isEmpty)
        for device in devices {
            let rc = device["odpRC"] as? [String] ?? []
            // rxe's ODP (7.x) corrupts unaligned transfers (docs/kernel-matrix.md); 6.1's rxe has none.
            let odp = rc.contains("WRITE") && rc.contains("READ")
            XCTAssertEqual(device["odpIntegrity"] as? String, odp ? "corrupts-unaligned" : "not-applicable", "\(device)")
            XCTAssertEqual(device["transferAlignment"] as? Int, odp ? 4096 : 1, "\(device)")
        }
        let text = try doctor([])
        XCTAssertTrue(text.stdout.contains("ODP integrity: "), text.stdout)
        XCTAssertTrue(text.stdout.contains("transfer alignment: "), text.stdout)
    }
}
