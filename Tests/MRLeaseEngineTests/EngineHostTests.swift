import CLinux
import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import Verbs
import XCTest

@testable import MRLeaseEngine
import MRLeasePolicy

final class EngineHostTests: XCTestCase {
    /// What the engine's calls returned, in order.
    var events: [(OwnerID, EngineEvent)] = []
    let owner = OwnerID(1)

    func makeEngine(_ registrar: RecordingRegistrar = RecordingRegistrar(), timing: FileLifecycle.Timing = .init(),
                    extentReader: ExtentReader = .fiemap) throws -> Engine {
        try Engine(registrar: registrar, configuration: .init(timing: timing, extentReader: extentReader))
    }

    func record(_ notices: [EngineNotice]) {
        events += notices.map { ($0.owner, $0.event) }
    }

    /// The wire code an engine error becomes (the daemon's mapping is tested in its own suite).
    func code(_ error: Error) -> String {
        switch error as? EngineError {
        case .refused(let refusal): refusal.code.rawValue
        case .fileBusy, .interrupted: "file-busy"
        case .unknownRegion: "unknown-region"
        case .system, .bug: "internal"
        case nil: "not an EngineError: \(error)"
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
        while !done() && Date() < deadline { record(engine.poll(timeout: .milliseconds(10))) }
    }

    func spawn(_ tool: String, _ arguments: [String]) throws -> Process {
        try Subprocess.start(tool, arguments)
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
        for case (_, .revoking(let revocation)) in events {
            XCTAssertEqual(revocation.cause, .leaseBreak)
            for id in revocation.regions { record(try engine.acknowledge(id)) }
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
        let kinds = events.map(\.1.summary)
        XCTAssertEqual(kinds, ["revoking \(kept.id) \(cut.id)", "revoked \(kept.id)", "revoked \(cut.id)",
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
        XCTAssertTrue(events.contains { if case .restored(_, _, .unchanged) = $0.1 { return true }; return false },
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
        XCTAssertTrue(events.contains { if case .restored(region.id, _, .changed) = $0.1 { return true }; return false },
                      "hole punch must show as layoutChanged: \(events)")
    }

    func testBadRequestsGetPreciseErrorsAndLeakNothing() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine()
        let before = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count

        let readOnly = try FileDescriptor.open(FilePath(path), .readOnly)
        XCTAssertThrowsError(try engine.register(owner: owner, fd: readOnly, offset: 0, length: 4096, access: [.write])) {
            XCTAssertEqual(self.code($0), "access-denied")
        }
        // Our second open makes the write lease impossible: file-busy, not a generic failure.
        XCTAssertThrowsError(try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])) {
            XCTAssertEqual(self.code($0), "file-busy")
            XCTAssertEqual(($0 as? EngineError)?.errno, .resourceTemporarilyUnavailable)
        }
        try readOnly.close()
        XCTAssertThrowsError(try engine.register(owner: owner, fd: fd, offset: 100, length: 4096, access: [.read])) {
            XCTAssertEqual(self.code($0), "bad-alignment")
        }
        XCTAssertThrowsError(try engine.register(owner: owner, fd: fd, offset: 1 << 20, length: 4096, access: [.read])) {
            XCTAssertEqual(self.code($0), "range-out-of-file")
        }
        let directory = try FileDescriptor.open(FilePath(scratch.path), .readOnly)
        XCTAssertThrowsError(try engine.register(owner: owner, fd: directory, offset: 0, length: 4096, access: [.read])) {
            XCTAssertEqual(self.code($0), "not-regular-file")
        }
        try directory.close()

        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        XCTAssertEqual(engine.statistics().leasesHeld, 1)
        record(try engine.deregister(region.id))
        XCTAssertThrowsError(try engine.deregister(region.id)) { XCTAssertEqual(self.code($0), "unknown-region") }
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
            XCTAssertEqual(self.code(error), "strategy-unavailable")
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
        record(try engine.deregister(mine[1], owner: OwnerID(1)))
        XCTAssertEqual(engine.list(owner: OwnerID(1)).map(\.id), [mine[0], mine[2]])
        XCTAssertEqual(engine.list(owner: OwnerID(2)).map(\.id), others)
        XCTAssertEqual(engine.list(owner: OwnerID(3)), [])
        record(engine.release(owner: OwnerID(1)))
        XCTAssertEqual(engine.list().map(\.id), others)
        XCTAssertEqual(engine.list(owner: OwnerID(1)), [])
        record(engine.release(owner: OwnerID(1)))   // twice: nothing left to do
        XCTAssertEqual(engine.list(owner: OwnerID(2)).map(\.id), others)
        XCTAssertEqual(engine.statistics().leasesHeld, 1)
        XCTAssertEqual(registrar.steps.filter { $0.hasPrefix("deregister") }.count, mine.count,
                       "the owner's three regions were deregistered (one by deregister, two by release), no other's")
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
        XCTAssertTrue(events.contains { $0.1 == .lost(region.id, reason: .unlinked, message: nil) }, "\(events)")
        XCTAssertEqual(engine.list(), [])
        XCTAssertEqual(engine.list(owner: owner), [], "a lost region leaves its owner's list")
        XCTAssertEqual(engine.statistics().files, 0, "a lost file is no longer tracked")
    }

    func testVerifyReportsDriftFromAChangeThroughTheOwnersOwnFD() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine()
        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 1 << 20, access: [.read, .write])
        XCTAssertEqual(try engine.verify(region.id).layout, .unchanged)
        // Our own open file description does not break our lease: only verify can see this.
        XCTAssertEqual(mrl_fallocate(fd.rawValue, MRL_FALLOC_FL_PUNCH_HOLE | MRL_FALLOC_FL_KEEP_SIZE, 65536, 65536), 0)
        let drift = try engine.verify(region.id)
        XCTAssertEqual(drift.layout, .changed)
        XCTAssertGreaterThan(drift.extentsAfter, drift.extentsBefore)
    }

    /// A punch through the owner's own fd breaks no lease; inotify's IN_MODIFY and FIEMAP
    /// catch it, and the file's regions are revoked (MRs first, no quiesce) and restored with
    /// cause `layout-changed`.
    func testPunchThroughTheOwnersFDRevokesAndRestoresWithLayoutChanged() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        registrar.inode = try inode(fd)
        let engine = try makeEngine(registrar)
        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 65536, access: [.read, .write])
        let far = try engine.register(owner: owner, fd: fd, offset: 512 * 1024, length: 4096, access: [.read])
        XCTAssertEqual(mrl_fallocate(fd.rawValue, MRL_FALLOC_FL_PUNCH_HOLE | MRL_FALLOC_FL_KEEP_SIZE, 0, 4096), 0)
        drive(engine) { self.events.filter { if case .restored = $0.1 { true } else { false } }.count == 2 }
        XCTAssertEqual(events.compactMap { if case .revoking(let r) = $0.1 { "\(r.regions) \(r.cause.rawValue)" } else { nil } },
                       ["\([region.id, far.id]) layout-changed"], "one event for the owner's regions of the file")
        XCTAssertEqual(events.compactMap { if case .restored(let id, _, let layout) = $0.1 { "\(id) \(layout.rawValue)" } else { nil } },
                       ["\(region.id) changed", "\(far.id) unchanged"])
        XCTAssertEqual(Array(registrar.steps.filter { $0.hasPrefix("deregister") }.prefix(2)),
                       ["deregister lease=true mapped=true", "deregister lease=true mapped=true"])
        XCTAssertEqual(engine.statistics().layoutChangesHandled, 1)
        XCTAssertEqual(engine.statistics().leasesHeld, 1)
        XCTAssertEqual(engine.indexProblems(), [])
    }

    /// ZERO_RANGE (the blocks become unwritten) and COLLAPSE_RANGE (later blocks shift down),
    /// made through a dup of the owner's fd (the same open file description, as a child's
    /// inherited copy or one passed over SCM_RIGHTS is), are layout changes too.
    func testZeroAndCollapseRangeThroughACopyOfTheOwnersFDAreCaught() throws {
        for (name, mode) in [("ZERO_RANGE", MRL_FALLOC_FL_ZERO_RANGE), ("COLLAPSE_RANGE", MRL_FALLOC_FL_COLLAPSE_RANGE)] {
            events = []
            let (scratch, _, fd) = try scratchFile()
            defer { try? fd.close(); _ = scratch }
            let engine = try makeEngine()
            let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 65536, access: [.read, .write])
            let copy = try fd.duplicate()
            XCTAssertEqual(mrl_fallocate(copy.rawValue, mode, 4096, 4096), 0, "\(name): \(Errno(rawValue: errno))")
            try copy.close()
            drive(engine) { self.events.contains { if case .restored = $0.1 { true } else { false } } }
            XCTAssertEqual(events.map(\.1).first.map { if case .revoking(let r) = $0 { r.regions == [region.id] && r.cause == .layoutChanged } else { false } }, true,
                           "\(name): \(events)")
            XCTAssertTrue(events.contains { if case .restored(region.id, _, .changed) = $0.1 { true } else { false } }, "\(name): \(events)")
        }
    }

    /// A write through the owner's fd into blocks the file already has moves nothing: it is
    /// compared (IN_MODIFY) and revokes nothing. A truncate below a region loses it.
    func testWriteThatMovesNoBlockRevokesNothingAndATruncateLosesTheRange() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine()
        let region = try engine.register(owner: owner, fd: fd, offset: 65536, length: 4096, access: [.read, .write])
        _ = try fd.writeAll(toAbsoluteOffset: 65536, [UInt8](repeating: 7, count: 4096))
        drive(engine, seconds: 0.3) { false }
        XCTAssertEqual(events.count, 0, "\(events)")
        XCTAssertGreaterThan(engine.statistics().layoutChecks, 0)
        try fd.resize(to: 8192)
        drive(engine) { !self.events.isEmpty && !(engine.list().first?.state == .registered) }
        drive(engine, seconds: 0.2) { false }
        XCTAssertTrue(events.contains { if case .lost(region.id, .rangeTruncated, _) = $0.1 { true } else { false } }, "\(events)")
    }

    /// A burst of writes through the owner's fd costs a bounded number of synced FIEMAPs:
    /// the first IN_MODIFY is compared at once, the rest at most once per interval.
    func testABurstOfWritesIsComparedAtMostOncePerInterval() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try Engine(registrar: RecordingRegistrar(), configuration: .init(layoutCheckInterval: 50_000_000))
        _ = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        let start = Date()
        for round in 0..<400 {
            _ = try fd.writeAll(toAbsoluteOffset: Int64(8192 + round % 16 * 4096), [UInt8](repeating: UInt8(round % 256), count: 4096))
            record(engine.process(now: Engine.now()))
        }
        drive(engine, seconds: 0.2) { false }
        let elapsed = Date().timeIntervalSince(start)
        let checks = engine.statistics().layoutChecks
        XCTAssertGreaterThan(checks, 0)
        XCTAssertLessThanOrEqual(Double(checks), elapsed / 0.05 + 2, "\(checks) checks in \(elapsed) s")
        XCTAssertEqual(events.count, 0, "overwrites move no block: \(events)")
    }

    /// Unlinking a registered file revokes nothing (the data lives while the engine's fd is
    /// open) but tells each owner once; the region still deregisters normally.
    func testUnlinkOfARegisteredFileTellsTheOwnerOnceAndKeepsTheRegion() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine()
        let region = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        XCTAssertEqual(unlink(path), 0)
        drive(engine) { !self.events.isEmpty }
        drive(engine, seconds: 0.2) { false }
        XCTAssertEqual(events.map(\.1), [.unlinked(region.id)])
        XCTAssertEqual(engine.list().map(\.state), [.registered])
        record(try engine.deregister(region.id))
        XCTAssertEqual(engine.statistics().leasesHeld, 0)
    }

    func testExplicitRevokeTakesTheMRAndTellsTheOwner() throws {
        let (scratch, _, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        registrar.inode = try inode(fd)
        let engine = try makeEngine(registrar)
        let first = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        let second = try engine.register(owner: owner, fd: fd, offset: 4096, length: 4096, access: [.read])
        record(try engine.revoke(first.id))
        XCTAssertEqual(events.map(\.1), [.lost(first.id, reason: .revoked, message: "revoked by an operator")])
        XCTAssertEqual(engine.list().map(\.id), [second.id])
        XCTAssertEqual(registrar.steps.last, "deregister lease=true mapped=true")
        record(engine.revoke(file: try XCTUnwrap(engine.list().first?.file)))
        XCTAssertEqual(engine.statistics().leasesHeld, 0)
    }

    /// One mapping per 64 MiB span of a file, shared by the regions inside it; each MR still
    /// covers exactly its own range; the mapping goes with the last region using it.
    func testRegionsShareTheirFilesMappingAndEachMRCoversOnlyItsRange() throws {
        let (scratch, _, fd) = try scratchFile(size: 130 << 20)
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        let inode = try inode(fd)
        let engine = try makeEngine(registrar)
        var ids: [RegionID] = []
        for i in 0..<100 {
            ids.append(try engine.register(owner: owner, fd: fd, offset: UInt64(i) * 8192, length: 4096, access: [.read, .write]).id)
        }
        XCTAssertEqual(RecordingRegistrar.mappings(ofInode: inode), 1, "100 regions in one span share one mapping")
        let base = try XCTUnwrap(registrar.ranges.first).address
        for (i, range) in registrar.ranges.enumerated() {
            XCTAssertEqual(range.address, base + UInt64(i) * 8192, "region \(i) is registered at its own offset")
            XCTAssertEqual(range.length, 4096, "region \(i)'s MR covers its range only")
        }
        // A region across the 64 MiB boundary maps the two granules it covers; one in the
        // third granule maps that one.
        let across = try engine.register(owner: owner, fd: fd, offset: (64 << 20) - 4096, length: 8192, access: [.read])
        let far = try engine.register(owner: owner, fd: fd, offset: 129 << 20, length: 4096, access: [.read])
        XCTAssertEqual(RecordingRegistrar.mappings(ofInode: inode), 3)
        XCTAssertEqual(registrar.ranges.suffix(2).map(\.length), [8192, 4096])
        XCTAssertEqual(engine.indexProblems(), [])
        record(try engine.deregister(across.id))
        record(try engine.deregister(far.id))
        XCTAssertEqual(RecordingRegistrar.mappings(ofInode: inode), 1, "a span's mapping goes with its last region")
        for id in ids.dropLast() { record(try engine.deregister(id)) }
        XCTAssertEqual(RecordingRegistrar.mappings(ofInode: inode), 1)
        XCTAssertEqual(engine.indexProblems(), [])
        record(try engine.deregister(try XCTUnwrap(ids.last)))
        XCTAssertEqual(RecordingRegistrar.mappings(ofInode: inode), 0)
    }

    /// A revocation deregisters and unlocks; the mapping stays for the restoration (a mapping
    /// without an MR pins nothing), and the counters follow without walking the regions.
    func testRevocationKeepsTheMappingAndTheCountersFollow() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        registrar.inode = try inode(fd)
        let engine = try makeEngine(registrar, timing: .init(quiesce: 50_000_000, initialBackoff: 20_000_000, maxBackoff: 100_000_000))
        let first = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        _ = try engine.register(owner: owner, fd: fd, offset: 8192, length: 8192, access: [.read, .write])
        XCTAssertEqual(engine.statistics().bytesByStrategy, BytesByStrategy(odp: 12288))
        XCTAssertEqual(engine.statistics().leasesHeld, 1)
        let child = try spawn("/usr/bin/perl", ["-e", "truncate($ARGV[0], 1 << 20) or die $!", path])
        drive(engine) { self.events.contains { if case .revoked = $0.1 { return true }; return false } }
        XCTAssertEqual(engine.statistics().bytesByStrategy, BytesByStrategy(), "no MR is live while revoked")
        XCTAssertEqual(engine.statistics().leasesHeld, 0)
        XCTAssertEqual(RecordingRegistrar.mappings(ofInode: registrar.inode), 1, "the mapping stays through the revocation")
        XCTAssertEqual(engine.indexProblems(), [])
        drive(engine) { !child.isRunning && self.events.filter { if case .restored = $0.1 { return true }; return false }.count == 2 }
        child.waitUntilExit()
        XCTAssertEqual(engine.statistics().bytesByStrategy, BytesByStrategy(odp: 12288))
        XCTAssertEqual(engine.statistics().leasesHeld, 1)
        XCTAssertEqual(registrar.ranges.count, 4)
        XCTAssertEqual(registrar.ranges[2].address, registrar.ranges[0].address, "restored into the same mapping")
        XCTAssertEqual(engine.indexProblems(), [])
        record(try engine.deregister(first.id))
        XCTAssertEqual(engine.statistics().bytesByStrategy, BytesByStrategy(odp: 8192))
    }

    /// With odpPrefetch, each new and each restored ODP MR is prefetched (writable for a
    /// writable region); pinned MRs never are, and without the option nothing is.
    func testODPPrefetchFollowsEveryODPRegistrationOnlyWhenAsked() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        let engine = try Engine(registrar: registrar, configuration: .init(
            timing: .init(quiesce: 50_000_000, initialBackoff: 20_000_000, maxBackoff: 100_000_000), odpPrefetch: true))
        let writable = try engine.register(owner: owner, fd: fd, offset: 0, length: 4096, access: [.read, .write])
        let readable = try engine.register(owner: owner, fd: fd, offset: 4096, length: 4096, access: [.read])
        let pinned = try engine.register(owner: owner, fd: fd, offset: 8192, length: 4096, access: [.read], preference: .pinned)
        XCTAssertEqual(pinned.strategy, .pinned)
        XCTAssertEqual(registrar.steps.filter { $0.hasPrefix("prefetch") },
                       ["prefetch write key \(try XCTUnwrap(writable.keys).lkey)", "prefetch read key \(try XCTUnwrap(readable.keys).lkey)"])
        let child = try spawn("/usr/bin/perl", ["-e", "truncate($ARGV[0], 1 << 20) or die $!", path])
        drive(engine) { !child.isRunning && self.events.filter { if case .restored = $0.1 { return true }; return false }.count == 3 }
        child.waitUntilExit()
        XCTAssertEqual(registrar.steps.filter { $0.hasPrefix("prefetch") }.count, 4, "\(registrar.steps)")

        let (otherScratch, _, otherFD) = try scratchFile()
        defer { try? otherFD.close(); _ = otherScratch }
        let plain = RecordingRegistrar()
        let quiet = try makeEngine(plain)
        _ = try quiet.register(owner: owner, fd: otherFD, offset: 0, length: 4096, access: [.read, .write])
        XCTAssertEqual(plain.steps, ["register odp"], "no prefetch unless asked")
    }

    /// One call acknowledges many regions, all or none: an unknown id acknowledges nothing.
    func testAcknowledgingManyRegionsAtOnceIsAllOrNone() throws {
        let (scratch, path, fd) = try scratchFile()
        defer { try? fd.close(); _ = scratch }
        let engine = try makeEngine(RecordingRegistrar(), timing: .init(quiesce: 5_000_000_000, initialBackoff: 20_000_000, maxBackoff: 100_000_000))
        let ids = try (0..<3).map { try engine.register(owner: owner, fd: fd, offset: UInt64($0) * 4096, length: 4096, access: [.read, .write]).id }
        let child = try spawn("/usr/bin/perl", ["-e", "truncate($ARGV[0], 1 << 20) or die $!", path])
        drive(engine) { self.events.flatMap { (_, event) -> [RegionID] in if case .revoking(let r) = event { r.regions } else { [] } } == ids }
        XCTAssertThrowsError(try engine.acknowledge([ids[0], RegionID(999)], owner: owner)) { error in
            guard case .unknownRegion(let id) = error as? EngineError else { return XCTFail("\(error)") }
            XCTAssertEqual(id, RegionID(999))
        }
        XCTAssertThrowsError(try engine.acknowledge(ids, owner: OwnerID(77)), "another owner's regions")
        XCTAssertEqual(engine.list().map(\.state), [.revoking, .revoking, .revoking], "nothing was acknowledged")
        record(try engine.acknowledge(ids, owner: owner))
        XCTAssertEqual(events.compactMap { if case .revoked(let id) = $0.1 { id } else { nil } }, ids, "the last ack revoked the file at once")
        drive(engine) { !child.isRunning }
        child.waitUntilExit()
        XCTAssertEqual(engine.indexProblems(), [])
    }

    /// The region index gives its storage back when an owner with many regions leaves.
    func testReleasingManyRegionsShrinksTheRegionIndex() throws {
        let (scratch, _, fd) = try scratchFile(size: 64 << 20)
        defer { try? fd.close(); _ = scratch }
        let registrar = RecordingRegistrar()
        registrar.checksAtDeregistration = false
        let engine = try makeEngine(registrar)
        for i in 0..<10_000 { _ = try engine.register(owner: owner, fd: fd, offset: UInt64(i) * 4096, length: 4096, access: [.read, .write]) }
        XCTAssertGreaterThanOrEqual(engine.regions.capacity, 10_000)
        record(engine.release(owner: owner))
        XCTAssertEqual(engine.statistics().regions, 0)
        XCTAssertLessThanOrEqual(engine.regions.capacity, 4 * 1024, "the index keeps room for 10 000 regions after they went")
        XCTAssertEqual(engine.indexProblems(), [])
    }
}
