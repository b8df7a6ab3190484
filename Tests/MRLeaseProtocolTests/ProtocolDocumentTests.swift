import Foundation
import MRLeaseProtocol
import XCTest

/// docs/protocol.md is the contract: its examples must be what the codec reads and writes.
final class ProtocolDocumentTests: XCTestCase {
    func testEveryJSONExampleInTheDocumentDecodesAndReencodesToTheSameBytes() throws {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/protocol.md")
        let text = try String(contentsOf: url, encoding: .utf8)
        let blocks = text.components(separatedBy: "```json\n").dropFirst()
            .compactMap { $0.components(separatedBy: "```").first }
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        XCTAssertGreaterThanOrEqual(blocks.count, 19, "the examples were found")
        for block in blocks {
            let bytes = Array(block.utf8)
            let isFromDaemon = block.contains(#""result":"#) || block.contains(#""error":{"#)
                || block.contains(#""type":"event""#)
            let reencoded: [UInt8]
            if isFromDaemon {
                switch try Codec.decodeServerMessage(bytes) {
                case .reply(let reply): reencoded = Codec.encode(reply)
                case .event(let event): reencoded = Codec.encode(event)
                }
            } else {
                let (id, request) = try Codec.decodeRequest(bytes)
                reencoded = Codec.encode(request, id: id)
            }
            XCTAssertEqual(String(decoding: reencoded, as: UTF8.self), block)
        }
    }
}
