import LinuxFile
import SystemPackage
import XCTest

@testable import MRLeasePolicy

/// The registration plan as a table: (backing × open mode × access × device × kernel answer)
/// → the plan (what to try, in which order) or the refusal (its code and its reason). The
/// answers are the ones docs/kernel-matrix.md measured.
final class RegistrationPlanTests: XCTestCase {
    let page: UInt64 = 4096
    static let rxe61 = DeviceCapabilities(name: "rxe0", odpSupported: false, odpRC: [], odpRCText: "none")
    static let rxe7 = DeviceCapabilities(name: "rxe0", odpSupported: true, odpRC: [.read, .write, .atomic],
                                         odpRCText: "SEND,RECV,WRITE,READ,ATOMIC,SRQ_RECV")
    static let readODPOnly = DeviceCapabilities(name: "mlx5_0", odpSupported: true, odpRC: [.read], odpRCText: "READ")

    func file(_ backing: Backing, size: UInt64 = 1 << 20, kind: FileKind = .regular, filesystem: String = "ext4") -> PlannedFile {
        PlannedFile(kind: kind, filesystem: filesystem, isPseudoFile: ["proc", "sysfs"].contains(filesystem), backing: backing, size: size)
    }

    func plan(_ file: PlannedFile, _ mode: OpenMode, _ access: RegionAccess, device: DeviceCapabilities?,
              offset: UInt64 = 0, length: UInt64 = 65536, preference: Strategy? = nil,
              lessee: Lessee = Lessee(uid: 0, mayLeaseOthers: false)) -> Result<RegistrationPlan, PlanRefusal> {
        RegistrationPlan.make(file: file, mode: mode, offset: offset, length: length, access: access,
                              preference: preference, device: device, noDeviceReason: "no RDMA device: test",
                              lessee: lessee, pageSize: page)
    }

    // MARK: A batch planned once: `moved` answers what `make` would for each range

    func testAMovedPlanIsWhatMakeWouldPlanForTheRangeAndRefusesWhatMakeRefuses() throws {
        let size: UInt64 = 1 << 20
        for backing in [Backing.pageCache, .shmem, .fsDAX] {
            for device in [nil, Self.rxe61, Self.rxe7, Self.readODPOnly] {
                for access: RegionAccess in [[.read], [.read, .write]] {
                    guard case .success(let first) = plan(file(backing, size: size), .readWrite, access, device: device) else { continue }
                    // Inside, misaligned, empty, past the end, and overflowing 2^64.
                    let ranges: [(UInt64, UInt64)] = [(page, page), (size - page, page), (0, size), (page + 1, page), (page, 0),
                                                      (size, page), (size - page, 2 * page), (page, .max)]
                    for (offset, length) in ranges {
                        let made = plan(file(backing, size: size), .readWrite, access, device: device, offset: offset, length: length)
                        let moved = first.moved(offset: offset, length: length, fileSize: size, pageSize: page)
                        switch (made, moved) {
                        case (.success(let a), .success(let b)): XCTAssertEqual(a, b, "\(backing) \(access) [\(offset), +\(length))")
                        case (.failure(let a), .failure(let b)):
                            XCTAssertEqual(a.code, b.code)
                            XCTAssertEqual(a.message, b.message)
                        default: XCTFail("\(backing) \(access) [\(offset), +\(length)): make \(made), moved \(moved)")
                        }
                    }
                }
            }
        }
    }

    func testThePlanCacheAnswersWhatMakeAnswersForAnySequenceOfInputs() {
        var caches = [Self.rxe61, Self.rxe7, Self.readODPOnly, nil].map { PlanCache(device: $0, noDeviceReason: "none", pageSize: page, capacity: 3) }
        var rng = SystemRandomNumberGenerator()
        let files = [file(.pageCache), file(.shmem, size: 1 << 16), file(.fsDAX), file(.pageCache, filesystem: "proc")]
        let lessees = [Lessee(uid: 0, mayLeaseOthers: false), Lessee(uid: 1000, mayLeaseOthers: false)]
        // Six sets of inputs but the range, drawn from anew every 500 steps, through a cache of
        // three: hits, misses and evictions all happen.
        var pool: [(PlannedFile, OpenMode, RegionAccess, Strategy?, LayoutPolicy, DeviceCapabilities?, Lessee)] = []
        for step in 0..<5_000 {
            if step % 500 == 0 {
                pool = (0..<6).map { _ in
                    (files.randomElement(using: &rng)!, [OpenMode.readOnly, .readWrite].randomElement(using: &rng)!,
                     [[.read], [.read, .write]].randomElement(using: &rng)!, [nil, Strategy.odp, .pinned].randomElement(using: &rng)!,
                     LayoutPolicy.allCases.randomElement(using: &rng)!, [nil, Self.rxe61, Self.rxe7, Self.readODPOnly].randomElement(using: &rng)!,
                     lessees.randomElement(using: &rng)!)
                }
            }
            let (f, mode, access, preference, policy, device, lessee) = pool.randomElement(using: &rng)!
            let offset = UInt64.random(in: 0...20, using: &rng) * page + (Int.random(in: 0..<10, using: &rng) == 0 ? 1 : 0)
            let length = UInt64.random(in: 0...20, using: &rng) * page
            let made = RegistrationPlan.make(file: f, mode: mode, offset: offset, length: length, access: access, preference: preference,
                                             layoutPolicy: policy, device: device, noDeviceReason: "none", lessee: lessee, pageSize: page)
            let which = caches.firstIndex { $0.device == device }!
            let cached = caches[which].plan(file: f, mode: mode, offset: offset, length: length, access: access, preference: preference,
                                            layoutPolicy: policy, lessee: lessee)
            switch (made, cached) {
            case (.success(let a), .success(let b)): XCTAssertEqual(a, b, "step \(step)")
            case (.failure(let a), .failure(let b)):
                XCTAssertEqual(a.code, b.code, "step \(step)")
                XCTAssertEqual(a.message, b.message, "step \(step)")
                XCTAssertEqual(a.aboutRange, b.aboutRange, "step \(step)")
            default: XCTFail("step \(step): make \(made), cache \(cached)")
            }
        }
    }

    // MARK: Who may have the daemon lease a file: the kernel's F_SETLEASE rule, for the client

    func testOnlyTheFilesOwnerOrACallerWhoMayLeaseOthersGetsPastTheLeaseRule() {
        var owned = file(.pageCache)
        owned.owner = 1000
        for device in [nil, Self.rxe61, Self.rxe7] {
            guard case .failure(let refusal) = plan(owned, .readOnly, [.read], device: device, lessee: Lessee(uid: 65534, mayLeaseOthers: false)) else {
                return XCTFail("a reader who does not own the file was planned")
            }
            XCTAssertEqual(refusal.code, .accessDenied)
            XCTAssertEqual(refusal.errno, .permissionDenied)
            XCTAssertFalse(refusal.aboutRange, "about the fd, not a range")
            XCTAssertTrue(refusal.message.contains("uid 65534 does not own this file (its owner is uid 1000)"), refusal.message)
            XCTAssertTrue(refusal.message.contains("lease-others-uids / lease-others-groups"), refusal.message)
            XCTAssertNoThrow(try plan(owned, .readOnly, [.read], device: device, lessee: Lessee(uid: 1000, mayLeaseOthers: false)).get())
            XCTAssertNoThrow(try plan(owned, .readOnly, [.read], device: device, lessee: Lessee(uid: 65534, mayLeaseOthers: true)).get())
        }
        // Before the range and the device: a client learns the rule first.
        guard case .failure(let first) = plan(owned, .readOnly, [.read], device: nil, offset: 100, lessee: Lessee(uid: 65534, mayLeaseOthers: false)) else {
            return XCTFail("planned")
        }
        XCTAssertEqual(first.code, .accessDenied)
    }

    func testRootAndTheListedUIDsAndGroupsMayLeaseOthersFilesNobodyElse() {
        let rule = LeaseOthersRule(uids: [1000], groups: [109])
        XCTAssertTrue(rule.allows(uid: 0, groups: []))
        XCTAssertTrue(rule.allows(uid: 1000, groups: []))
        XCTAssertTrue(rule.allows(uid: 1001, groups: [1001, 109]))
        XCTAssertFalse(rule.allows(uid: 1001, groups: [1001]))
        XCTAssertFalse(LeaseOthersRule().allows(uid: 1000, groups: [109]))
    }

    func testAnAnonymousInodeIsNotARegularFile() {
        guard case .failure(let refusal) = plan(file(.pageCache, size: 0, kind: .anonymousInode, filesystem: "anon_inodefs"), .readWrite, [.read], device: nil) else {
            return XCTFail("planned")
        }
        XCTAssertEqual(refusal.code, .notRegularFile)
    }

    // MARK: Refusals of the request itself, whatever the device

    func testRequestRefusalsHaveTheirCodeAndSayWhatToDo() {
        struct Row {
            var file: PlannedFile, mode: OpenMode, access: RegionAccess, offset: UInt64, length: UInt64
            var code: RefusalCode, says: String
        }
        let rows: [Row] = [
            Row(file: file(.pageCache, kind: .fifo), mode: .readWrite, access: [.read], offset: 0, length: 4096, code: .notRegularFile, says: "fifo, not a regular file"),
            Row(file: file(.pageCache, kind: .directory), mode: .readOnly, access: [.read], offset: 0, length: 4096, code: .notRegularFile, says: "directory"),
            Row(file: file(.pageCache, filesystem: "proc"), mode: .readOnly, access: [.read], offset: 0, length: 4096, code: .notRegularFile, says: "proc, a pseudo filesystem"),
            Row(file: file(.pageCache), mode: .path, access: [.read], offset: 0, length: 4096, code: .accessDenied, says: "O_PATH"),
            Row(file: file(.pageCache), mode: .writeOnly, access: [.read], offset: 0, length: 4096, code: .accessDenied, says: "O_WRONLY"),
            Row(file: file(.fsDAX), mode: .readOnly, access: [.read, .write], offset: 0, length: 4096, code: .accessDenied, says: "needs an fd opened O_RDWR"),
            Row(file: file(.shmem), mode: .readOnly, access: [.atomic], offset: 0, length: 4096, code: .accessDenied, says: "needs an fd opened O_RDWR"),
            Row(file: file(.pageCache), mode: .readWrite, access: [.read], offset: 100, length: 4096, code: .badAlignment, says: "offset 100 is not a multiple of the page size (4096)"),
            Row(file: file(.pageCache), mode: .readWrite, access: [.read], offset: 0, length: 0, code: .rangeOutOfFile, says: "extend the file first"),
            Row(file: file(.pageCache, size: 8192), mode: .readWrite, access: [.read], offset: 8192, length: 4096, code: .rangeOutOfFile, says: "[8192, 12288)"),
            Row(file: file(.pageCache, size: 8192), mode: .readWrite, access: [.read], offset: 4096, length: 8192, code: .rangeOutOfFile, says: "size 8192"),
            // offset + length passes 2^64: still range-out-of-file, and nothing overflows.
            Row(file: file(.pageCache), mode: .readWrite, access: [.read], offset: 4096, length: UInt64.max, code: .rangeOutOfFile, says: "not inside the file"),
        ]
        for (index, row) in rows.enumerated() {
            for device in [nil, Self.rxe61, Self.rxe7] {
                guard case .failure(let refusal) = plan(row.file, row.mode, row.access, device: device, offset: row.offset, length: row.length) else {
                    XCTFail("row \(index): expected \(row.code)"); continue
                }
                XCTAssertEqual(refusal.code, row.code, "row \(index)")
                XCTAssertTrue(refusal.message.contains(row.says), "row \(index): \(refusal.message)")
            }
        }
    }

    // MARK: Plans: what is tried, in which order, and why the rest is not

    func testODPComesFirstWhereTheDevicesRCODPCoversTheAccess() throws {
        let plan = try plan(file(.fsDAX), .readWrite, [.read, .write], device: Self.rxe7).get()
        XCTAssertEqual(plan.attempts.map(\.strategy), [.odp, .pinned])
        XCTAssertEqual(plan.attempts.map(\.kind), [.odp, .pinnedWrite])
        XCTAssertEqual(plan.attempts[0].reason, "rxe0 RC ODP covers read,write")
        XCTAssertTrue(plan.skipped.isEmpty)
        XCTAssertTrue(plan.writableFD)
    }

    func testWithoutODPOnlyPinnedIsTriedAndTheGapIsKept() throws {
        let plan = try plan(file(.pageCache), .readWrite, [.read, .write], device: Self.rxe61).get()
        XCTAssertEqual(plan.attempts.map(\.strategy), [.pinned])
        XCTAssertEqual(plan.skipped.map(\.kind), [.odp])
        guard case .notTried(let why) = plan.skipped[0].outcome else { return XCTFail("\(plan.skipped)") }
        XCTAssertEqual(why, "rxe0 has no ODP support (general ODP caps lack ODP_SUPPORT)")
    }

    func testReadOnlyAccessOnAReadOnlyFDPlansAReadOnlyPin() throws {
        let plan = try plan(file(.pageCache), .readOnly, [.read], device: Self.rxe61).get()
        XCTAssertEqual(plan.attempts.map(\.kind), [.pinnedReadOnly])
        XCTAssertFalse(plan.writableFD)
    }

    func testAPreferenceLimitsThePlanToThatStrategy() throws {
        XCTAssertEqual(try plan(file(.pageCache), .readWrite, [.read], device: Self.rxe7, preference: .pinned).get().attempts.map(\.strategy), [.pinned])
        let odpOnly = try plan(file(.pageCache), .readWrite, [.read], device: Self.rxe61, preference: .odp).get()
        XCTAssertTrue(odpOnly.attempts.isEmpty)
        guard case .failure(let refusal) = odpOnly.decide(trials: []) else { return XCTFail("ODP on a device without it decided") }
        XCTAssertEqual(refusal.code, .strategyUnavailable)
        XCTAssertTrue(refusal.message.contains("no ODP support"), refusal.message)
    }

    func testTryingFirstAndOnlyReorderAndNarrow() throws {
        let plan = try plan(file(.pageCache), .readWrite, [.read, .write], device: Self.rxe7).get()
        XCTAssertEqual(plan.trying(first: .pinned).attempts.map(\.strategy), [.pinned, .odp])
        XCTAssertEqual(plan.trying(first: .odp).attempts.map(\.strategy), [.odp, .pinned])
        XCTAssertEqual(plan.only(.pinned).attempts.map(\.strategy), [.pinned])
        XCTAssertEqual(plan.only(.pinned).preference, .pinned)
    }

    // MARK: Decisions from the kernel's answers

    /// (backing, device, the kernel's answer to each attempt) → strategy or refusal.
    func testDecisionsFromTheKernelsAnswers() throws {
        struct Row {
            var backing: Backing, device: DeviceCapabilities, access: RegionAccess
            var answers: [TrialOutcome]
            var strategy: Strategy?, errno: Errno?, says: String
        }
        let refusedPin = TrialOutcome.failed(op: "ibv_reg_mr", errno: .notSupported)
        let efault = TrialOutcome.failed(op: "ibv_reg_mr", errno: .badAddress)
        let rows: [Row] = [
            // 6.1 + rxe: FS-DAX cannot be pinned and there is no ODP.
            Row(backing: .fsDAX, device: Self.rxe61, access: [.read, .write], answers: [refusedPin], strategy: nil, errno: .notSupported,
                says: "never long-term pins FS-DAX pages"),
            // 6.1 + rxe: page cache is pinned, because there is no ODP.
            Row(backing: .pageCache, device: Self.rxe61, access: [.read, .write], answers: [.registered], strategy: .pinned, errno: nil,
                says: "no ODP: rxe0 has no ODP support"),
            // 7.x + rxe: ODP on FS-DAX.
            Row(backing: .fsDAX, device: Self.rxe7, access: [.read, .write], answers: [.registered], strategy: .odp, errno: nil,
                says: "RC ODP covers read,write"),
            // 7.x: ODP refused at the kernel, pinned page cache refused for write (6.5+).
            Row(backing: .pageCache, device: Self.rxe7, access: [.read, .write], answers: [.failed(op: "ibv_reg_mr", errno: .invalidArgument), efault],
                strategy: nil, errno: .badAddress, says: "refuses writable long-term pins of file-backed page-cache pages"),
            // A device whose ODP lacks write: pinned is the only try, and its EFAULT is explained.
            Row(backing: .pageCache, device: Self.readODPOnly, access: [.read, .write], answers: [efault], strategy: nil, errno: .badAddress,
                says: "RC ODP lacks WRITE (has READ)"),
            // The same device serves read-only regions from ODP.
            Row(backing: .pageCache, device: Self.readODPOnly, access: [.read], answers: [.registered], strategy: .odp, errno: nil,
                says: "mlx5_0 RC ODP covers read"),
            // shmem is always pinnable.
            Row(backing: .shmem, device: Self.rxe61, access: [.read, .write, .atomic], answers: [.registered], strategy: .pinned, errno: nil,
                says: "pinned registration on shmem succeeded"),
            // A writable pin of shmem that faults: no read-only mapping to blame (a 256 MiB tmpfs
            // refused a 1 GiB region this way on 6.1).
            Row(backing: .shmem, device: Self.rxe61, access: [.read, .write], answers: [efault], strategy: nil, errno: .badAddress,
                says: "could not be faulted in for writing (a tmpfs past its size= limit"),
        ]
        for (index, row) in rows.enumerated() {
            let plan = try plan(file(row.backing), .readWrite, row.access, device: row.device).get()
            let trials = zip(plan.attempts, row.answers).map { Trial(kind: $0.kind, flags: "", outcome: $1) }
            switch plan.decide(trials: trials) {
            case .success(let (strategy, reason)):
                XCTAssertEqual(strategy, row.strategy, "row \(index): \(reason)")
                XCTAssertTrue(reason.contains(row.says), "row \(index): \(reason)")
            case .failure(let refusal):
                XCTAssertNil(row.strategy, "row \(index): refused: \(refusal.message)")
                XCTAssertEqual(refusal.code, .strategyUnavailable, "row \(index)")
                XCTAssertEqual(refusal.errno, row.errno, "row \(index)")
                XCTAssertTrue(refusal.message.contains(row.says), "row \(index): \(refusal.message)")
            }
        }
    }

    func testWithoutADeviceThePlanValidatesAndThenRefusesWithENODEV() throws {
        let plan = try plan(file(.pageCache), .readWrite, [.read], device: nil).get()
        XCTAssertTrue(plan.attempts.isEmpty)
        guard case .failure(let refusal) = plan.decide(trials: []) else { return XCTFail("decided without a device") }
        XCTAssertEqual(refusal.code, .strategyUnavailable)
        XCTAssertEqual(refusal.errno, .operationNotSupportedByDevice)
        XCTAssertEqual(refusal.message, "no RDMA device: test")
    }

    func testOnlyTheKernelsRefusalsOfAKindFallThrough() {
        XCTAssertTrue(RegistrationPlan.fallsThrough(.notSupported))
        XCTAssertTrue(RegistrationPlan.fallsThrough(.badAddress))
        XCTAssertTrue(RegistrationPlan.fallsThrough(.invalidArgument))
        XCTAssertFalse(RegistrationPlan.fallsThrough(.noMemory))
        XCTAssertFalse(RegistrationPlan.fallsThrough(.permissionDenied))
    }
}

/// The deadline heap the engine and the daemon keep their timers in.
final class DeadlineHeapTests: XCTestCase {
    func testPopsDueEntriesEarliestFirstAndKeepsTheRest() {
        var heap = DeadlineHeap<String>()
        for (deadline, key) in [(50, "e"), (10, "a"), (40, "d"), (20, "b"), (30, "c")] { heap.schedule(key, at: UInt64(deadline)) }
        XCTAssertEqual(heap.earliest, 10)
        XCTAssertEqual(heap.popDue(now: 35).map(\.key), ["a", "b", "c"])
        XCTAssertEqual(heap.earliest, 40)
        XCTAssertEqual(heap.popDue(now: 39).count, 0)
        XCTAssertEqual(heap.popDue(now: .max).map(\.key), ["d", "e"])
        XCTAssertTrue(heap.isEmpty)
    }

    func testCancelRemovesEveryEntryOfAKeyAndTheRestStillPopInOrder() {
        var heap = DeadlineHeap<String>()
        for (deadline, key) in [(50, "x"), (10, "a"), (40, "x"), (20, "b"), (5, "x"), (30, "c")] { heap.schedule(key, at: UInt64(deadline)) }
        heap.cancel("x")
        XCTAssertEqual(heap.count, 3)
        XCTAssertEqual(heap.popDue(now: .max).map(\.key), ["a", "b", "c"])
    }
}
