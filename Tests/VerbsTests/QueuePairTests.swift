import Foundation
import TestSupport
import Verbs
import XCTest

/// `QueuePair.modify`, the `ibv_modify_qp` primitive under `connect`, on the guest's rxe0.
final class QueuePairTests: XCTestCase {
    func testModifyDrivesALoopbackRCQPThroughInitRTRRTSAndItCarriesAWrite() throws {
        let context = try GuestRDMA.openDevice()
        let pd = try context.allocateProtectionDomain()
        let completions = try context.createCompletionQueue(entries: 8)
        let qp = try pd.createQueuePair(sendQueue: completions, receiveQueue: completions)
        let peer = try pd.createQueuePair(sendQueue: completions, receiveQueue: completions)
        let port = try context.queryPort(1)
        let gid = try XCTUnwrap(port.gids.first { $0.description == "::ffff:127.0.0.1" })
        let access: AccessFlags = [.localWrite, .remoteWrite]
        try peer.connect(port: 1, local: gid, to: QueuePairEndpoint(qpNumber: qp.number, lid: port.lid, gid: gid),
                         access: access, mtu: .bytes4096)
        XCTAssertEqual(try qp.queryState(), .reset)

        var initialized = QueuePair.Attributes(state: .initialized)
        initialized.accessFlags = access
        try qp.modify(attributes: initialized, mask: [.state, .pkeyIndex, .port, .accessFlags])
        XCTAssertEqual(try qp.queryState(), .initialized)

        var toReceive = QueuePair.Attributes(state: .readyToReceive)
        toReceive.pathMTU = .bytes4096
        toReceive.destQPN = peer.number
        toReceive.maxDestReadAtomic = 1
        toReceive.minRNRTimer = 12
        toReceive.addressVector = .init(destinationLID: port.lid, port: 1,
                                        global: .init(destinationGID: gid, sourceGIDIndex: UInt8(gid.index)))
        try qp.modify(attributes: toReceive, mask: [.state, .addressVector, .pathMTU, .destQPN, .rqPSN,
                                                    .maxDestReadAtomic, .minRNRTimer])
        XCTAssertEqual(try qp.queryState(), .readyToReceive)

        var toSend = QueuePair.Attributes(state: .readyToSend)
        (toSend.timeout, toSend.retryCount, toSend.rnrRetry, toSend.maxReadAtomic) = (14, 7, 7, 1)
        try qp.modify(attributes: toSend, mask: [.state, .timeout, .retryCount, .rnrRetry, .sqPSN, .maxReadAtomic])
        XCTAssertEqual(try qp.queryState(), .readyToSend)

        // The QP the primitive connected carries an RDMA WRITE from one page of an MR to the next.
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0x3C, count: 4096)
        (buffer + 4096).initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        let mr = try pd.register(address: buffer, length: 8192, access: access)
        try qp.post(.write, local: mr, localAddress: mr.address, length: 4096, remoteAddress: mr.address + 4096, rkey: mr.rkey, wrID: 5)
        let deadline = Date().addingTimeInterval(20)
        var completion: WorkCompletion?
        while completion == nil && Date() < deadline {
            completion = try completions.poll(max: 1).first
            if completion == nil { usleep(1000) }
        }
        XCTAssertEqual(completion?.isSuccess, true, completion?.statusText ?? "no completion within 20 s")
        XCTAssertEqual(buffer.load(fromByteOffset: 8191, as: UInt8.self), 0x3C)
    }

    /// Atomics on a loopback pair: the remote word's old value lands in the local buffer.
    func testCompareAndSwapAndFetchAddOnALoopbackPairAndAMisalignedOneIsRefusedBeforeTheCall() throws {
        let context = try GuestRDMA.openDevice()
        let pd = try context.allocateProtectionDomain()
        let completions = try context.createCompletionQueue(entries: 8)
        let qp = try pd.createQueuePair(sendQueue: completions, receiveQueue: completions)
        let target = try pd.createQueuePair(sendQueue: completions, receiveQueue: completions)
        let port = try context.queryPort(1)
        let gid = try XCTUnwrap(port.gids.first { $0.description == "::ffff:127.0.0.1" })
        let access: AccessFlags = [.localWrite, .remoteWrite, .remoteRead, .remoteAtomic]
        try qp.connect(port: 1, local: gid, to: QueuePairEndpoint(qpNumber: target.number, lid: port.lid, gid: gid), access: access)
        try target.connect(port: 1, local: gid, to: QueuePairEndpoint(qpNumber: qp.number, lid: port.lid, gid: gid), access: access)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        buffer.storeBytes(of: UInt64(41), toByteOffset: 64, as: UInt64.self)
        let mr = try pd.register(address: buffer, length: 4096, access: access)
        func run(_ operation: QueuePair.RemoteOperation) throws -> UInt64 {
            try qp.post(operation, local: mr, localAddress: mr.address, length: 8, remoteAddress: mr.address + 64, rkey: mr.rkey)
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline {
                if let completion = try completions.poll(max: 1).first {
                    XCTAssertTrue(completion.isSuccess, completion.statusText)
                    return buffer.load(as: UInt64.self)
                }
                usleep(1000)
            }
            throw TestFailure("no completion for \(operation) within 20 s")
        }
        XCTAssertEqual(try run(.compareAndSwap(expected: 41, desired: 50)), 41)
        XCTAssertEqual(buffer.load(fromByteOffset: 64, as: UInt64.self), 50)
        XCTAssertEqual(try run(.fetchAdd(5)), 50)
        XCTAssertEqual(buffer.load(fromByteOffset: 64, as: UInt64.self), 55)
        XCTAssertThrowsError(try qp.post(.fetchAdd(1), local: mr, localAddress: mr.address, length: 8, remoteAddress: mr.address + 66, rkey: mr.rkey)) { error in
            XCTAssertEqual((error as? VerbsError)?.errno, .invalidArgument)
            XCTAssertTrue((error as? VerbsError)?.detail?.contains("8-byte-aligned") == true, "\(error)")
        }
        XCTAssertEqual(buffer.load(fromByteOffset: 64, as: UInt64.self), 55, "the refused atomic was never posted")
    }

    func testAModifyThatSkipsStatesFailsWithEINVALNamingIbvModifyQP() throws {
        let context = try GuestRDMA.openDevice()
        let pd = try context.allocateProtectionDomain()
        let completions = try context.createCompletionQueue(entries: 4)
        let qp = try pd.createQueuePair(sendQueue: completions, receiveQueue: completions)
        XCTAssertThrowsError(try qp.modify(attributes: .init(state: .readyToSend), mask: [.state])) { error in
            let verbs = error as? VerbsError
            XCTAssertEqual(verbs?.op, "ibv_modify_qp")
            XCTAssertEqual(verbs?.errno, .invalidArgument)
            XCTAssertTrue("\(error)".contains("ibv_modify_qp failed: EINVAL"), "\(error)")
            XCTAssertTrue("\(error)".contains("to RTS"), "\(error)")
        }
        XCTAssertEqual(try qp.queryState(), .reset)
    }
}
