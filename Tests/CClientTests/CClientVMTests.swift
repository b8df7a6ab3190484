import Foundation
import TestSupport
import XCTest

/// libmrlease in the guests, on a real RDMA device: the C test registers ranges, truncates the
/// file from another process and checks each region's revoking → revoked → restored (or lost),
/// plus file-busy, unsupported-filesystem (a file of the host's tree, which the guest mounts
/// over 9p), one revoking-file and one ack of the file for a connection that asked for them
/// (libmrlease 1.5.0) and a shutdown as the client sees it; and the example program, written
/// from mrlease.h and libmrlease(3) alone, does the same through the shared library.
final class CClientVMTests: XCTestCase {
    func testRegisterTruncateEventsAndTheGuestOnlyErrorCodes() throws {
        let device = try Facility.rdmaDevice.require()
        // ext4, or tmpfs where this kernel registers no writable page-cache region (6.12 with rxe).
        let directory = try Facility.writable(.ext4).require()
        try CLibrary.make()
        // `revoke`: the C test follows the lease protocol's events (the library's register
        // cannot ask a policy; the example below runs under the default too).
        let daemon = try RunningDaemon(arguments: ["--device", device, "--log-level", "warning", "--layout-policy", "revoke"])
        defer { _ = daemon.stop() }
        let scratch = try ScratchDirectory(in: directory, name: "mrlease-clib")
        let onNinePee = CLibrary.build + "/check/client-test"
        let checks = try CLibrary.runChecks(["guest", daemon.socketPath, scratch.path, "\(daemon.pid)", onNinePee])
        XCTAssertEqual(checks.status, 0, checks.failures.joined(separator: "\n") + "\n" + daemon.log)
        XCTAssertEqual(checks.failed, 0)
        for code in ["file-busy", "unsupported-filesystem", "revoking, revoked, restored", "lost", "the revoking says shutdown",
                     "one revoking-file names exactly the file's regions", "after the ack of the file: revoked, restored per region"] {
            XCTAssertTrue(checks.output.contains(code), "the C test checks \(code)")
        }
        XCTAssertEqual(daemon.stop(), 0, "the daemon stopped cleanly after SIGTERM: \(daemon.log)")
    }

    /// Under `layout-policy = revoke`: revoking, revoked, restored. Under the default (`follow`):
    /// an ODP region rides through with no event; a pinned one (no ODP here) revokes as before.
    func testTheExampleSeesRevokingRevokedRestoredAroundATruncate() throws {
        let device = try Facility.rdmaDevice.require()
        try CLibrary.make()
        // ext4 and xfs, or tmpfs (once) where this kernel registers no writable page-cache region.
        var facilities: [Facility] = []
        for preferred in [Facility.ext4, .xfs] where !facilities.contains(Facility.writable(preferred)) {
            facilities.append(Facility.writable(preferred))
        }
        for facility in facilities {
          for policy in [["--layout-policy", "revoke"], []] {
            let directory = try facility.require()
            let daemon = try RunningDaemon(arguments: ["--device", device, "--log-level", "warning"] + policy)
            defer { XCTAssertEqual(daemon.stop(), 0, daemon.log) }
            let scratch = try ScratchDirectory(in: directory, name: "mrlease-demo")
            let file = try scratch.file("data", size: 4 << 20)
            for binary in [CLibrary.build + "/examples/truncate-demo", CLibrary.build + "/check/example-truncate-demo"] {
                let run = try Subprocess.run(binary, [file, daemon.socketPath])
                print("\(facility): \(binary):\n\(run.stdout)\(run.stderr)")
                XCTAssertEqual(run.status, 0, "\(facility): \(run.stderr)\n\(daemon.log)")
                let events = run.stdout.split(separator: "\n").filter { $0.hasPrefix("event ") }.map { String($0.split(separator: " ")[1]) }
                let follows = run.stdout.contains("layout policy follow")
                XCTAssertEqual(follows, policy.isEmpty && run.stdout.contains(" odp on "), "\(facility) \(policy): \(run.stdout)")
                XCTAssertEqual(events, follows ? [] : ["revoking", "revoked", "restored"], "\(facility) \(policy): \(run.stdout)")
                if follows { XCTAssertTrue(run.stdout.contains("no event: the region followed the file"), run.stdout) }
                XCTAssertTrue(run.stdout.contains("deregistered region") && run.stdout.contains("the truncate went through"), run.stdout)
            }
          }
        }
    }
}
