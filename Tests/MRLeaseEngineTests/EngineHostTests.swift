import CLinux
import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import Verbs
import XCTest

@testable import MRLeaseEngine

/// A registrar double: no RDMA here, so it hands out fake keys and records, at each
/// deregistration, whether the file's lease and the region's mapping were still in place.
/// It checks ordering and error paths; it never stands for RDMA working (the VM tests do).
final class RecordingRegistrar: Registrar {
    final class FakeMR: RegisteredMemory {
        let lkey: UInt32, rkey: UInt32, address: UInt64
        let onDeregister: (FakeMR) -> Void
        init(key: UInt32, address: UInt64, onDeregister: @escaping (FakeMR) -> Void) {
            lkey = key
            rkey = key | 0x8000_0000
            self.address = address
            self.onDeregister = onDeregister
        }
        func deregister() throws(VerbsError) { onDeregister(self) }
    }

    var deviceName: String { "fake0" }
    var odp: ODPCaps
    var nextKey: UInt32 = 1
    var steps: [String] = []
    var inode: UInt64 = 0
    var refuse: [AccessFlags: Errno] = [:]

    init(odp: ODPCaps = ODPCaps(supported: true, implicit: false, rc: [.read, .write, .atomic])) {
        self.odp = odp
    }

    func register(owner: OwnerID, address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) throws(VerbsError) -> any RegisteredMemory {
        if let errno = refuse.first(where: { flags.isSuperset(of: $0.key) })?.value {
            throw VerbsError(op: "ibv_reg_mr", errno: errno)
        }
        defer { nextKey += 1 }
        steps.append("register \(flags.contains(.onDemand) ? "odp" : "pinned")")
        return FakeMR(key: nextKey, address: UInt64(UInt(bitPattern: address))) { [unowned self] mr in
            let leased = Self.leaseHeld(inode: self.inode)
            let mapped = Self.isMapped(address: mr.address)
            self.steps.append("deregister lease=\(leased) mapped=\(mapped)")
        }
    }

    func release(owner: OwnerID) { steps.append("release \(owner)") }

    /// /proc/locks lists leases as "N: LEASE  ACTIVE|BREAKING  WRITE|READ|UNLCK  pid  maj:min:ino …".
    static func leaseHeld(inode: UInt64) -> Bool {
        let locks = (try? readProcFile("/proc/locks")) ?? ""
        return locks.split(separator: "\n").contains { $0.contains("LEASE") && $0.contains(":\(inode) ") }
    }

    static func isMapped(address: UInt64) -> Bool {
        let maps = (try? readProcFile("/proc/self/maps")) ?? ""
        return maps.split(separator: "\n").contains { line in
            let range = line.prefix { $0 != " " }.split(separator: "-").compactMap { UInt64($0, radix: 16) }
            return range.count == 2 && range[0] <= address && address < range[1]
        }
    }
}

final class EngineHostTests: XCTestCase {
    var events: [(OwnerID, EngineEvent)] = []
    let owner = OwnerID(1)

    func makeEngine(_ registrar: RecordingRegistrar = RecordingRegistrar(), timing: FileLifecycle.Timing = .init()) throws -> Engine {
        try Engine(registrar: registrar, configuration: .init(timing: timing)) { [unowned self] owner, event in
            self.events.append((owner, event))
        }
    }

    /// A file on a filesystem with FIEMAP and leases: the guest's ext4 when set, else TMPDIR.
    func scratchFile(size: Int = 1 << 20) throws -> (ScratchDirectory, String, FileDescriptor) {
        let scratch = try ScratchDirectory(in: Facility.ext4.value)
        let path = try scratch.file("data", size: size)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        return (scratch, path, fd)
    }

    func inode(_ fd: FileDescriptor) throws -> UInt64 { try FileFacts.inspect(fd).inode }

    /// Polls the engine until `done` or `seconds` pass.
    func drive(_ engine: Engine, seconds: Double = 10, until done: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        while !done() && Date() < deadline { engine.poll(timeout: .milliseconds(10)) }
    }

    func spawn(_ tool: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    func testTruncateBreaksLeaseAndRevokesBeforeUnlock() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        registrar.inode = try inode(fd)
        let engine = try makeEngine(registrar)
        let kept = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        let cut = try engine.register(owner: owner, fd: fd, offset: 65536, length: 4096, access: [.read, .write])
        XCTAssertEqual(kept.strategy, .odp)
        XCTAssertTrue(RecordingRegistrar.leaseHeld(inode: registrar.inode))

        // truncate(2) itself blocks until the lease goes (coreutils truncate opens O_NONBLOCK).
        let start = Date()
        let child = try spawn("/usr/bin/perl", ["-e", "truncate($ARGV[0], 8192) or die $!", path])
        drive(engine) { self.events.contains { if case .revoking = $0.1 { return true }; return false } }
        // The owner acknowledges both regions: revocation must not wait for the deadline.
        for case (_, .revoking(let id, let reason, _)) in events {
            XCTAssertEqual(reason, "lease-break")
            try engine.acknowledge(id)
        }
        drive(engine) { !child.isRunning }
        let blocked = Date().timeIntervalSince(start)
        drive(engine) { self.events.contains { if case .restored = $0.1 { return true }; return false } }
        child.waitUntilExit()
        XCTAssertEqual(child.terminationStatus, 0)
        XCTAssertLessThan(blocked, 5, "the breaker waited \(blocked) s; lease-break-time is 45 s")
        print("[measure] truncate(2) blocked \(String(format: "%.3f", blocked)) s with acks")

        XCTAssertEqual(registrar.steps.filter { $0.hasPrefix("deregister") }, ["deregister lease=true mapped=true", "deregister lease=true mapped=true"],
                       "MRs must go while the lease and mappings are still in place")
        let kinds = events.map { event -> String in
            switch event.1 {
            case .revoking(let id, _, _): "revoking \(id)"
            case .revoked(let id): "revoked \(id)"
            case .restored(let id, _, _): "restored \(id)"
            case .lost(let id, let reason): "lost \(id) \(reason)"
            }
        }
        XCTAssertEqual(kinds, ["revoking \(kept.id)", "revoking \(cut.id)", "revoked \(kept.id)", "revoked \(cut.id)",
                               "restored \(kept.id)", "lost \(cut.id) range-truncated"])
        guard case .restored(_, let keys, _) = events.first(where: { if case .restored = $0.1 { return true }; return false })?.1 else {
            return XCTFail("no restored event")
        }
        XCTAssertNotEqual(keys.rkey, kept.keys?.rkey, "a restored region gets a new MR")
        XCTAssertEqual(engine.list().map(\.id), [kept.id])
        XCTAssertEqual(engine.list().first?.state, .registered)
        XCTAssertTrue(RecordingRegistrar.leaseHeld(inode: registrar.inode), "the lease is taken again")
        XCTAssertEqual(engine.statistics().breaksHandled, 1)
    }

    func testSilentOwnerCannotHoldTheBreakerPastTheQuiesceDeadline() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine()
        _ = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        let start = Date()
        let child = try spawn("/bin/cat", [path])
        drive(engine) { !child.isRunning }
        let blocked = Date().timeIntervalSince(start)
        XCTAssertFalse(child.isRunning)
        XCTAssertGreaterThanOrEqual(blocked, 0.09, "revoked before the 100 ms quiesce deadline without acks")
        XCTAssertLessThan(blocked, 5)
        print("[measure] cat blocked \(String(format: "%.3f", blocked)) s without acks (quiesce 100 ms)")
        drive(engine) { self.events.contains { if case .restored = $0.1 { return true }; return false } }
        XCTAssertTrue(events.contains { if case .restored(_, _, false) = $0.1 { return true }; return false },
                      "a read changes no layout: \(events)")
    }

    func testPunchedHoleIsReportedAsALayoutChange() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine()
        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 1 << 20, access: [.read, .write])
        let child = try spawn("/usr/bin/fallocate", ["-p", "-o", "4096", "-l", "8192", path])
        drive(engine) { self.events.contains { if case .restored = $0.1 { return true }; return false } }
        child.waitUntilExit()
        XCTAssertEqual(child.terminationStatus, 0)
        XCTAssertTrue(events.contains { if case .restored(region.id, _, true) = $0.1 { return true }; return false },
                      "hole punch must show as layoutChanged: \(events)")
    }

    func testBadRequestsGetPreciseErrorsAndLeakNothing() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine()
        let before = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count

        let readOnly = try FileDescriptor.open(FilePath(path), .readOnly)
        XCTAssertThrowsError(try engine.register(owner: owner, fd: readOnly, offset: 0, length: 4096, access: [.write])) {
            XCTAssertEqual(($0 as? EngineError)?.code, "access-denied")
        }
        // Our second open makes the write lease impossible: file-busy, not a generic failure.
        XCTAssertThrowsError(try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])) {
            XCTAssertEqual(($0 as? EngineError)?.code, "file-busy")
            XCTAssertEqual(($0 as? EngineError)?.errno, .resourceTemporarilyUnavailable)
        }
        try readOnly.close()
        XCTAssertThrowsError(try engine.register(owner: owner, fd: fd, offset: 100, length: 4096, access: [.read])) {
            XCTAssertEqual(($0 as? EngineError)?.code, "bad-alignment")
        }
        XCTAssertThrowsError(try engine.register(owner: owner, fd: fd, offset: 1 << 20, length: 4096, access: [.read])) {
            XCTAssertEqual(($0 as? EngineError)?.code, "range-out-of-file")
        }
        let directory = try FileDescriptor.open(FilePath(scratch.path), .readOnly)
        XCTAssertThrowsError(try engine.register(owner: owner, fd: directory, offset: 0, length: 4096, access: [.read])) {
            XCTAssertEqual(($0 as? EngineError)?.code, "not-regular-file")
        }
        try directory.close()

        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        XCTAssertEqual(engine.statistics().leasesHeld, 1)
        try engine.deregister(region.id)
        XCTAssertThrowsError(try engine.deregister(region.id)) { XCTAssertEqual(($0 as? EngineError)?.code, "unknown-region") }
        XCTAssertEqual(engine.statistics().leasesHeld, 0)
        XCTAssertEqual(engine.statistics().files, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count, before)
    }

    func testRefusedStrategiesFallBackAndThenRefuseWithTheKernelErrno() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        registrar.refuse = [[.onDemand]: .invalidArgument]
        let engine = try makeEngine(registrar)
        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        XCTAssertEqual(region.strategy, .pinned, "ODP refused with EINVAL falls back to pinned")
        registrar.refuse = [[.onDemand]: .invalidArgument, [.remoteWrite]: .badAddress]
        XCTAssertThrowsError(try engine.register(owner: owner, fd: fd, offset: 4096, length: 4096, access: [.read, .write])) { error in
            let engineError = error as? EngineError
            XCTAssertEqual(engineError?.code, "strategy-unavailable")
            XCTAssertEqual(engineError?.errno, .badAddress)
            XCTAssertTrue("\(error)".contains("EFAULT"), "\(error)")
        }
        XCTAssertEqual(engine.list().count, 1, "a refused registration leaves the others alone")
    }

    func testReleasingAnOwnerDeregistersOnlyItsRegions() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        let engine = try makeEngine(registrar)
        var mine: [RegionID] = []
        var others: [RegionID] = []
        for page in 0..<6 {   // interleaved owners
            let region = try engine.register(owner: OwnerID(UInt64(1 + page % 2)), fd: fd, offset: UInt64(page) * 4096,
                                             length: 4096, access: [.read, .write])
            if page % 2 == 0 { mine.append(region.id) } else { others.append(region.id) }
        }
        try engine.deregister(mine[1], owner: OwnerID(1))
        XCTAssertEqual(engine.list(owner: OwnerID(1)).map(\.id), [mine[0], mine[2]])
        XCTAssertEqual(engine.list(owner: OwnerID(2)).map(\.id), others)
        XCTAssertEqual(engine.list(owner: OwnerID(3)), [])
        engine.release(owner: OwnerID(1))
        XCTAssertEqual(engine.list().map(\.id), others)
        XCTAssertEqual(engine.list(owner: OwnerID(1)), [])
        engine.release(owner: OwnerID(1))   // twice: nothing left to do
        XCTAssertEqual(engine.list(owner: OwnerID(2)).map(\.id), others)
        XCTAssertEqual(engine.statistics().leasesHeld, 1)
        XCTAssertTrue(registrar.steps.contains("release o1"))
    }

    func testUnlinkedFileLosesItsRegionsInsteadOfRestoring() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine()
        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        // The open breaks the lease; once it goes through, the child unlinks and closes.
        let child = try spawn("/bin/sh", ["-c", "exec 3<\"$1\" && rm \"$1\"", "sh", path])
        drive(engine) { self.events.contains { if case .lost = $0.1 { return true }; return false } }
        child.waitUntilExit()
        XCTAssertEqual(child.terminationStatus, 0)
        XCTAssertTrue(events.contains { $0.1 == .lost(region.id, reason: "unlinked") }, "\(events)")
        XCTAssertEqual(engine.list(), [])
        XCTAssertEqual(engine.list(owner: owner), [], "a lost region leaves its owner's list")
        XCTAssertEqual(engine.statistics().files, 0, "a lost file is no longer tracked")
    }

    func testVerifyReportsDriftFromAChangeThroughTheOwnersOwnFD() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine()
        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 1 << 20, access: [.read, .write])
        XCTAssertEqual(try engine.verify(region.id).layoutChanged, false)
        // Our own open file description does not break our lease: only verify can see this.
        XCTAssertEqual(mrl_fallocate(fd.rawValue, MRL_FALLOC_FL_PUNCH_HOLE | MRL_FALLOC_FL_KEEP_SIZE, 65536, 65536), 0)
        let drift = try engine.verify(region.id)
        XCTAssertTrue(drift.layoutChanged)
        XCTAssertGreaterThan(drift.extentsAfter, drift.extentsBefore)
    }

    func testExplicitRevokeTakesTheMRAndTellsTheOwner() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        registrar.inode = try inode(fd)
        let engine = try makeEngine(registrar)
        let first = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        let second = try engine.register(owner: owner, fd: fd, offset: 4096, length: 4096, access: [.read])
        try engine.revoke(first.id)
        XCTAssertEqual(events.map(\.1), [.lost(first.id, reason: "revoked")])
        XCTAssertEqual(engine.list().map(\.id), [second.id])
        XCTAssertEqual(registrar.steps.last, "deregister lease=true mapped=true")
        engine.revoke(file: try XCTUnwrap(engine.list().first?.file))
        XCTAssertEqual(engine.statistics().leasesHeld, 0)
    }
}
