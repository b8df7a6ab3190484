import CRDMA
import Foundation
import Glibc
import TestSupport
import XCTest

@testable import Verbs

/// A client's domain on the guest's soft-RoCE devices: what it holds goes, in order, when it
/// closes, and its PD lives on the context librdmacm uses so rdma_cm QPs can be made in it.
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

    func testLibrdmacmContextIsOneOfRdmaGetDevicesAndTheDomainsPDLivesOnIt() throws {
        let name = try Facility.rdmaDevice.require()
        let context = try XCTUnwrap(try Context.librdmacm(deviceNamed: name), "rdma_get_devices does not list \(name)")
        XCTAssertEqual(context.origin, .librdmacm)
        XCTAssertEqual(context.device.name, name)
        var count: Int32 = 0
        let list = try XCTUnwrap(rdma_get_devices(&count), "rdma_get_devices: errno \(errno)")
        defer { rdma_free_devices(list) }
        let contexts = (0..<Int(count)).compactMap { list[$0] }
        XCTAssertTrue(contexts.contains(context.pointer), "our context is not one of librdmacm's")

        let domain = try ClientDomain(context: context)
        XCTAssertEqual(domain.protectionDomain.pointer?.pointee.context, context.pointer)
        try domain.close()
        XCTAssertNil(try Context.librdmacm(deviceNamed: "no-such-device"))
    }

    /// The point of librdmacm's contexts: an rdma_cm id bound to the guest's 192.0.2.x address
    /// makes its QP in a domain's PD, while a PD on a context we opened ourselves for the same
    /// device is refused (librdmacm: `id->verbs != pd->context` → EINVAL).
    func testRdmaCreateQPAcceptsTheDomainsPDAndRefusesOneFromAnotherContext() throws {
        let address = try GuestRDMA.requireRDMACMAddress()
        var created: UnsafeMutablePointer<rdma_cm_id>?
        XCTAssertEqual(rdma_create_id(nil, &created, nil, RDMA_PS_TCP), 0, "rdma_create_id: errno \(errno)")
        let id = try XCTUnwrap(created)
        defer { rdma_destroy_id(id) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        XCTAssertEqual(inet_pton(AF_INET, address, &sin.sin_addr), 1)
        let bound = withUnsafeMutablePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { rdma_bind_addr(id, $0) }
        }
        XCTAssertEqual(bound, 0, "rdma_bind_addr \(address): errno \(errno)")
        let verbs = try XCTUnwrap(id.pointee.verbs, "the bound id has no device")
        let name = String(cString: ibv_get_device_name(verbs.pointee.device))

        let domain = try ClientDomain(context: try XCTUnwrap(try Context.librdmacm(deviceNamed: name)))
        XCTAssertEqual(domain.context.pointer, verbs)
        let own = try XCTUnwrap(try Device.list().first { $0.name == name }).open()
        let ownPD = try own.allocateProtectionDomain()

        var attributes = ibv_qp_init_attr()
        attributes.qp_type = IBV_QPT_RC
        attributes.cap.max_send_wr = 4
        attributes.cap.max_recv_wr = 4
        attributes.cap.max_send_sge = 1
        attributes.cap.max_recv_sge = 1
        let refused = rdma_create_qp(id, ownPD.pointer, &attributes)
        let refusal = errno
        XCTAssertEqual(refused, -1, "rdma_create_qp took a PD from another context")
        XCTAssertEqual(refusal, EINVAL)
        XCTAssertEqual(rdma_create_qp(id, domain.protectionDomain.pointer, &attributes), 0, "rdma_create_qp: errno \(errno)")
        let qpn = try XCTUnwrap(id.pointee.qp).pointee.qp_num
        XCTAssertTrue(try GuestRDMA.queuePairNumbers().contains(qpn))
        // A raw rdma_create_qp QP (CMID.createQueuePair wraps one; this test shows the C rule): it goes before the domain.
        rdma_destroy_qp(id)
        XCTAssertNoThrow(try domain.close())
    }
}
