import Foundation
import MRLeaseGrant
import TestSupport
import XCTest

@testable import MRLeasePeer

/// `mrlease peer` where no connection is needed (usage) or possible (a host without RDMA).
final class PeerCommandTests: XCTestCase {
    private let mrlease = Subprocess.builtProduct("mrlease")
    private let descriptor = GrantDescriptor(endpoint: GrantEndpoint(address: .ipv4(0xC000_0201), port: 7471), grantID: 1,
                                             secret: try! GrantSecret(bytes: [UInt8](repeating: 7, count: 16))).text

    func testUsageErrorsExitTwoAndSayWhatIsWrong() throws {
        let cases: [([String], String)] = [
            (["peer", "mrlgAAAA", "read"], "not a grant descriptor"),
            (["peer", descriptor, "write", "--pattern", "seed:"], "--pattern seed:: use a byte (0xAB, 171) or seed:N"),
            (["peer", descriptor, "read", "--loop"], "--loop goes with write"),
            (["peer", descriptor, "read", "--offset", "12Q"], "--offset 12Q: not a byte count"),
            (["peer", descriptor, "scribble"], "scribble"),
        ]
        for (arguments, message) in cases {
            let result = try Subprocess.run(mrlease, arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
    }

    func testWithoutRDMAThePeerExitsOneNamingTheCallThatFailed() throws {
        try Facility.requireNoRDMADevice()
        let result = try Subprocess.run(mrlease, ["peer", descriptor, "read", "--length", "8"])
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.hasPrefix("mrlease peer read: connect: "), result.stderr)
        XCTAssertTrue(result.stderr.contains("rdma_"), result.stderr)
        print("mrlease peer without RDMA: \(result.stderr)")
    }

    func testTheResolveAddressIsTheEndpointsHostWithoutPortOrBrackets() {
        XCTAssertEqual(PeerConnection.host(of: GrantEndpoint(address: .ipv4(0xC000_0201), port: 7471)), "192.0.2.1")
        XCTAssertEqual(PeerConnection.host(of: GrantEndpoint(address: .ipv6(high: 0xFD00_0077_0000_0000, low: 1), port: 9)), "fd00:77::1")
    }
}
