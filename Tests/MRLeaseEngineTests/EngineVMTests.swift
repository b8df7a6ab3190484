import CLinux
import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import Verbs
import XCTest

@testable import MRLeaseEngine
import MRLeasePolicy

/// The engine with real MRs on the guest's rxe0, real filesystems and real tools as the other
/// process. Runs in Scripts/vm-test on 6.1 and 7.x; skips on a host without RDMA.
final class EngineVMTests: XCTestCase {
    var events: [EngineEvent] = []
    let owner = OwnerID(7)

    func makeEngine() throws -> (Engine, VerbsRegistrar) {
        let registrar = try VerbsRegistrar(deviceNamed: try Facility.rdmaDevice.require())
        let engine = try Engine(registrar: registrar)
        return (engine, registrar)
    }

    func drive(_ engine: Engine, seconds: Double = 20, until done: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        while !done() && Date() < deadline { events += engine.poll(timeout: .milliseconds(10)).map(\.event) }
    }

    func settled(_ id: RegionID) -> Bool {
        events.contains {
            switch $0 {
            case .restored(id, _, _), .lost(id, _, _): true
            default: false
            }
        }
    }

    func restoredKeys(_ id: RegionID) -> (MRKeys, Bool)? {
        for case .restored(id, let keys, let layout) in events { return (keys, layout == .changed) }
        return nil
    }

    /// Runs `tool` as another process while the engine keeps answering breaks.
    func run(_ engine: Engine, _ tool: String, _ arguments: [String]) throws -> (status: Int32, seconds: Double) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let start = Date()
        try process.run()
        drive(engine, seconds: 60) { !process.isRunning }
        process.waitUntilExit()
        return (process.terminationStatus, Date().timeIntervalSince(start))
    }

    /// Writes `byte` over the region through a loopback RC QP in the region PD: what a peer
    /// does through its grant's PD (the daemon never makes a QP in the region PD).
    func rdmaWrite(_ registrar: VerbsRegistrar, region: RegionInfo, byte: UInt8, length: Int = 4096) throws {
        let keys = try XCTUnwrap(region.keys)
        let pd = registrar.protectionDomain
        let loopback = try Loopback(protectionDomain: pd, mtu: .bytes4096)
        let access: AccessFlags = [.localWrite, .remoteWrite, .remoteRead]
        let source = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 4096)
        defer { source.deallocate() }
        source.initializeMemory(as: UInt8.self, repeating: byte, count: length)
        let sourceMR = try pd.register(address: source, length: length, access: access)
        let completion = try loopback.write(from: sourceMR, length: length, to: keys.address, rkey: keys.rkey, wrID: 9)
        XCTAssertTrue(completion.isSuccess, "RDMA WRITE into the region: \(completion.statusText)")
    }

    /// Reads through our own fd (the engine's fd shares its open file description): a fresh
    /// open would itself break the lease the engine re-took.
    func fileBytes(_ fd: FileDescriptor, offset: Int, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let read = try bytes.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: Int64(offset), into: $0) }
        return Array(bytes.prefix(read))
    }

    /// Registers, writes through RDMA, lets `tool` change the file from another process, and
    /// checks the old MR is gone from the kernel, the region came back with a new rkey (or was
    /// lost), and the RDMA-written data is in the file.
    func exercise(_ facility: Facility, tool: (String) -> (String, [String]), truncatesTo newSize: Int? = nil,
                  expectLayoutChange: Bool? = nil, prepare: ((String) throws -> Void)? = nil) throws {
        let (engine, registrar) = try makeEngine()
        let scratch = try ScratchDirectory(in: try facility.require())
        let path = try scratch.file("region", size: 1 << 20, byte: 0x11)
        try prepare?(path)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let mrsBefore = try RDMAResources.memoryRegionKeys()
        // Foundation starts its process-monitoring machinery (eventfd, epoll, timerfd) on the
        // first child: start one before counting, so only our own fds are compared.
        _ = try run(engine, "/bin/true", [])
        let fdsBefore = RDMAResources.openFDs()

        let kept: RegionInfo, far: RegionInfo
        do {
            kept = try engine.register(owner: owner, fd: fd, offset: 0, length: 8192, access: [.read, .write])
            far = try engine.register(owner: owner, fd: fd, offset: 512 * 1024, length: 4096, access: [.read, .write])
        } catch {
            guard !TestKernel.hasWritableStrategy(on: facility) else { throw error }
            return try assertNoWritableStrategy(error, on: facility)
        }
        XCTAssertTrue(TestKernel.hasWritableStrategy(on: facility), "\(facility) registered read+write on \(TestKernel.release)")
        let oldKeys = try XCTUnwrap(kept.keys)
        XCTAssertTrue(try RDMAResources.memoryRegionKeys().contains(oldKeys.rkey), "the MR is visible to rdma resource show")
        try rdmaWrite(registrar, region: kept, byte: 0xC3)

        let (tool, arguments) = tool(path)
        let result = try run(engine, tool, arguments)
        XCTAssertEqual(result.status, 0, "\(tool) \(arguments) failed")
        XCTAssertLessThan(result.seconds, 10, "\(tool) waited \(result.seconds) s; lease-break-time is 45 s")
        print("[measure] \(facility) \(URL(fileURLWithPath: tool).lastPathComponent): tool took \(String(format: "%.3f", result.seconds)) s")
        drive(engine) { self.settled(kept.id) && self.settled(far.id) }

        XCTAssertFalse(try RDMAResources.memoryRegionKeys().contains(oldKeys.rkey), "the old MR must be gone from the kernel")
        let (newKeys, changed) = try XCTUnwrap(restoredKeys(kept.id), "region not restored: \(events)")
        XCTAssertNotEqual(newKeys.rkey, oldKeys.rkey)
        XCTAssertTrue(try RDMAResources.memoryRegionKeys().contains(newKeys.rkey))
        if let expectLayoutChange { XCTAssertEqual(changed, expectLayoutChange, "layoutChanged") }
        if let newSize, newSize <= far.offset {
            XCTAssertTrue(events.contains { if case .lost(far.id, .rangeTruncated, _) = $0 { true } else { false } }, "\(events)")
        } else {
            XCTAssertNotNil(restoredKeys(far.id), "\(events)")
        }
        XCTAssertEqual(try fileBytes(fd, offset: 0, count: 4096), [UInt8](repeating: 0xC3, count: 4096),
                       "data written by RDMA before the break must be in the file")

        // The restored MR takes RDMA writes again.
        let restored = try XCTUnwrap(engine.list().first { $0.id == kept.id })
        try rdmaWrite(registrar, region: restored, byte: 0x3C)
        XCTAssertEqual(try fileBytes(fd, offset: 4095, count: 1), [0x3C])

        events += engine.release(owner: owner).map(\.event)
        XCTAssertEqual(engine.statistics().leasesHeld, 0)
        XCTAssertEqual(try RDMAResources.memoryRegionKeys(), mrsBefore, "no MR left behind")
        let fdsAfter = RDMAResources.openFDs()
        XCTAssertEqual(fdsAfter.count, fdsBefore.count,
                       "fds left behind: \(fdsAfter.filter { fdsBefore[$0.key] != $0.value })")
    }

    /// Where a read+write region has no strategy with rxe (FS-DAX without ODP; the page cache
    /// on 6.5 to ~6.14, 6.12 measured, which refuses writable pins and has no rxe ODP), the
    /// refusal itself is the expected result, naming each reason.
    func assertNoWritableStrategy(_ error: EngineError, on facility: Facility) throws {
        guard case .refused(let refusal) = error else { return XCTFail("expected a refusal: \(error)") }
        XCTAssertEqual(refusal.code, .strategyUnavailable)
        XCTAssertTrue("\(error)".contains("no ODP support"), "\(error)")
        switch facility {
        case .ext4DAX, .xfsDAX:
            XCTAssertEqual(error.errno, .notSupported, "\(error)")
        default:
            XCTAssertEqual(error.errno, .badAddress, "\(error)")
            XCTAssertTrue("\(error)".contains("Linux 6.5+"), "\(error)")
        }
    }

    // coreutils truncate opens O_NONBLOCK: its first try fails with EAGAIN but starts the
    // break; it succeeds once mrleased has unlocked (the grace before re-leasing).
    func truncateTool(_ size: Int) -> (String) -> (String, [String]) {
        { path in ("/bin/sh", ["-c", "for i in $(seq 100); do truncate -s \(size) '\(path)' 2>/dev/null && exit 0; sleep 0.05; done; exit 1"]) }
    }

    /// The page cache's read-only cell, the one it has on 6.12 (no writable pin, no rxe ODP):
    /// a read-only region over an O_RDONLY fd, a truncate from another process breaking its
    /// read lease, and the region back with new keys. 6.1 refuses it (a read-only mapping,
    /// pinned with FOLL_WRITE before 6.2), naming that.
    func testReadOnlyRegionOnExt4IsRevokedAndRestoredAroundATruncate() throws {
        let (engine, _) = try makeEngine()
        let scratch = try ScratchDirectory(in: try Facility.ext4.require())
        let path = try scratch.file("region", size: 1 << 20, byte: 0x11)
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        let mrsBefore = try RDMAResources.memoryRegionKeys()
        let region: RegionInfo
        do {
            region = try engine.register(owner: owner, fd: fd, offset: 0, length: 65536, access: [.read])
        } catch {
            let release = TestKernel.release
            guard release.major == 6 && release.minor < 2 else { throw error }
            guard case .refused(let refusal) = error else { return XCTFail("expected a refusal: \(error)") }
            XCTAssertEqual(refusal.code, .strategyUnavailable)
            XCTAssertTrue("\(error)".contains("before 6.2"), "\(error)")
            return
        }
        if !TestKernel.rxeHasODP { XCTAssertEqual(region.strategy, .pinned) }
        let oldKeys = try XCTUnwrap(region.keys)
        XCTAssertTrue(try RDMAResources.memoryRegionKeys().contains(oldKeys.rkey))

        let (tool, arguments) = truncateTool(2 << 20)(path)   // grows the file: the region stays whole
        XCTAssertEqual(try run(engine, tool, arguments).status, 0, "truncate never got through")
        drive(engine) { self.settled(region.id) }
        guard case .revoking(let revocation)? = events.first, revocation.regions == [region.id] else { return XCTFail("the owner must hear revoking first: \(events)") }
        XCTAssertTrue(events.contains(.revoked(region.id)), "\(events)")
        let (newKeys, _) = try XCTUnwrap(restoredKeys(region.id), "region not restored: \(events)")
        XCTAssertNotEqual(newKeys.rkey, oldKeys.rkey)
        XCTAssertFalse(try RDMAResources.memoryRegionKeys().contains(oldKeys.rkey), "the old MR must be gone from the kernel")

        events += engine.release(owner: owner).map(\.event)
        XCTAssertEqual(try RDMAResources.memoryRegionKeys(), mrsBefore, "no MR left behind")
    }

    /// rdma_create_qp takes only PDs made on librdmacm's own context for the device: the
    /// registrar's PDs (and so a client's regions) must live there for remote access.
    func testRegistrarAllocatesOnLibrdmacmsContext() throws {
        let (_, registrar) = try makeEngine()
        XCTAssertEqual(registrar.context.origin, .librdmacm)
    }

    func testTruncateOnExt4DAX() throws { try exercise(.ext4DAX, tool: truncateTool(65536), truncatesTo: 65536) }
    func testTruncateOnXFSDAX() throws { try exercise(.xfsDAX, tool: truncateTool(65536), truncatesTo: 65536) }
    func testTruncateOnExt4() throws { try exercise(.ext4, tool: truncateTool(65536), truncatesTo: 65536) }
    func testTruncateOnXFS() throws { try exercise(.xfs, tool: truncateTool(65536), truncatesTo: 65536) }
    func testTruncateOnTmpfs() throws { try exercise(.tmpfs, tool: truncateTool(65536), truncatesTo: 65536) }

    // The punch covers the second page of the first region, after the RDMA-written one.
    func testHolePunchOnExt4DAXIsALayoutChange() throws {
        try exercise(.ext4DAX, tool: { ("/usr/bin/fallocate", ["-p", "-o", "4096", "-l", "4096", $0]) }, expectLayoutChange: true)
    }
    func testHolePunchOnXFSIsALayoutChange() throws {
        try exercise(.xfs, tool: { ("/usr/bin/fallocate", ["-p", "-o", "4096", "-l", "4096", $0]) }, expectLayoutChange: true)
    }

    /// A hole punched through the owner's own fd breaks no lease: mrleased's lease is on that
    /// same open file description. A pinned MR keeps the punched-out page, so a peer's WRITE
    /// completes with success into a page the file no longer has (issue 9, defect 3). The
    /// engine must catch the change (inotify IN_MODIFY, then FIEMAP), revoke and restore; a
    /// WRITE through the region's keys after that must land in the file.
    func punchThroughTheOwnersFD(on facility: Facility) throws {
        let (engine, registrar) = try makeEngine()
        let scratch = try ScratchDirectory(in: try facility.require())
        let path = try scratch.file("region", size: 1 << 20, byte: 0x11)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        // Kernels from 6.5 refuse writable long-term pins of page-cache files (not of shmem):
        // there the plan registers ODP, which follows the file; the revocation must come anyway.
        let pinnable = facility == .tmpfs || !TestKernel.refusesWritableFilePins
        let region: RegionInfo
        do {
            region = try engine.register(owner: owner, fd: fd, offset: 0, length: 65536, access: [.read, .write],
                                         preference: pinnable ? .pinned : nil)
        } catch {
            guard !TestKernel.hasWritableStrategy(on: facility) else { throw error }
            return try assertNoWritableStrategy(error, on: facility)
        }
        XCTAssertTrue(TestKernel.hasWritableStrategy(on: facility), "\(facility) registered read+write on \(TestKernel.release)")
        XCTAssertEqual(region.strategy, pinnable ? .pinned : .odp)
        let oldKeys = try XCTUnwrap(region.keys)
        let punched = Engine.now()
        XCTAssertEqual(mrl_fallocate(fd.rawValue, MRL_FALLOC_FL_PUNCH_HOLE | MRL_FALLOC_FL_KEEP_SIZE, 0, 4096), 0, "fallocate: \(errno)")
        // The residual window: from the punch to the MR's deregistration (the engine emits
        // `revoked` right after it), with the engine polled as the daemon's loop would.
        var revokedAfter: UInt64?
        let deadline = punched + 3_000_000_000
        while !settled(region.id) && Engine.now() < deadline {
            events += engine.poll(timeout: .milliseconds(10)).map(\.event)
            if revokedAfter == nil, events.contains(.revoked(region.id)) { revokedAfter = Engine.now() - punched }
        }
        print("[measure] \(facility) punch through the owner's fd: MR deregistered \(revokedAfter.map { "\($0 / 1000) µs" } ?? "never") after the fallocate returned; events \(events)")
        if case .revoking(let revocation)? = events.first, revocation.regions == [region.id] { XCTAssertEqual(revocation.cause, .layoutChanged) } else {
            XCTFail("the owner must hear revoking first: \(events)")
        }
        XCTAssertNotNil(revokedAfter, "the punch must revoke the region: \(events)")
        let (newKeys, changed) = try XCTUnwrap(restoredKeys(region.id), "region not restored: \(events)")
        XCTAssertTrue(changed, "the restored region must report the layout change")
        XCTAssertNotEqual(newKeys.rkey, oldKeys.rkey)
        XCTAssertFalse(try RDMAResources.memoryRegionKeys().contains(oldKeys.rkey), "the old MR must be gone from the kernel")
        let current = try XCTUnwrap(engine.list().first { $0.id == region.id }, "region gone: \(events)")
        try rdmaWrite(registrar, region: current, byte: 0xC3)
        let bytes = try fileBytes(fd, offset: 0, count: 4096)
        XCTAssertEqual(bytes.filter { $0 == 0xC3 }.count, 4096,
                       "an RDMA WRITE after the punch must land in the file; it holds \(Set(bytes).sorted())")

        // More samples of the window: each punch takes another page of the region, after a
        // quiet spell longer than the debounce (a change within 20 ms of the last comparison
        // waits for the rest of those 20 ms).
        var windows: [UInt64] = []
        for page in 1..<16 {
            events = []
            drive(engine, seconds: 0.05) { false }
            let start = Engine.now()
            XCTAssertEqual(mrl_fallocate(fd.rawValue, MRL_FALLOC_FL_PUNCH_HOLE | MRL_FALLOC_FL_KEEP_SIZE, off_t(page * 4096), 4096), 0)
            while !events.contains(.revoked(region.id)) && Engine.now() < start + 3_000_000_000 {
                events += engine.poll(timeout: .milliseconds(10)).map(\.event)
            }
            if events.contains(.revoked(region.id)) { windows.append((Engine.now() - start) / 1000) }
            drive(engine, seconds: 3) { self.settled(region.id) }
        }
        XCTAssertEqual(windows.count, 15, "every punch must revoke: \(events)")
        windows.sort()
        print("[measure] \(facility) \(region.strategy) punch-to-deregistration over \(windows.count) punches: p50 \(windows[windows.count / 2]) µs, max \(windows.last ?? 0) µs")
        events += engine.release(owner: owner).map(\.event)
    }

    func testHolePunchThroughTheOwnersFDOnXFSRevokesAndTheNextWriteLands() throws { try punchThroughTheOwnersFD(on: .xfs) }
    func testHolePunchThroughTheOwnersFDOnExt4RevokesAndTheNextWriteLands() throws { try punchThroughTheOwnersFD(on: .ext4) }
    func testHolePunchThroughTheOwnersFDOnTmpfsRevokesAndTheNextWriteLands() throws { try punchThroughTheOwnersFD(on: .tmpfs) }

    func testCatOnXFSDAXChangesNoLayout() throws {
        try exercise(.xfsDAX, tool: { ("/bin/cat", [$0]) }, expectLayoutChange: false)
    }
    func testCatOnExt4ChangesNoLayout() throws {
        try exercise(.ext4, tool: { ("/bin/cat", [$0]) }, expectLayoutChange: false)
    }

    /// Cloning our file makes its extents shared: the restored region reports the change.
    func testReflinkCopyOnXFSSharesExtentsAndIsReported() throws {
        try exercise(.xfs, tool: { ("/usr/bin/cp", ["--reflink=always", $0, $0 + ".clone"]) }, expectLayoutChange: true)
    }
    func testReflinkCopyOnXFSDAXSharesExtentsAndIsReported() throws {
        try exercise(.xfsDAX, tool: { ("/usr/bin/cp", ["--reflink=always", $0, $0 + ".clone"]) }, expectLayoutChange: true)
    }

    /// e4defrag moves the blocks of a fragmented file.
    func testDefragOnExt4MovesExtentsAndIsReported() throws {
        try exercise(.ext4, tool: { ("/usr/sbin/e4defrag", [$0]) }, expectLayoutChange: true, prepare: { path in
            // ext4 serves small files from a per-CPU pool shared by all of them: alternating
            // synced 4 KiB writes with a spacer file interleaves their first blocks (measured:
            // 4 extents, one after e4defrag). Larger writes would get an inode preallocation.
            let spacer = path + ".spacer"
            try FileManager.default.removeItem(atPath: path)
            for block in 0..<16 {
                try Subprocess.run("/usr/bin/dd", ["if=/dev/urandom", "of=\(path)", "bs=4K", "count=1", "seek=\(block)", "conv=notrunc,fsync", "status=none"])
                try Subprocess.run("/usr/bin/dd", ["if=/dev/zero", "of=\(spacer)", "bs=4K", "count=1", "oflag=append", "conv=notrunc,fsync", "status=none"])
            }
            try Subprocess.run("/usr/bin/dd", ["if=/dev/urandom", "of=\(path)", "bs=64K", "count=15", "seek=1", "conv=notrunc,fsync", "status=none"])
            let fd = try FileDescriptor.open(FilePath(path), .readOnly)
            defer { try? fd.close() }
            XCTAssertGreaterThan(try fd.extents(sync: true).extents.count, 1, "the file must start fragmented")
        })
    }

    func testManyRegionsOnOneFileAreRevokedAndRestoredTogether() throws {
        let (engine, _) = try makeEngine()
        let scratch = try ScratchDirectory(in: try Facility.tmpfs.require())
        let path = try scratch.file("many", size: 4 << 20)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let ids = try (0..<1000).map { try engine.register(owner: owner, fd: fd, offset: UInt64($0) * 4096, length: 4096, access: [.read, .write]).id }
        let result = try run(engine, "/bin/cat", [path])
        XCTAssertEqual(result.status, 0)
        drive(engine) { ids.allSatisfy(self.settled) }
        XCTAssertEqual(events.filter { if case .restored = $0 { return true }; return false }.count, 1000)
        XCTAssertLessThan(result.seconds, 10)
        print("[measure] 1000 regions: cat took \(String(format: "%.3f", result.seconds)) s; break-to-unlock p50 \(engine.statistics().breakToUnlock.quantileMicros(0.5) ?? 0) µs")
        events += engine.release(owner: owner).map(\.event)
        XCTAssertEqual(try RDMAResources.memoryRegionKeys(), [])
    }
}
