import Foundation
import LinuxFile
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

/// mrleased as a service on the guest's rxe0: several clients over the socket, real breaks,
/// and the acceptance load (100 clients x 10 regions, kill -9) with leak checks the kernel makes.
final class DaemonVMTests: XCTestCase {
    func startDaemon() throws -> RunningDaemon {
        _ = try Facility.rdmaDevice.require()
        // `revoke`: most of this suite counts the leases and revocations of the lease protocol;
        // the default (`follow`) has its own tests below and in FollowVMTests.
        return try RunningDaemon(device: try Facility.rdmaDevice.require(), layoutPolicy: "revoke")
    }

    func file(on facility: Facility, size: Int = 1 << 20) throws -> (ScratchDirectory, String, FileDescriptor) {
        let scratch = try ScratchDirectory(in: try facility.require())
        let path = try scratch.file("data", size: size)
        return (scratch, path, try FileDescriptor.open(FilePath(path), .readWrite))
    }

    func testSeveralClientsAndABreakThatOnlyItsOwnerSees() throws {
        let daemon = try startDaemon()
        let (scratchA, pathA, fdA) = try file(on: .writable(.ext4))
        let (scratchB, _, fdB) = try file(on: .writable(.xfs))
        defer { try? fdA.close(); try? fdB.close(); _ = (scratchA, scratchB) }
        let owner = try RawClient(path: daemon.socketPath)
        let bystander = try RawClient(path: daemon.socketPath)
        let a1 = try owner.register(fdA, offset: 0, length: 8192)
        let a2 = try owner.register(fdA, offset: 512 << 10, length: 4096)
        let b1 = try bystander.register(fdB, offset: 0, length: 8192)
        // Our own fds are the clients' fds: the daemon's duplicates share them, no break.

        // coreutils truncate opens O_NONBLOCK: it fails once with EAGAIN, starting the break,
        // and gets through on a retry once the daemon has unlocked.
        let tool = try Subprocess.run("/bin/sh", ["-c", "for i in $(seq 200); do truncate -s 65536 '\(pathA)' 2>/dev/null && exit 0; sleep 0.02; done; exit 1"])
        XCTAssertEqual(tool.status, 0)
        // The owner acknowledges as soon as it sees revoking (its RDMA traffic is stopped).
        try owner.waitForEvents { $0.contains { if case .revoking = $0 { return true }; return false } }
        for case .revoking(let revoking) in owner.events { _ = try owner.request(.ack(region: revoking.region)) }
        try owner.waitForEvents { events in
            events.contains { if case .restored(let r) = $0 { return r.region == a1.region }; return false }
                && events.contains { if case .lost(let l) = $0 { return l.region == a2.region }; return false }
        }
        let names = owner.events.map(\.name.rawValue)
        XCTAssertEqual(Array(names.prefix(4)), ["revoking", "revoking", "revoked", "revoked"], "\(owner.events)")
        guard case .restored(let restored)? = owner.events.first(where: { if case .restored = $0 { return true }; return false }) else {
            return XCTFail("no restored event: \(owner.events)")
        }
        XCTAssertNotEqual(restored.rkey, a1.rkey)
        XCTAssertTrue(owner.events.contains { event in
            guard case .lost(let lost) = event else { return false }
            return lost.region == a2.region && lost.reason == .rangeTruncated
                && lost.message == "file is now 65536 bytes; the region ends at \((512 << 10) + 4096)"
        }, "\(owner.events)")

        // The bystander's region on another file saw nothing and is still registered.
        _ = try bystander.request(.stats)
        XCTAssertEqual(bystander.events, [])
        guard case .success(.list(let list)) = try bystander.request(.list(after: nil)) else { return XCTFail("list failed") }
        XCTAssertEqual(list.regions.map(\.region), [b1.region])
        XCTAssertEqual(list.regions.first?.state, .registered)
        let mrs = try daemon.holdings().mrs
        XCTAssertTrue(mrs.contains(restored.rkey) && mrs.contains(b1.rkey) && !mrs.contains(a1.rkey), "\(mrs)")
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// The same break under the default policy: an ODP region follows the file (no lease, no
    /// revocation, its keys stay) and only the region past the new end is lost; a pinned one
    /// (kernels without ODP) still revokes, and says so.
    func testUnderTheDefaultPolicyATruncateCostsOnlyTheRegionPastTheNewEnd() throws {
        let daemon = try RunningDaemon(device: try Facility.rdmaDevice.require())
        let (scratchA, pathA, fdA) = try file(on: .writable(.ext4))
        let (scratchB, _, fdB) = try file(on: .writable(.xfs))
        defer { try? fdA.close(); try? fdB.close(); _ = (scratchA, scratchB) }
        let owner = try RawClient(path: daemon.socketPath)
        let bystander = try RawClient(path: daemon.socketPath)
        guard case .success(.hello(let hello)) = try owner.request(.hello(.init())) else { return XCTFail("hello failed") }
        XCTAssertEqual(hello.layoutPolicy, .follow)
        let a1 = try owner.register(fdA, offset: 0, length: 8192)
        let a2 = try owner.register(fdA, offset: 512 << 10, length: 4096)
        let b1 = try bystander.register(fdB, offset: 0, length: 8192)
        XCTAssertEqual(a1.layoutPolicy, a1.strategy == .odp ? .follow : .revoke, "\(a1)")
        guard a1.layoutPolicy == .follow else {
            // No ODP here: the revocation is testSeveralClientsAndABreakThatOnlyItsOwnerSees's.
            XCTAssertEqual(try daemon.holdings().leases, 2)
            return XCTAssertEqual(daemon.stop(), 0)
        }
        XCTAssertEqual(try daemon.holdings().leases, 0, "a file whose regions all follow holds no lease")

        let start = ContinuousClock.now
        XCTAssertEqual(truncate(pathA, 65536), 0, "truncate: errno \(errno); nothing to wait for under follow")
        XCTAssertLessThan(ContinuousClock.now - start, .milliseconds(500))
        try owner.waitForEvents { $0.contains { if case .lost(let l) = $0 { return l.region == a2.region }; return false } }
        usleep(500_000)  // a revocation that should not come has time to show
        _ = try owner.request(.stats)
        XCTAssertEqual(owner.events.map(\.name.rawValue).filter { $0 != "layout" }, ["lost"], "\(owner.events)")
        XCTAssertTrue(owner.events.contains { event in
            guard case .lost(let lost) = event else { return false }
            return lost.region == a2.region && lost.reason == .rangeTruncated
        }, "\(owner.events)")
        _ = try bystander.request(.stats)
        XCTAssertEqual(bystander.events, [])
        guard case .success(.list(let list)) = try owner.request(.list(after: nil)) else { return XCTFail("list failed") }
        XCTAssertEqual(list.regions.map(\.region), [a1.region])
        XCTAssertEqual(list.regions.first?.rkey, a1.rkey, "the region that follows keeps its keys")
        let mrs = try daemon.holdings().mrs
        XCTAssertTrue(mrs.contains(a1.rkey) && mrs.contains(b1.rkey) && !mrs.contains(a2.rkey), "\(mrs)")
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testHelloReportsWhatTheStartUpODPIntegritySelfTestFound() throws {
        let daemon = try startDaemon()
        let client = try RawClient(path: daemon.socketPath)
        guard case .success(.hello(let hello)) = try client.request(.hello(.init())) else { return XCTFail("hello failed") }
        let device = try XCTUnwrap(hello.devices.first, "hello lists no device")
        if device.odpSupported && Set(device.odpRC).isSuperset(of: ["WRITE", "READ"]) {
            // rxe's ODP (7.x) corrupts unaligned transfers: docs/kernel-matrix.md.
            XCTAssertEqual(device.odpIntegrity, device.name.hasPrefix("rxe") ? .corruptsUnaligned : .intact, device.odpIntegrityDetail ?? "")
            XCTAssertEqual(device.transferAlignment, device.name.hasPrefix("rxe") ? 4096 : 1)
            if device.name.hasPrefix("rxe") { XCTAssertTrue(device.odpIntegrityDetail?.contains("RDMA WRITE") == true, "\(device)") }
        } else {
            XCTAssertEqual(device.odpIntegrity, .notApplicable, device.odpIntegrityDetail ?? "")
            XCTAssertEqual(device.transferAlignment, 1)
        }
        // The self-test's QPs, MRs and PD are gone by the time the daemon serves.
        let holdings = try daemon.settledHoldings()
        XCTAssertEqual(holdings.mrs, [], "MRs the daemon holds with no client registered")
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testRegisterBatchRegistersSixtyFourRangesInOneRequestAndIsAllOrNone() throws {
        let daemon = try startDaemon()
        let (scratch, _, fd) = try file(on: .writable(.ext4))
        defer { try? fd.close(); _ = scratch }
        let client = try RawClient(path: daemon.socketPath)
        let baseline = try daemon.settledHoldings()
        let ranges = (0..<Codec.maxBatchRanges).map {
            Request.Register(offset: UInt64($0) * 8192, length: 4096, access: [.read, .write], tag: "seg-\($0)")
        }
        guard case .success(.registerBatch(let made)) = try client.request(.registerBatch(ranges), fds: [fd]) else {
            return XCTFail("register-batch of \(ranges.count) ranges failed")
        }
        XCTAssertEqual(made.count, ranges.count)
        XCTAssertEqual(Set(made.map(\.region)).count, ranges.count, "one region per range")
        XCTAssertEqual(try daemon.holdings().mrs, Set(made.map(\.rkey)).union(baseline.mrs))
        XCTAssertEqual(try daemon.holdings().leases, 1)
        guard case .success(.list(let list)) = try client.request(.list(after: nil, limit: UInt64(ranges.count))) else { return XCTFail("list failed") }
        XCTAssertEqual(list.regions.map(\.tag), ranges.map(\.tag), "in the request's order")
        XCTAssertEqual(list.regions.map(\.offset), ranges.map(\.offset))
        for registration in made { _ = try client.request(.deregister(region: registration.region)) }
        XCTAssertEqual(try daemon.holdings().mrs, baseline.mrs)

        // A second range the kernel refuses (pinned writable page cache on 7.x, ODP on 6.1's
        // rxe): the first one, registered already, is undone, and the error names range 1.
        guard case .success(.hello(let hello)) = try client.request(.hello(.init())) else { return XCTFail("hello failed") }
        let refused: StrategyPreference = hello.strategies.contains(.odp) ? .pinned : .odp
        let batch: [Request.Register] = [.init(offset: 0, length: 4096, access: [.read, .write]),
                                         .init(offset: 4096, length: 4096, access: [.read, .write], strategy: refused)]
        guard case .failure(let error) = try client.request(.registerBatch(batch), fds: [fd]) else {
            return XCTFail("a batch with a \(refused.rawValue) range the kernel refuses succeeded")
        }
        XCTAssertEqual(error.code, .strategyUnavailable, "\(error)")
        XCTAssertEqual(error.index, 1, "\(error)")
        let after = try daemon.settledHoldings()
        XCTAssertEqual(after.mrs, baseline.mrs, "the batch's first region is gone")
        XCTAssertEqual(after.leases, 0)
        guard case .success(.list(let empty)) = try client.request(.list(after: nil)) else { return XCTFail("list failed") }
        XCTAssertEqual(empty.regions, [])
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testPerUIDQuotasCountEveryConnectionAndFreeOnDeregisterAndDisconnect() throws {
        _ = try Facility.rdmaDevice.require()
        let daemon = try RunningDaemon(device: try Facility.rdmaDevice.require(),
                                         environment: ["MRLEASED_MAX_REGIONS_PER_UID": "3", "MRLEASED_MAX_BYTES_PER_UID": "20480"])
        let (scratch, _, fd) = try file(on: .writable(.ext4))
        defer { try? fd.close(); _ = scratch }
        let first = try RawClient(path: daemon.socketPath)
        let second = try RawClient(path: daemon.socketPath)
        _ = try first.register(fd, offset: 0, length: 4096)
        _ = try first.register(fd, offset: 4096, length: 4096)
        let third = try second.register(fd, offset: 8192, length: 4096)
        // The uid's fourth region, on either connection, is over max-regions-per-uid.
        for client in [first, second] {
            guard case .failure(let error) = try client.request(.register(.init(offset: 12288, length: 4096, access: [.read, .write])), fds: [fd]) else {
                return XCTFail("a fourth region of the uid was registered")
            }
            XCTAssertEqual(error.code, .quotaExceeded, "\(error)")
            XCTAssertTrue(error.message.contains("holds 3 regions"), "\(error)")
        }
        // Deregistering frees a place; bytes count too (20480 = five pages; 3 held + 8192 > it).
        _ = try second.request(.deregister(region: third.region))
        guard case .failure(let bytes) = try second.request(.register(.init(offset: 8192, length: 16384, access: [.read, .write])), fds: [fd]) else {
            return XCTFail("a region over max-bytes-per-uid was registered")
        }
        XCTAssertEqual(bytes.code, .quotaExceeded)
        XCTAssertTrue(bytes.message.contains("would hold 24576 bytes"), "\(bytes)")
        // A batch over the region limit names the range that would cross it, and registers none.
        let batch: [Request.Register] = [.init(offset: 8192, length: 4096, access: [.read, .write]),
                                         .init(offset: 12288, length: 4096, access: [.read, .write])]
        guard case .failure(let over) = try second.request(.registerBatch(batch), fds: [fd]) else {
            return XCTFail("a batch over max-regions-per-uid was registered")
        }
        XCTAssertEqual(over.code, .quotaExceeded)
        XCTAssertEqual(over.index, 1)
        // A connection that goes takes its regions out of the count.
        first.close()
        let deadline = Date().addingTimeInterval(20)
        var made: Result<ReplyResult, ProtocolError> = .failure(ProtocolError(.internal, "not tried"))
        while Date() < deadline {
            made = try second.request(.registerBatch(batch), fds: [fd])
            if case .success = made { break }
            usleep(50_000)
        }
        guard case .success(.registerBatch(let regions)) = made else { return XCTFail("after the first client left: \(made)") }
        XCTAssertEqual(regions.count, 2)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// docs/protocol.md §7's Python client, as printed there: a client written from the document
    /// alone registers, batch-registers, acknowledges and sees the outcome of a truncate.
    /// Under `layout-policy = revoke` and under the default (`follow`, which pinned regions,
    /// on kernels without ODP, still answer with a revocation).
    func testTheProtocolDocumentsPythonClientFollowsARevocation() throws {
        for policy in ["revoke", nil] {
            let daemon = try RunningDaemon(device: try Facility.rdmaDevice.require(), layoutPolicy: policy)
            let (scratch, path, fd) = try file(on: .writable(.ext4), size: 8 << 20)
            try fd.close()
            defer { _ = scratch }
            let (child, lines) = try Self.startDocumentedPythonClient(socket: daemon.socketPath, file: path)
            defer { if child.isRunning { kill(child.processIdentifier, SIGKILL); child.waitUntilExit() } }

            try lines.wait(seconds: 20) { $0.contains { $0.hasPrefix("regions [") } }
            XCTAssertTrue(lines.text.contains("'strategies'"), lines.text)
            XCTAssertTrue(lines.text.contains("region 1 rkey "), lines.text)
            XCTAssertEqual(try daemon.holdings().mrs.count, 3)
            let follows = lines.text.contains("layout policy follow")
            XCTAssertTrue(follows || lines.text.contains("layout policy revoke"), lines.text)
            if policy == "revoke" { XCTAssertFalse(follows, lines.text) }
            // coreutils truncate opens O_NONBLOCK: EAGAIN once while the break starts, then through.
            let tool = try Subprocess.run("/bin/sh", ["-c", "for i in $(seq 200); do truncate -s 4M '\(path)' 2>/dev/null && exit 0; sleep 0.02; done; exit 1"])
            XCTAssertEqual(tool.status, 0)
            try lines.wait(seconds: 20) { lines in
                lines.filter { $0.contains("'event': 'restored'") }.count == (follows ? 0 : 2) && lines.contains { $0.contains("'event': 'lost'") }
            }
            if follows { usleep(500_000) }  // a revocation that should not come has time to show
            let text = lines.text
            XCTAssertEqual(text.components(separatedBy: "'event': 'revoking'").count - 1, follows ? 0 : 3, text)
            XCTAssertEqual(text.components(separatedBy: "'event': 'restored'").count - 1, follows ? 0 : 2, text)
            XCTAssertTrue(text.contains("'event': 'lost', 'region': 3, 'reason': 'range-truncated'"), text)
            XCTAssertFalse(text.contains("'error'"), text)
            XCTAssertEqual(daemon.stop(), 0)
        }
    }

    /// The Python client of docs/protocol.md §7, as written there, on `socket` and `file`; its
    /// stdout read line by line.
    static func startDocumentedPythonClient(socket: String, file: String) throws -> (Process, LineCollector) {
        let document = try String(contentsOfFile: Subprocess.repositoryRoot + "/docs/protocol.md", encoding: .utf8)
        guard let start = document.range(of: "```python\n"),
              let end = document.range(of: "\n```", range: start.upperBound..<document.endIndex) else {
            throw TestFailure("no python block in docs/protocol.md")
        }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        child.arguments = ["-c", String(document[start.upperBound..<end.lowerBound]), socket, file]
        let output = Pipe()
        child.standardOutput = output
        child.standardError = FileHandle.nullDevice
        let lines = LineCollector(output.fileHandleForReading)
        try child.run()
        return (child, lines)
    }

    func testHundredClientsTimesTenRegionsLeaveNothingBehind() throws {
        // All 100 are root's: past the default max-connections-per-uid (64).
        let daemon = try RunningDaemon(device: try Facility.rdmaDevice.require(), layoutPolicy: "revoke",
                                       environment: ["MRLEASED_MAX_CONNECTIONS_PER_UID": "100"])
        let scratch = try ScratchDirectory(in: try Facility.tmpfs.require())
        let baseline = try daemon.settledHoldings()
        let start = Date()
        var clients: [RawClient] = []
        var fds: [FileDescriptor] = []
        for index in 0..<100 {
            let path = try scratch.file("f\(index)", size: 10 * 4096)
            let fd = try FileDescriptor.open(FilePath(path), .readWrite)
            fds.append(fd)
            let client = try RawClient(path: daemon.socketPath)
            for region in 0..<10 { _ = try client.register(fd, offset: UInt64(region) * 4096, length: 4096) }
            clients.append(client)
        }
        let registered = Date().timeIntervalSince(start)
        let loaded = try daemon.holdings()
        XCTAssertEqual(loaded.mrs.count, 1000)
        XCTAssertEqual(loaded.leases, 100)
        guard case .success(.stats(let stats)) = try clients[0].request(.stats) else { return XCTFail("stats failed") }
        XCTAssertEqual(stats.regions, 1000)
        XCTAssertEqual(stats.clients, 100)

        for client in clients { client.close() }
        for fd in fds { try fd.close() }
        // The daemon notices each close on its next loop turn.
        let deadline = Date().addingTimeInterval(20)
        var after = try daemon.holdings()
        while (after.fds != baseline.fds || !after.mrs.isEmpty || after.leases != 0) && Date() < deadline {
            usleep(50_000)
            after = try daemon.holdings()
        }
        print("[measure] 100 clients x 10 regions registered in \(String(format: "%.2f", registered)) s; released to baseline in \(String(format: "%.2f", Date().timeIntervalSince(start) - registered)) s")
        XCTAssertEqual(after.fds, baseline.fds, "daemon fds")
        XCTAssertEqual(after.mrs, [], "daemon MRs")
        XCTAssertEqual(after.leases, 0, "daemon leases")
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testClientKilledWithSIGKILLLeavesNothingBehind() throws {
        let daemon = try startDaemon()
        let (scratch, path, fd) = try file(on: .writable(.ext4))
        try fd.close()
        defer { _ = scratch }
        let baseline = try daemon.settledHoldings()
        // A client in another process, registering with SCM_RIGHTS as a C or Python client would.
        let script = """
        import json, os, socket, sys, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(sys.argv[1])
        fd = os.open(sys.argv[2], os.O_RDWR)
        for i in range(4):
            req = {"v": 1, "type": "register", "id": i + 1, "offset": i * 4096, "length": 4096, "access": ["read", "write"]}
            socket.send_fds(s, [json.dumps(req).encode()], [fd])
            reply = json.loads(s.recv(65536))
            assert "result" in reply, reply
        print("registered", flush=True)
        time.sleep(600)
        """
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        child.arguments = ["-c", script, daemon.socketPath, path]
        let out = Pipe()
        child.standardOutput = out
        try child.run()
        let line = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        XCTAssertTrue(line.contains("registered"), line)
        XCTAssertEqual(try daemon.holdings().mrs.count, 4)
        XCTAssertEqual(try daemon.holdings().leases, 1)
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()

        let deadline = Date().addingTimeInterval(20)
        var after = try daemon.holdings()
        while (after.fds != baseline.fds || !after.mrs.isEmpty || after.leases != 0) && Date() < deadline {
            usleep(50_000)
            after = try daemon.holdings()
        }
        XCTAssertEqual(after.fds, baseline.fds)
        XCTAssertEqual(after.mrs, [])
        XCTAssertEqual(after.leases, 0)
        // And the file is free again: a write lease of our own is granted.
        let again = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? again.close() }
        let signals = try SignalFD(signals: [FileLease.breakSignal, SIGIO])
        defer { try? signals.close() }
        XCTAssertNoThrow(try FileLease(fd: again).acquire(.write))
        try? FileLease(fd: again).release()
        XCTAssertEqual(daemon.stop(), 0)
    }
}
