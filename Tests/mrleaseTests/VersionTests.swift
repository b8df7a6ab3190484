import MRLeaseProtocol
import TestSupport
import XCTest

/// Each program prints the one release (`Release.version`, MRLeaseProtocol) for `--version` and
/// exits 0: what an operator or a bug report quotes, and what Scripts/package versions the .deb by.
final class VersionTests: XCTestCase {
    func expectVersion(_ product: String) throws {
        let result = try Subprocess.run(Subprocess.builtProduct(product), ["--version"])
        XCTAssertEqual(result.status, 0, "\(product) --version: \(result.stderr)")
        XCTAssertEqual(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines), Release.version, "\(product) --version")
    }

    func testMRLeasePrintsTheRelease() throws { try expectVersion("mrlease") }
    func testMRLeasedPrintsTheRelease() throws { try expectVersion("mrleased") }
    func testMRLeasedBenchPrintsTheRelease() throws { try expectVersion("mrleased-bench") }
}
