import TestSupport
import XCTest

/// The daemon the remote-access VM tests run: listening for peers on the guest's rdma_cm address
/// (port 0: the kernel picks), a 1 GiB byte quota, a 300 ms quiesce.
enum PeerDaemon {
    static func start() throws -> RunningDaemon {
        let address = try Facility.rdmaCMAddress.require()
        // No --device: the daemon serves the listener's device (rxe1).
        return try RunningDaemon(arguments: ["--listen", "\(address):0", "--log-level", "info"],
                                 environment: ["MRLEASED_MAX_BYTES_PER_UID": "1073741824", "MRLEASED_QUIESCE_MS": "300"])
    }

    /// Stops `daemon`; a test that failed, or a daemon that did not exit 0, prints its log.
    static func stop(_ daemon: RunningDaemon?, after test: XCTestCase) {
        guard let daemon else { return }
        let status = daemon.stop()
        if status != 0 || (test.testRun?.totalFailureCount ?? 0) > 0 {
            XCTAssertEqual(status, 0, "mrleased did not stop cleanly (nil: still running after SIGTERM)")
            print("mrleased log:\n\(daemon.log)")
        }
    }
}
