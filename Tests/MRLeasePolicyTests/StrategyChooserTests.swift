import LinuxFile
import SystemPackage
import XCTest

@testable import MRLeasePolicy

/// The decision alone, fed the answers docs/kernel-matrix.md measured on 6.1 and 7.x.
final class StrategyChooserTests: XCTestCase {
    let rxe61 = DeviceCapabilities(name: "rxe0", odpSupported: false, odpRC: [], odpRCText: "none")
    let rxe7 = DeviceCapabilities(name: "rxe0", odpSupported: true, odpRC: [.read, .write, .atomic],
                                  odpRCText: "SEND,RECV,WRITE,READ,ATOMIC,SRQ_RECV")

    func trials(pinnedWrite: TrialOutcome, pinnedRead: TrialOutcome = .registered, odp: TrialOutcome) -> [Trial] {
        [
            Trial(kind: .pinnedWrite, flags: "LOCAL_WRITE|REMOTE_WRITE|REMOTE_READ", outcome: pinnedWrite),
            Trial(kind: .pinnedReadOnly, flags: "REMOTE_READ", outcome: pinnedRead),
            Trial(kind: .odp, flags: "LOCAL_WRITE|REMOTE_WRITE|REMOTE_READ|ON_DEMAND", outcome: odp),
        ]
    }

    func testFSDAXOn61IsRefusedNamingEOPNOTSUPPAndMissingODP() {
        let decision = StrategyChooser.choose(
            device: rxe61, backing: .fsDAX, access: [.read, .write],
            trials: trials(pinnedWrite: .failed(op: "ibv_reg_mr", errno: .notSupported),
                           odp: .failed(op: "ibv_reg_mr", errno: .invalidArgument)))
        guard case .refuse(let refusal) = decision else { return XCTFail("expected a refusal, got \(decision)") }
        XCTAssertEqual(refusal.errno, .notSupported)
        XCTAssertEqual(refusal.code, .strategyUnavailable)
        XCTAssertTrue(refusal.message.contains("EOPNOTSUPP"), refusal.message)
        XCTAssertTrue(refusal.message.contains("no ODP support"), refusal.message)
        XCTAssertTrue(refusal.message.contains("never long-term pins FS-DAX"), refusal.message)
    }

    func testFSDAXOn7UsesODP() {
        let decision = StrategyChooser.choose(
            device: rxe7, backing: .fsDAX, access: [.read, .write],
            trials: trials(pinnedWrite: .failed(op: "ibv_reg_mr", errno: .notSupported), odp: .registered))
        XCTAssertEqual(decision.strategy, .odp)
    }

    func testWritablePageCacheOn61IsPinnedBecauseNoODP() {
        let decision = StrategyChooser.choose(
            device: rxe61, backing: .pageCache, access: [.read, .write],
            trials: trials(pinnedWrite: .registered, odp: .failed(op: "ibv_reg_mr", errno: .invalidArgument)))
        guard case .use(.pinned, let reason) = decision else { return XCTFail("expected pinned, got \(decision)") }
        XCTAssertTrue(reason.contains("no ODP support"), reason)
    }

    func testWritablePageCacheRefusedWithEFAULTExplainedWhenODPLacksWrite() {
        let readOnlyODP = DeviceCapabilities(name: "mlx5_0", odpSupported: true, odpRC: [.read], odpRCText: "READ")
        let decision = StrategyChooser.choose(
            device: readOnlyODP, backing: .pageCache, access: [.read, .write],
            trials: trials(pinnedWrite: .failed(op: "ibv_reg_mr", errno: .badAddress), odp: .registered))
        guard case .refuse(let refusal) = decision else { return XCTFail("expected a refusal, got \(decision)") }
        XCTAssertEqual(refusal.errno, .badAddress)
        XCTAssertTrue(refusal.message.contains("EFAULT"), refusal.message)
        XCTAssertTrue(refusal.message.contains("RC ODP lacks WRITE"), refusal.message)
    }

    func testPreferencePinnedRefusesWhenOnlyODPWorks() {
        let decision = StrategyChooser.choose(
            device: rxe7, backing: .fsDAX, access: [.read, .write],
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
