import LinuxFile
import SystemPackage
import Verbs
import XCTest

@testable import MRLeaseEngine

/// The decision alone, fed the answers KERNEL-FACTS measured on 6.1 and 7.x.
final class StrategyChooserTests: XCTestCase {
    let rxe61 = ODPCaps.none
    let rxe7 = ODPCaps(supported: true, implicit: false, rc: [.send, .recv, .write, .read, .atomic, .srqRecv])

    func trials(pinnedWrite: TrialOutcome, pinnedRead: TrialOutcome = .registered, odp: TrialOutcome) -> [Trial] {
        let access: RegionAccess = [.read, .write]
        return [
            Trial(kind: .pinnedWrite, flags: TrialKind.pinnedWrite.flags(for: access), outcome: pinnedWrite),
            Trial(kind: .pinnedReadOnly, flags: TrialKind.pinnedReadOnly.flags(for: access), outcome: pinnedRead),
            Trial(kind: .odp, flags: TrialKind.odp.flags(for: access), outcome: odp),
        ]
    }

    func testFSDAXOn61IsRefusedNamingEOPNOTSUPPAndMissingODP() {
        let decision = StrategyChooser.choose(
            device: "rxe0", odp: rxe61, backing: .fsDAX, access: [.read, .write],
            trials: trials(pinnedWrite: .failed(op: "ibv_reg_mr", errno: .notSupported),
                           odp: .failed(op: "ibv_reg_mr", errno: .invalidArgument)))
        guard case .refuse(let refusal) = decision else { return XCTFail("expected a refusal, got \(decision)") }
        XCTAssertEqual(refusal.errno, .notSupported)
        XCTAssertEqual(refusal.code, "strategy-unavailable")
        XCTAssertTrue(refusal.message.contains("EOPNOTSUPP"), refusal.message)
        XCTAssertTrue(refusal.message.contains("no ODP support"), refusal.message)
        XCTAssertTrue(refusal.message.contains("never long-term pins FS-DAX"), refusal.message)
    }

    func testFSDAXOn7UsesODP() {
        let decision = StrategyChooser.choose(
            device: "rxe0", odp: rxe7, backing: .fsDAX, access: [.read, .write],
            trials: trials(pinnedWrite: .failed(op: "ibv_reg_mr", errno: .notSupported), odp: .registered))
        XCTAssertEqual(decision.strategy, .odp)
    }

    func testWritablePageCacheOn61IsPinnedBecauseNoODP() {
        let decision = StrategyChooser.choose(
            device: "rxe0", odp: rxe61, backing: .pageCache, access: [.read, .write],
            trials: trials(pinnedWrite: .registered, odp: .failed(op: "ibv_reg_mr", errno: .invalidArgument)))
        guard case .use(.pinned, let reason) = decision else { return XCTFail("expected pinned, got \(decision)") }
        XCTAssertTrue(reason.contains("no ODP support"), reason)
    }

    func testWritablePageCacheRefusedWithEFAULTExplainedWhenODPLacksWrite() {
        let readOnlyODP = ODPCaps(supported: true, implicit: false, rc: [.read])
        let decision = StrategyChooser.choose(
            device: "mlx5_0", odp: readOnlyODP, backing: .pageCache, access: [.read, .write],
            trials: trials(pinnedWrite: .failed(op: "ibv_reg_mr", errno: .badAddress), odp: .registered))
        guard case .refuse(let refusal) = decision else { return XCTFail("expected a refusal, got \(decision)") }
        XCTAssertEqual(refusal.errno, .badAddress)
        XCTAssertTrue(refusal.message.contains("EFAULT"), refusal.message)
        XCTAssertTrue(refusal.message.contains("RC ODP lacks WRITE"), refusal.message)
    }

    func testReadOnlyAccessNeverAsksForRemoteWrite() {
        let access: RegionAccess = [.read]
        XCTAssertEqual(access.verbsFlags, [.remoteRead])
        XCTAssertFalse(TrialKind.odp.flags(for: access).contains(.remoteWrite))
        XCTAssertFalse(TrialKind.pinnedReadOnly.flags(for: access).contains(.localWrite))
        XCTAssertEqual(TrialKind.odp.flags(for: access), [.remoteRead, .onDemand])
    }

    func testWriteAndAtomicAccessCarryLocalWrite() {
        XCTAssertEqual(RegionAccess.write.verbsFlags, [.remoteWrite, .localWrite])
        XCTAssertEqual(RegionAccess.atomic.verbsFlags, [.remoteAtomic, .localWrite])
        XCTAssertEqual(RegionAccess([.read, .atomic]).requiredODP, [.read, .atomic])
    }

    func testPreferencePinnedRefusesWhenOnlyODPWorks() {
        let decision = StrategyChooser.choose(
            device: "rxe0", odp: rxe7, backing: .fsDAX, access: [.read, .write],
            trials: trials(pinnedWrite: .failed(op: "ibv_reg_mr", errno: .notSupported), odp: .registered),
            preference: .pinned)
        guard case .refuse(let refusal) = decision else { return XCTFail("expected a refusal, got \(decision)") }
        XCTAssertTrue(refusal.message.contains("ODP would work"), refusal.message)
    }

    func testAccessNamesParseAndRejectUnknownWords() {
        XCTAssertEqual(RegionAccess(names: "read,write"), [.read, .write])
        XCTAssertEqual(RegionAccess(names: "atomic"), [.atomic])
        XCTAssertNil(RegionAccess(names: "read,exec"))
        XCTAssertNil(RegionAccess(names: ""))
    }
}
