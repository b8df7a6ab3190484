import MRLeaseGrant
import XCTest

@testable import MRLeasePeer

/// The rules a peer checks before posting anything, and what their refusals say.
final class TransferRulesTests: XCTestCase {
    private func terms(access: GrantAccess = .all, length: UInt64 = 1 << 20, alignment: UInt32 = 1) throws -> GrantTerms {
        GrantTerms(try AcceptPrivateData(access: access, remoteAddress: 0x7F00_0000_0000, length: length, rkey: 0x1234,
                                         transferAlignment: alignment, generation: 3, grantID: 9))
    }

    func testTransfersInsideTheRegionPassAndOnePastItsEndIsRefusedNamingTheRegionLength() throws {
        let terms = try terms(length: 8192)
        XCTAssertNil(TransferRules.check(.write, offset: 0, length: 8192, terms: terms))
        XCTAssertNil(TransferRules.check(.read, offset: 8191, length: 1, terms: terms))
        XCTAssertNil(TransferRules.check(.write, offset: 8192, length: 0, terms: terms), "an empty transfer at the end")
        let problem = TransferRules.check(.write, offset: 8000, length: 193, terms: terms)
        XCTAssertEqual(problem, .outOfBounds(offset: 8000, length: 193, regionLength: 8192))
        XCTAssertTrue("\(problem!)".contains("8192 bytes"), "\(problem!)")
        XCTAssertTrue("\(problem!)".contains("keep offset + length within the region"), "\(problem!)")
    }

    func testAnOffsetPlusLengthThatOverflowsIsOutOfBoundsNotAWrappedSmallRange() throws {
        let terms = try terms()
        XCTAssertEqual(TransferRules.check(.read, offset: UInt64.max - 10, length: 20, terms: terms),
                       .outOfBounds(offset: UInt64.max - 10, length: 20, regionLength: 1 << 20))
    }

    func testEachOperationNeedsItsOwnAccessBit() throws {
        let readOnly = try terms(access: .read)
        XCTAssertNil(TransferRules.check(.read, offset: 0, length: 8, terms: readOnly))
        XCTAssertNil(TransferRules.check(.persist, offset: 0, length: 1, terms: readOnly))
        XCTAssertEqual(TransferRules.check(.write, offset: 0, length: 8, terms: readOnly), .notGranted(needed: .write, granted: .read))
        XCTAssertEqual(TransferRules.check(.fetchAdd, offset: 0, length: 8, terms: readOnly), .notGranted(needed: .atomic, granted: .read))
        let writeOnly = try terms(access: .write)
        XCTAssertEqual(TransferRules.check(.persist, offset: 0, length: 1, terms: writeOnly), .notGranted(needed: .read, granted: .write))
        let text = "\(PeerError.refused(operation: .persist, .notGranted(needed: .read, granted: .write)))"
        XCTAssertTrue(text.hasPrefix("persist (an RDMA READ after the writes) refused before posting"), text)
        XCTAssertTrue(text.contains("allows write, not read"), text)
        XCTAssertTrue(text.contains("--grant-access"), text)
    }

    func testOnA4096AlignedGrantOffsetAndLengthMustBothBePageMultiples() throws {
        let terms = try terms(alignment: 4096)
        XCTAssertNil(TransferRules.check(.write, offset: 4096, length: 8192, terms: terms))
        XCTAssertEqual(TransferRules.check(.write, offset: 100, length: 4096, terms: terms), .misaligned(offset: 100, length: 4096, alignment: 4096))
        XCTAssertEqual(TransferRules.check(.read, offset: 4096, length: 100, terms: terms), .misaligned(offset: 4096, length: 100, alignment: 4096))
        let text = "\(PeerError.refused(operation: .write, .misaligned(offset: 100, length: 4096, alignment: 4096)))"
        XCTAssertTrue(text.hasPrefix("write refused before posting: offset 100 and length 4096 must both be multiples of the grant's transfer alignment 4096"), text)
        XCTAssertTrue(text.contains("refuses instead of corrupting") && text.contains("align both to 4096"), text)
        XCTAssertNil(TransferRules.check(.write, offset: 100, length: 3, terms: try self.terms(alignment: 1)), "alignment 1 allows any byte")
    }

    func testAtomicsNeedAnEightByteAlignedWordWhateverTheTransferAlignment() throws {
        let terms = try terms(alignment: 4096)
        XCTAssertNil(TransferRules.check(.compareAndSwap, offset: 8, length: 8, terms: terms), "atomics are not page transfers")
        XCTAssertEqual(TransferRules.check(.fetchAdd, offset: 12, length: 8, terms: terms), .atomicMisaligned(offset: 12))
        XCTAssertEqual(TransferRules.check(.fetchAdd, offset: (1 << 20) - 4, length: 8, terms: terms),
                       .outOfBounds(offset: (1 << 20) - 4, length: 8, regionLength: 1 << 20))
        XCTAssertTrue("\(TransferProblem.atomicMisaligned(offset: 12))".contains("multiple of 8"))
    }

    func testPersistReadsOneAlignedUnitWhereTheLastWriteEnded() throws {
        let aligned = try terms(length: 1 << 20, alignment: 4096)
        XCTAssertTrue(TransferRules.persistRead(after: 8192, terms: aligned) == (4096, 4096))
        XCTAssertTrue(TransferRules.persistRead(after: 0, terms: aligned) == (0, 4096), "nothing written: the region's first unit")
        XCTAssertTrue(TransferRules.persistRead(after: 1 << 20, terms: aligned) == ((1 << 20) - 4096, 4096))
        let byteAligned = try terms(length: 100, alignment: 1)
        XCTAssertTrue(TransferRules.persistRead(after: 57, terms: byteAligned) == (56, 1))
        for (end, terms) in [(UInt64(8192), aligned), (57, byteAligned), (100, byteAligned)] {
            let read = TransferRules.persistRead(after: end, terms: terms)
            XCTAssertNil(TransferRules.check(.persist, offset: read.offset, length: read.length, terms: terms), "persist's own READ passes the rules")
        }
    }

    func testTermsDescribeThemselvesWithAccessNames() throws {
        let text = "\(try terms(access: [.read, .atomic], alignment: 4096))"
        XCTAssertTrue(text.contains("generation 3") && text.contains("rkey 0x1234") && text.contains("access read,atomic")
                      && text.contains("alignment 4096"), text)
    }
}
