import Foundation
import TestSupport
import XCTest

/// Every command's `--help` text is wrapped by the argument parser, not by hard line breaks in
/// the source: a hard break mid-sentence shows as a short line that ends no sentence ("… and
/// passes" / "the fd to mrleased …"). The man pages are generated from the same texts.
final class HelpTextTests: XCTestCase {
    func testNoHelpTextBreaksALineMidSentence() throws {
        let commands: [(String, [String])] = [
            ("mrleased", []), ("mrleased-bench", []), ("mrlease", []),
        ] + ["doctor", "status", "list", "stats", "register", "deregister", "peer", "grant", "revoke-grant"].map { ("mrlease", [$0]) }
        for (product, subcommand) in commands {
            let result = try Subprocess.run(Subprocess.builtProduct(product), subcommand + ["--help"])
            XCTAssertEqual(result.status, 0, "\(product) \(subcommand) --help: \(result.stderr)")
            // The overview and discussion come before USAGE.
            let prose = result.stdout.components(separatedBy: "\nUSAGE:").first ?? ""
            for line in prose.split(separator: "\n") where line.count < 60 {
                guard let last = line.last else { continue }
                XCTAssertTrue(".:)".contains(last), "\(product) \(subcommand.joined()) --help breaks mid-sentence after: \"\(line)\"")
            }
        }
    }
}
