import Foundation
import Glibc
import TestSupport
import XCTest

import Verbs

/// A client's domain on the guest's soft-RoCE device: what it holds goes, in order, when it
/// closes.
final class ClientDomainTests: XCTestCase {
    func testClosingTheDomainDestroysItsQPAndMRsThenItsPDAndLaterDeregisterIsHarmless() throws {
        let context = try GuestRDMA.openDevice()
        let domainsBefore = try GuestRDMA.protectionDomainCount()
        let domain = try ClientDomain(context: context)
        let completions = try context.createCompletionQueue(entries: 4)
        let qp = try domain.protectionDomain.createQueuePair(sendQueue: completions, receiveQueue: completions)
        let length = 1 << 16
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 4096)
        defer { buffer.deallocate() }
        let released = try domain.register(address: buffer, length: 4096, access: [.localWrite])
        let held = try domain.register(address: buffer + 4096, length: 4096, access: [.localWrite, .remoteWrite])
        XCTAssertEqual(try GuestRDMA.protectionDomainCount(), domainsBefore + 1)
        XCTAssertTrue(try GuestRDMA.queuePairNumbers().contains(qp.number))
        XCTAssertTrue(try RDMAResources.memoryRegionKeys().isSuperset(of: [released.rkey, held.rkey]))

        // The engine deregisters what it tracks before releasing the owner; one MR is still
        // held (and registered) when the domain closes.
        try released.deregister()
        try domain.close()

        XCTAssertFalse(domain.isOpen)
        XCTAssertTrue(qp.isDestroyed)
        XCTAssertFalse(held.isRegistered)
        XCTAssertFalse(try GuestRDMA.queuePairNumbers().contains(qp.number), "the QP outlived its domain's close")
        XCTAssertTrue(try RDMAResources.memoryRegionKeys().isDisjoint(with: [released.rkey, held.rkey]), "an MR outlived its domain's close")
        XCTAssertEqual(try GuestRDMA.protectionDomainCount(), domainsBefore, "the PD outlived its domain's close")

        XCTAssertNoThrow(try held.deregister(), "a deregister after the domain closed must do nothing")
        XCTAssertNoThrow(try released.deregister())
        XCTAssertNoThrow(try domain.close(), "a second close must do nothing")
        XCTAssertThrowsError(try domain.register(address: buffer, length: 4096, access: [.localWrite])) { error in
            XCTAssertEqual((error as? VerbsError)?.op, "ibv_reg_mr")
            XCTAssertEqual((error as? VerbsError)?.errno, .badFileDescriptor)
        }
        XCTAssertThrowsError(try qp.queryState()) { error in
            XCTAssertEqual((error as? VerbsError)?.op, "ibv_query_qp")
        }
    }
}
