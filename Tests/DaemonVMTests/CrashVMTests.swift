import Foundation
import LinuxFile
import MRLeaseClient
import SystemPackage
import TestSupport
import XCTest

/// `kill -9` of mrleased while `mrlease register` clients hold regions, and while a revocation
/// is in flight: the daemon's leases stay on the clients' open files until the clients release
/// them; once they have noticed, no lease is left, a truncate is immediate, and a daemon
/// restarted on the same socket registers again. Every daemon here has `layout-policy = revoke`:
/// under `follow` an ODP region's file holds no lease for a dead daemon to leave behind.
final class CrashVMTests: XCTestCase {
    typealias Registration = CLIVMTests.Registration

    func file(size: Int = 1 << 20) throws -> (ScratchDirectory, String) {
        let scratch = try ScratchDirectory(in: try Facility.writable(.ext4).require())
        return (scratch, try scratch.file("data", size: size))
    }

    /// The `/proc/locks` lines of leases on `path`'s inode.
    func leases(on path: String) throws -> [String] {
        let inode = try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? UInt64 ?? 0
        return try readProcFile("/proc/locks").split(separator: "\n").map(String.init)
            .filter { $0.contains("LEASE") && $0.contains(":\(inode) ") }
    }

    /// `truncate(2)` by path, as a writer that waits for a lease break does; its duration.
    func timedTruncate(_ path: String, to size: Int) -> Duration {
        let start = ContinuousClock.now
        XCTAssertEqual(truncate(path, off_t(size)), 0, "truncate \(path): errno \(errno)")
        return ContinuousClock.now - start
    }

    /// The client's `daemon-lost` line: each lease released, or what happened instead.
    func assertReleasedAfterTheDaemonDied(_ client: Registration, file: StaticString = #filePath, line: UInt = #line) {
        guard let lost = client.waitFor(["daemon-lost"]) else {
            return XCTFail("the client did not report the daemon lost: \(client.printed.text)", file: file, line: line)
        }
        let outcomes = (lost["leases"] as? [[String: Any]] ?? []).map { $0["outcome"] as? String ?? "" }
        XCTAssertFalse(outcomes.isEmpty, "\(lost)", file: file, line: line)
        XCTAssertEqual(Set(outcomes), ["released"], "\(lost)", file: file, line: line)
        XCTAssertEqual(lost["shutdownAnnounced"] as? Bool, false, file: file, line: line)
        client.process.waitUntilExit()
        XCTAssertEqual(client.process.terminationStatus, 1, file: file, line: line)
    }

    /// An application that outlives the daemon and keeps its fds: the lease stays on a file
    /// whose client does nothing (the defect), and goes at once on the file of an
    /// `MRLeaseClient`, which then registers again with a daemon restarted on the same socket.
    func testKill9LeavesTheLeaseOnALiveClientsFileUntilMRLeaseClientReleasesIt() throws {
        let device = try Facility.rdmaDevice.require()
        let daemon = try RunningDaemon(device: device, layoutPolicy: "revoke")
        let (scratchA, pathA) = try file()
        let (scratchB, pathB) = try file()
        defer { _ = (scratchA, scratchB) }
        let client = try MRLeaseClient.connect(path: daemon.socketPath)
        let region = try client.register(path: pathA, offset: 0, length: 65536, access: [.read, .write]).region
        // A client that keeps its fd and releases nothing: the protocol before this rule.
        let bare = try RawClient(path: daemon.socketPath)
        let bareFD = try FileDescriptor.open(FilePath(pathB), .readWrite)
        defer { try? bareFD.close() }
        _ = try bare.register(bareFD, offset: 0, length: 65536)
        let killed = daemon.pid

        XCTAssertEqual(daemon.stop(SIGKILL, within: 5), SIGKILL)
        XCTAssertThrowsError(try client.nextEvent(timeout: .seconds(10))) { error in
            guard case .disconnected(_, let end) = error as? ClientError else { return XCTFail("\(error)") }
            XCTAssertEqual(end.leases, [LeaseCleanup(regions: [region], outcome: .released(holder: killed))])
        }
        XCTAssertEqual(try leases(on: pathA), [])
        let took = timedTruncate(pathA, to: 65536)
        print("truncate after kill -9 of mrleased, MRLeaseClient having released its lease: \(took)")
        XCTAssertLessThan(took, .seconds(1))

        // The bare client has seen the end too; its file still carries the dead daemon's lease.
        try bare.waitForEvents(seconds: 2) { _ in false }
        let orphaned = try leases(on: pathB)
        XCTAssertEqual(orphaned.count, 1)
        XCTAssertTrue(orphaned.first?.contains(" \(killed) ") ?? false, "\(orphaned)")
        XCTAssertThrowsError(try FileDescriptor.open(FilePath(pathB), .writeOnly, options: [.nonBlocking]).close()) {
            XCTAssertEqual($0 as? Errno, .wouldBlock, "a writer would wait lease-break-time")
        }
        try FileLease(fd: bareFD).release()
        XCTAssertEqual(try leases(on: pathB), [])

        let successor = try RunningDaemon(device: device, layoutPolicy: "revoke", socketPath: daemon.socketPath)
        let again = try MRLeaseClient.connect(path: successor.socketPath)
        // The open file the old connection kept: a new open of the path would be another open
        // file description, against which a write lease is refused (file-busy).
        let kept = try XCTUnwrap(client.file(region: region))
        _ = try again.register(fd: kept, offset: 0, length: 65536, access: [.read, .write])
        XCTAssertEqual(try successor.holdings().leases, 1)
        again.close()
        client.close()
        XCTAssertEqual(successor.stop(), 0, successor.log)
    }

    func testKill9WhileClientsHoldRegionsLeavesNoLeaseOnceTheyNoticeAndARestartedDaemonRegistersAgain() throws {
        let device = try Facility.rdmaDevice.require()
        let daemon = try RunningDaemon(device: device, layoutPolicy: "revoke")
        let (scratchA, pathA) = try file()
        let (scratchB, pathB) = try file()
        defer { _ = (scratchA, scratchB) }
        let a = try Registration(socket: daemon.socketPath, path: pathA, offset: 0, length: 65536, count: 2)
        let b = try Registration(socket: daemon.socketPath, path: pathB, offset: 0, length: 65536)
        XCTAssertEqual(a.events("registered", count: 2).count, 2, a.printed.text)
        XCTAssertNotNil(b.waitFor(["registered"]), b.printed.text)
        XCTAssertEqual(try daemon.holdings().leases, 2)
        XCTAssertEqual(try daemon.holdings().mrs.count, 3)
        let killed = RDMAResources.threads(of: daemon.pid)

        XCTAssertEqual(daemon.stop(SIGKILL, within: 5), SIGKILL)
        assertReleasedAfterTheDaemonDied(a)
        assertReleasedAfterTheDaemonDied(b)
        XCTAssertEqual(try leases(on: pathA), [])
        XCTAssertEqual(try leases(on: pathB), [])
        XCTAssertEqual(try RDMAResources.memoryRegionKeys(threads: killed), [], "MRs of the killed daemon")
        let took = timedTruncate(pathA, to: 65536)
        print("truncate after kill -9 of mrleased, its clients having released its leases: \(took)")
        XCTAssertLessThan(took, .seconds(1))

        let successor = try RunningDaemon(device: device, layoutPolicy: "revoke", socketPath: daemon.socketPath)
        let again = try Registration(socket: successor.socketPath, path: pathB, offset: 0, length: 65536)
        XCTAssertNotNil(again.waitFor(["registered"]), again.printed.text)
        XCTAssertEqual(try successor.holdings().leases, 1)
        XCTAssertEqual(again.interrupt(), 0)
        XCTAssertEqual(successor.stop(), 0, successor.log)
    }

    func testKill9WhileARevocationIsInFlightLetsTheWaitingTruncateThroughOnceTheClientNotices() throws {
        let device = try Facility.rdmaDevice.require()
        // A deadline far beyond the test: only the kill can end this revocation.
        let daemon = try RunningDaemon(device: device, layoutPolicy: "revoke", environment: ["MRLEASED_QUIESCE_MS": "60000"])
        let (scratch, path) = try file()
        defer { _ = scratch }
        let client = try Registration(socket: daemon.socketPath, path: path, offset: 0, length: 65536, options: ["--no-ack"])
        XCTAssertNotNil(client.waitFor(["registered"]), client.printed.text)

        // A writer that waits for the break: truncate(2) blocks until the lease is gone.
        let breaker = try Subprocess.start("/usr/bin/perl", ["-e", "truncate($ARGV[0], 4096) or die \"truncate: $!\"", path])
        XCTAssertNotNil(client.waitFor(["revoking"]), client.printed.text)
        usleep(200_000)
        XCTAssertTrue(breaker.isRunning, "the truncate waits while the client has not acknowledged")

        XCTAssertEqual(daemon.stop(SIGKILL, within: 5), SIGKILL)
        let killedAt = ContinuousClock.now
        assertReleasedAfterTheDaemonDied(client)
        breaker.waitUntilExit()
        let waited = ContinuousClock.now - killedAt
        print("truncate waiting in a break went through \(waited) after kill -9 of mrleased")
        XCTAssertEqual(breaker.terminationStatus, 0)
        XCTAssertLessThan(waited, .seconds(1))
        XCTAssertEqual(try leases(on: path), [])
        XCTAssertLessThan(timedTruncate(path, to: 8192), .seconds(1))
    }

    func testTheProtocolDocumentsPythonClientReleasesTheLeaseAKilledDaemonLeft() throws {
        let daemon = try RunningDaemon(device: try Facility.rdmaDevice.require(), layoutPolicy: "revoke")
        let (scratch, path) = try file(size: 8 << 20)
        defer { _ = scratch }
        let (child, lines) = try DaemonVMTests.startDocumentedPythonClient(socket: daemon.socketPath, file: path)
        defer { if child.isRunning { kill(child.processIdentifier, SIGKILL); child.waitUntilExit() } }
        try lines.wait(seconds: 20) { $0.contains { $0.hasPrefix("regions [") } }
        XCTAssertEqual(try leases(on: path).count, 1)
        let killed = daemon.pid

        XCTAssertEqual(daemon.stop(SIGKILL, within: 5), SIGKILL)
        try lines.wait(seconds: 10) { $0.contains { $0.hasPrefix("released the lease") } }
        XCTAssertTrue(lines.text.contains("released the lease mrleased (pid \(killed), exited) left on fd "), lines.text)
        child.waitUntilExit()
        XCTAssertEqual(try leases(on: path), [])
        XCTAssertLessThan(timedTruncate(path, to: 4 << 20), .seconds(1))
    }

    /// Starts a daemon on a socket unit's listener from another thread, after a delay: what
    /// systemd does when a connection arrives at a unit whose service died.
    final class DelayedStart: @unchecked Sendable {
        private let delay: Double
        private let start: () throws -> RunningDaemon
        private var daemon: RunningDaemon?
        private var error: Error?
        private let done = DispatchSemaphore(value: 0)

        init(after delay: Double, _ start: @escaping () throws -> RunningDaemon) {
            self.delay = delay
            self.start = start
            Thread.detachNewThread { self.run() }
        }

        private func run() {
            Thread.sleep(forTimeInterval: delay)
            do { daemon = try start() } catch { self.error = error }
            done.signal()
        }

        /// The daemon, once started (the semaphore orders the thread's writes before this read).
        func wait() throws -> RunningDaemon {
            done.wait()
            if let error { throw error }
            return daemon!
        }
    }

    func testAfterKill9AClientReconnectsThroughTheSocketUnitAndRegistersItsKeptRangesAgain() throws {
        let device = try Facility.rdmaDevice.require()
        let unit = try ScratchDirectory(name: "mrleased-unit")
        let socketPath = unit.path + "/unit.sock"
        // The socket unit's listener: it outlives every daemon started on it.
        let listener = try UnixSocket.listen(path: socketPath)
        defer { try? listener.close() }
        let first = try RunningDaemon(activatedBy: listener, socketPath: socketPath, arguments: ["--device", device, "--layout-policy", "revoke"])
        let (scratchA, pathA) = try file()
        let (scratchB, pathB) = try file()
        defer { _ = (scratchA, scratchB) }
        let client = try MRLeaseClient.connect(path: socketPath)
        let batch = try client.registerBatch(path: pathA, ranges: [
            .init(offset: 0, length: 65536, access: [.read, .write], tag: "a0"),
            .init(offset: 65536, length: 65536, access: [.read, .write], tag: "a1")])
        // O_RDWR though the region is read-only: 6.1 pins even read-only MRs for writing.
        let fdB = try FileDescriptor.open(FilePath(pathB), .readWrite)
        let single = try client.register(fd: fdB, offset: 0, length: 8192, access: [.read])
        try fdB.close()  // the client keeps its own duplicate
        let before = batch + [single]

        XCTAssertEqual(first.stop(SIGKILL, within: 5), SIGKILL)
        let killedAt = ContinuousClock.now
        XCTAssertThrowsError(try client.nextEvent(timeout: .seconds(10))) { error in
            guard case .disconnected(_, let end) = error as? ClientError else { return XCTFail("\(error)") }
            XCTAssertEqual(end.released.count, 2, "\(end)")
        }
        // The client reconnects at once; the unit's listener queues it until the next daemon runs.
        let successor = DelayedStart(after: 1) {
            try RunningDaemon(activatedBy: listener, socketPath: socketPath, arguments: ["--device", device, "--layout-policy", "revoke"])
        }
        let results = try client.reconnect()
        let daemon = try successor.wait()
        print("registered again \(ContinuousClock.now - killedAt) after kill -9 (the next daemon started 1 s after it)")
        XCTAssertEqual(results.map(\.previousRegion), before.map(\.region))
        let after = results.compactMap { try? $0.outcome.get() }
        XCTAssertEqual(after.count, 3, "\(results)")
        // A new daemon numbers regions from 1 again: the ids may be the old ones.
        for (old, new) in zip(before, after) {
            XCTAssertEqual(new.length, old.length)
            XCTAssertNotNil(client.file(region: new.region))
        }
        XCTAssertEqual(Set(try client.list().map(\.region)), Set(after.map(\.region)))
        XCTAssertEqual(try daemon.holdings().leases, 2)
        XCTAssertEqual(try daemon.holdings().mrs, Set(after.map(\.rkey)))

        // The new regions are guarded: a truncate breaks the new lease and the client hears it.
        let breaker = try Subprocess.start("/usr/bin/perl", ["-e", "truncate($ARGV[0], 65536) or die", pathA])
        var revoked: Set<UInt64> = []
        while revoked.count < 2, let event = try client.nextEvent(timeout: .seconds(10)) {
            if case .revoking(let r) = event { revoked.insert(r.region); try client.ack(region: r.region) }
        }
        XCTAssertEqual(revoked, Set(after.prefix(2).map(\.region)))
        breaker.waitUntilExit()
        client.close()
        XCTAssertEqual(daemon.stop(), 0, daemon.log)
    }
}
