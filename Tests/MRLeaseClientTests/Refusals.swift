import MRLeaseClient
import XCTest

extension XCTestCase {
    /// Runs `body`, which must fail with the daemon's refusal `code`; returns the refusal.
    func assertRefused(_ code: ErrorCode, _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> ProtocolError? {
        do {
            try body()
            XCTFail("expected \(code.rawValue), got success", file: file, line: line)
        } catch let error as ClientError {
            XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
            return error.protocolError
        } catch {
            XCTFail("expected a ClientError, got \(error)", file: file, line: line)
        }
        return nil
    }
}
