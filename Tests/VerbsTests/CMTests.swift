import CRDMA
import Foundation
import Glibc
import TestSupport
import XCTest

@testable import Verbs

/// `CMEventChannel` and `CMID` on the guest's rxe1 (192.0.2.1 on dummy0): both ends of a
/// connection in one process, driven by polling both channels the way the daemon's loop will.
final class CMTests: XCTestCase {
    /// Polls every channel, buffering what is not asked for, until `channel` has an event.
    private final class EventPump {
        private let channels: [CMEventChannel]
        private var pending: [ObjectIdentifier: [CMEvent]] = [:]
        /// Every event seen, in order, as "kind(status)", for the record and for failures.
        private(set) var log: [String] = []

        init(_ channels: CMEventChannel...) { self.channels = channels }

        func next(on channel: CMEventChannel, within seconds: Double = 20) throws -> CMEvent {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if var queue = pending[ObjectIdentifier(channel)], !queue.isEmpty {
                    let event = queue.removeFirst()
                    pending[ObjectIdentifier(channel)] = queue
                    return event
                }
                var quiet = true
                for candidate in channels {
                    while let event = try candidate.nextEvent() {
                        quiet = false
                        log.append("\(event.kind)(\(event.status))")
                        pending[ObjectIdentifier(candidate), default: []].append(event)
                    }
                }
                if quiet { usleep(1000) }
            }
            throw TestFailure("no rdma_cm event within \(seconds) s; seen so far: \(log)")
        }

        /// The next event on `channel`, which must be `kind`.
        func expect(_ kind: CMEvent.Kind, on channel: CMEventChannel) throws -> CMEvent {
            let event = try next(on: channel)
            guard event.kind == kind else {
                throw TestFailure("expected \(kind), got \(event.kind) status \(event.status); seen: \(log)")
            }
            return event
        }
    }

    private func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
    }

    /// A listener bound to the guest's rdma_cm address on a port the kernel picks.
    private func listener(on channel: CMEventChannel, address: String) throws -> CMID {
        let id = try channel.createID()
        try id.bind(address: address, port: 0)
        try id.listen()
        return id
    }

    /// Resolves the active side's address and route to `address:port`.
    private func resolve(_ id: CMID, to address: String, port: UInt16, pump: EventPump) throws {
        try id.resolveAddress(address, port: port)
        _ = try pump.expect(.addressResolved, on: id.channel)
        try id.resolveRoute()
        _ = try pump.expect(.routeResolved, on: id.channel)
    }

    /// An active id resolved to `address:port` with an RC QP in a fresh client domain on the
    /// id's librdmacm context.
    private func activeSide(on channel: CMEventChannel, to address: String, port: UInt16, pump: EventPump)
        throws -> (id: CMID, context: Context, domain: ClientDomain, cq: CompletionQueue, qp: QueuePair) {
        let id = try channel.createID()
        try resolve(id, to: address, port: port, pump: pump)
        let context = try XCTUnwrap(try id.context(), "a resolved id has a device")
        let domain = try ClientDomain(context: context)
        let cq = try context.createCompletionQueue(entries: 8)
        let qp = try domain.createQueuePair(on: id, sendQueue: cq, receiveQueue: cq)
        return (id, context, domain, cq, qp)
    }

    /// Runs `body` with the guest's rdma_cm address and checks that it left no QP, cm_id, PD,
    /// MR or CQ behind, per the kernel.
    private func withTeardownCheck(_ body: (String) throws -> Void) throws {
        let address = try GuestRDMA.requireRDMACMAddress()
        let before = try baseline(address: address)
        try body(address)
        try assertNothingOutlived(before)
    }

    /// What this process holds before a test, taken after librdmacm has bound an id on the
    /// address's device and listed its contexts: librdmacm allocates one PD per device on first
    /// use and keeps it while the process lives, so a count taken earlier would blame the test.
    private func baseline(address: String) throws -> [String: Int] {
        try {
            let id = try CMEventChannel().createID()
            try id.bind(address: address, port: 0)
            XCTAssertNotNil(try id.context())
            try id.destroy()
        }()
        print("rdma_cm baseline pd entries: \(try RDMAResources.entries("pd"))")
        return try resourceCounts()
    }

    private func assertNothingOutlived(_ before: [String: Int], file: StaticString = #filePath, line: UInt = #line) throws {
        let after = try resourceCounts()
        print("rdma_cm teardown: before \(before) after \(after); pd entries \(try RDMAResources.entries("pd"))")
        XCTAssertEqual(after, before, "QPs, cm_ids, PDs, MRs or CQs outlived the test", file: file, line: line)
    }

    private func resourceCounts() throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for kind in ["qp", "cm_id", "pd", "mr", "cq"] { counts[kind] = try RDMAResources.entries(kind).count }
        return counts
    }

    func testConnectWithPrivateDataAcceptWriteAndDisconnectLeaveNothingBehind() throws {
        try withTeardownCheck { address in
            let passiveChannel = try CMEventChannel(), activeChannel = try CMEventChannel()
            let pump = EventPump(passiveChannel, activeChannel)
            let listening = try listener(on: passiveChannel, address: address)
            let port = try listening.localPort()
            XCTAssertNotEqual(port, 0)
            let ids = try RDMAResources.entries("cm_id")
            XCTAssertTrue(ids.contains { $0["state"] as? String == "LISTEN" && $0["src-addr"] as? String == "\(address):\(port)" }, "the listener is not in rdma resource show cm_id: \(ids)")

            let (active, activeContext, activeDomain, activeCQ, activeQP) = try activeSide(on: activeChannel, to: address, port: port, pump: pump)
            XCTAssertEqual(activeContext.origin, .librdmacm)
            XCTAssertTrue(active.queuePair === activeQP)
            XCTAssertTrue(try GuestRDMA.queuePairNumbers().contains(activeQP.number))

            let request = pattern(CMID.maxConnectPrivateData, seed: 0x11)
            try active.connect(privateData: request)

            let incoming = try pump.expect(.connectRequest, on: passiveChannel)
            XCTAssertTrue(incoming.listenID === listening)
            XCTAssertFalse(incoming.id === listening)
            XCTAssertEqual(incoming.privateData, request, "the connect request's private data, byte for byte")
            XCTAssertEqual(incoming.connection?.initiatorDepth, 1)
            let passiveContext = try XCTUnwrap(try incoming.id.context())
            XCTAssertEqual(passiveContext.pointer, activeContext.pointer, "both ends are on rxe1, one librdmacm context")
            let passiveDomain = try ClientDomain(context: passiveContext)
            let passiveCQ = try passiveContext.createCompletionQueue(entries: 8)
            let passiveQP = try passiveDomain.createQueuePair(on: incoming.id, sendQueue: passiveCQ, receiveQueue: passiveCQ)
            XCTAssertEqual(incoming.connection?.qpNumber, activeQP.number, "the request names the active QP")

            // The passive side's target MR; its address and rkey travel in the accept's private data.
            let length = 8192
            let target = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 4096)
            let source = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 4096)
            defer { target.deallocate(); source.deallocate() }
            target.initializeMemory(as: UInt8.self, repeating: 0, count: length)
            let payload = pattern(length, seed: 0x5A)
            payload.withUnsafeBytes { source.copyMemory(from: $0.baseAddress!, byteCount: length) }
            let targetMR = try passiveDomain.register(address: target, length: length, access: [.localWrite, .remoteWrite])
            let sourceMR = try activeDomain.register(address: source, length: length, access: [.localWrite])
            var reply = withUnsafeBytes(of: targetMR.address.littleEndian, Array.init) + withUnsafeBytes(of: targetMR.rkey.littleEndian, Array.init)
            reply += pattern(CMID.maxAcceptPrivateData - reply.count, seed: 0x22)
            try incoming.id.accept(privateData: reply)

            let established = try pump.expect(.established, on: activeChannel)
            XCTAssertTrue(established.id === active)
            XCTAssertEqual(established.privateData, reply, "the accept's private data, byte for byte")
            XCTAssertEqual(established.connection?.qpNumber, passiveQP.number)
            let passiveEstablished = try pump.expect(.established, on: passiveChannel)
            XCTAssertTrue(passiveEstablished.id === incoming.id)
            print("rdma_cm passive ESTABLISHED private data: \(passiveEstablished.privateData.count) bytes")

            let remoteAddress = established.privateData.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            let rkey = established.privateData.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) }
            try activeQP.post(.write, local: sourceMR, localAddress: sourceMR.address, length: UInt32(length),
                              remoteAddress: remoteAddress, rkey: rkey, wrID: 9)
            let completion = try poll(activeCQ)
            XCTAssertEqual(completion.isSuccess, true, completion.statusText)
            XCTAssertEqual(Array(UnsafeRawBufferPointer(start: target, count: length)), payload, "the RDMA WRITE landed byte for byte")

            // The DREQ reaches the passive side as DISCONNECTED; the active side's DISCONNECTED
            // waits for the DREP, which the passive side's own rdma_disconnect sends.
            try active.disconnect()
            let passiveGone = try pump.expect(.disconnected, on: passiveChannel)
            XCTAssertTrue(passiveGone.id === incoming.id)
            try incoming.id.disconnect()
            let activeGone = try pump.expect(.disconnected, on: activeChannel)
            XCTAssertTrue(activeGone.id === active)
            print("rdma_cm events: \(pump.log)")

            try activeDomain.close()
            try passiveDomain.close()
            XCTAssertTrue(activeQP.isDestroyed && passiveQP.isDestroyed && active.isDestroyed && incoming.id.isDestroyed,
                          "closing a domain destroys its connections' QPs and ids")
            XCTAssertTrue(try GuestRDMA.queuePairNumbers().isDisjoint(with: [activeQP.number, passiveQP.number]))
            try listening.destroy()
            XCTAssertNoThrow(try active.destroy(), "a second destroy does nothing")
            XCTAssertThrowsError(try active.disconnect()) { error in
                XCTAssertEqual((error as? VerbsError)?.op, "rdma_disconnect")
                XCTAssertEqual((error as? VerbsError)?.errno, .badFileDescriptor)
            }
        }
    }

    func testARejectWithPrivateDataReachesTheActiveSideWithItsBytesAndStatus() throws {
        try withTeardownCheck { address in
            let passiveChannel = try CMEventChannel(), activeChannel = try CMEventChannel()
            let pump = EventPump(passiveChannel, activeChannel)
            let listening = try listener(on: passiveChannel, address: address)
            let (active, _, domain, _, _) = try activeSide(on: activeChannel, to: address, port: try listening.localPort(), pump: pump)
            try active.connect(privateData: [1, 2, 3])

            let incoming = try pump.expect(.connectRequest, on: passiveChannel)
            XCTAssertEqual(Array(incoming.privateData.prefix(3)), [1, 2, 3])
            print("rdma_cm CONNECT_REQUEST private data for 3 bytes sent: \(incoming.privateData.count) bytes")
            // What the kernel says to one byte more than the limits, handed to librdmacm directly.
            let tooLong = [UInt8](repeating: 9, count: CMID.maxRejectPrivateData + 1)
            let rejectRC = tooLong.withUnsafeBytes { rdma_reject(incoming.id.pointer, $0.baseAddress, UInt8($0.count)) }
            let rejectErrno = errno
            print("rdma_reject with \(tooLong.count) bytes of private data: rc \(rejectRC) errno \(rejectErrno)")
            XCTAssertEqual(rejectRC, -1, "the kernel took \(tooLong.count) bytes of reject private data")
            let reason = pattern(CMID.maxRejectPrivateData, seed: 0x33)
            try incoming.id.reject(privateData: reason)

            let rejected = try pump.expect(.rejected, on: activeChannel)
            XCTAssertTrue(rejected.id === active)
            XCTAssertEqual(rejected.privateData, reason, "the reject's private data, byte for byte")
            XCTAssertEqual(rejected.status, 28, "IB CM reject reason 28: consumer defined")
            print("rdma_cm reject: status \(rejected.status), \(rejected.privateData.count) bytes; events \(pump.log)")
            try domain.close()
            try incoming.id.destroy()
            try listening.destroy()
        }
    }

    /// What the daemon will do with a request it cannot even parse: let the event go.
    func testDroppingAConnectRequestsIdRejectsTheRequest() throws {
        try withTeardownCheck { address in
            let passiveChannel = try CMEventChannel(), activeChannel = try CMEventChannel()
            let pump = EventPump(passiveChannel, activeChannel)
            let listening = try listener(on: passiveChannel, address: address)
            let (active, _, domain, _, _) = try activeSide(on: activeChannel, to: address, port: try listening.localPort(), pump: pump)
            try active.connect(privateData: [0xFF])
            weak var dropped: CMID?
            try {
                let incoming = try pump.expect(.connectRequest, on: passiveChannel)
                dropped = incoming.id
            }()
            XCTAssertNil(dropped, "nothing but the event held the request's id")
            let rejected = try pump.expect(.rejected, on: activeChannel)
            print("rdma_cm dropped request: \(rejected.kind) status \(rejected.status)")
            XCTAssertEqual(rejected.status, 28, "IB CM reject reason 28: consumer defined")
            try domain.close()
            try listening.destroy()
        }
    }

    func testAConnectToAPortNobodyListensOnEndsInARejectedEvent() throws {
        try withTeardownCheck { address in
            let channel = try CMEventChannel()
            let pump = EventPump(channel)
            // A port that was free a moment ago: bound by a listener that is gone again.
            let probe = try listener(on: channel, address: address)
            let port = try probe.localPort()
            try probe.destroy()
            let (active, _, domain, _, _) = try activeSide(on: channel, to: address, port: port, pump: pump)
            let started = Date()
            try active.connect(privateData: [7])
            let refused = try pump.next(on: channel)
            print("rdma_cm connect to unlistened port \(port): \(refused.kind) status \(refused.status), \(refused.privateData.count) bytes, "
                  + "after \(Int(Date().timeIntervalSince(started) * 1000)) ms")
            XCTAssertEqual(refused.kind, .rejected, "rxe (IB CM over RoCE) answers an unknown service ID with a REJ")
            XCTAssertEqual(refused.status, 8, "IB CM reject reason 8: invalid service ID")
            try domain.close()
        }
    }

    /// Oversized private data is refused by us before any call, naming the limit; the kernel
    /// would refuse the same (measured with a raw `rdma_connect`).
    func testOversizedPrivateDataIsRefusedBeforeAnyCallAndTheKernelAgrees() throws {
        let address = try GuestRDMA.requireRDMACMAddress()
        let channel = try CMEventChannel()
        let pump = EventPump(channel)
        let id = try channel.createID()
        let limits: [(String, Int, (CMID, [UInt8]) throws -> Void)] = [
            ("rdma_connect", CMID.maxConnectPrivateData, { try $0.connect(privateData: $1) }),
            ("rdma_accept", CMID.maxAcceptPrivateData, { try $0.accept(privateData: $1) }),
            ("rdma_reject", CMID.maxRejectPrivateData, { try $0.reject(privateData: $1) }),
        ]
        for (op, limit, call) in limits {
            XCTAssertThrowsError(try call(id, [UInt8](repeating: 1, count: limit + 1)), op) { error in
                let verbs = error as? VerbsError
                XCTAssertEqual(verbs?.op, op)
                XCTAssertEqual(verbs?.errno, .invalidArgument)
                XCTAssertTrue(verbs?.detail?.contains("at most \(limit)") == true, "\(error)")
            }
        }
        // The same 57 bytes handed to librdmacm directly on a routed id.
        let probe = try listener(on: channel, address: address)
        try resolve(id, to: address, port: try probe.localPort(), pump: pump)
        let oversized = [UInt8](repeating: 1, count: CMID.maxConnectPrivateData + 1)
        let rc = oversized.withUnsafeBytes { bytes in
            var parameters = rdma_conn_param()
            parameters.private_data = bytes.baseAddress
            parameters.private_data_len = UInt8(bytes.count)
            parameters.responder_resources = 1
            parameters.initiator_depth = 1
            return rdma_connect(id.pointer, &parameters)
        }
        let refusal = errno
        print("rdma_connect with \(oversized.count) bytes of private data: rc \(rc) errno \(refusal)")
        XCTAssertEqual(rc, -1, "the kernel took \(oversized.count) bytes of connect private data")
        XCTAssertEqual(refusal, EINVAL)
        try id.destroy()
        try probe.destroy()
    }

    func testAQueuePairNeedsAPDOnTheIdsOwnContextAndABoundId() throws {
        let address = try GuestRDMA.requireRDMACMAddress()
        let channel = try CMEventChannel()
        XCTAssertNotEqual(fcntl(channel.descriptor.rawValue, F_GETFL) & O_NONBLOCK, 0, "the channel's fd is non-blocking")
        XCTAssertNil(try channel.nextEvent(), "a channel with nothing pending answers nil at once")
        let id = try channel.createID()
        let name = try Facility.rdmaDevice.require()
        let own = try XCTUnwrap(try Device.list().first { $0.name == name }).open()
        let ownPD = try own.allocateProtectionDomain()
        let ownCQ = try own.createCompletionQueue(entries: 4)
        XCTAssertNil(try id.context(), "an unbound id has no device")
        XCTAssertThrowsError(try id.createQueuePair(in: ownPD, sendQueue: ownCQ, receiveQueue: ownCQ)) { error in
            XCTAssertEqual((error as? VerbsError)?.op, "rdma_create_qp")
            XCTAssertTrue((error as? VerbsError)?.detail?.contains("bind it or resolve") == true, "\(error)")
        }
        try id.bind(address: address, port: 0)
        let context = try XCTUnwrap(try id.context())
        let foreign = try XCTUnwrap(try Device.list().first { $0.name == context.device.name }).open()
        let foreignPD = try foreign.allocateProtectionDomain()
        let foreignCQ = try foreign.createCompletionQueue(entries: 4)
        XCTAssertThrowsError(try id.createQueuePair(in: foreignPD, sendQueue: foreignCQ, receiveQueue: foreignCQ)) { error in
            XCTAssertEqual((error as? VerbsError)?.op, "rdma_create_qp")
            XCTAssertEqual((error as? VerbsError)?.errno, .invalidArgument)
            XCTAssertTrue((error as? VerbsError)?.detail?.contains("Context.librdmacm") == true, "\(error)")
        }
        let pd = try context.allocateProtectionDomain()
        let cq = try context.createCompletionQueue(entries: 4)
        let qp = try id.createQueuePair(in: pd, sendQueue: cq, receiveQueue: cq)
        XCTAssertEqual(id.pointer?.pointee.qp?.pointee.qp_num, qp.number)
        XCTAssertThrowsError(try id.createQueuePair(in: pd, sendQueue: cq, receiveQueue: cq), "a second QP on one id")
        // The PD's ordered close takes the rdma_cm QP too, and librdmacm forgets it.
        try pd.close()
        XCTAssertTrue(qp.isDestroyed)
        XCTAssertNil(id.pointer?.pointee.qp, "id->qp still points at a destroyed QP")
        XCTAssertNil(id.queuePair)
        XCTAssertThrowsError(try CMID.socketAddress("192.0.2.300", port: 1, for: "rdma_bind_addr")) { error in
            XCTAssertEqual((error as? VerbsError)?.errno, .invalidArgument)
        }
        XCTAssertNoThrow(try CMID.socketAddress("fd00:77::1", port: 1, for: "rdma_bind_addr"))
    }

    private func poll(_ cq: CompletionQueue) throws -> WorkCompletion {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let completion = try cq.poll(max: 1).first { return completion }
            usleep(1000)
        }
        throw TestFailure("no completion within 20 s")
    }
}
