import XCTest

@testable import MRLeasePolicy

final class FileLifecycleTests: XCTestCase {
    let r1 = RegionID(1), r2 = RegionID(2)
    let ms: UInt64 = 1_000_000

    func testBreakNotifiesOwnersAndRevokesOnceAllAck() {
        var file = FileLifecycle(regions: [r1, r2])
        XCTAssertEqual(file.handle(.leaseBroken(now: 0)),
                       [.notifyRevoking([r1, r2], deadline: 100 * ms, cause: .leaseBreak), .armTimer(at: 100 * ms)])
        XCTAssertEqual(file.handle(.acknowledged(count: 1, now: 1 * ms)), [])
        XCTAssertEqual(file.handle(.acknowledged(count: 1, now: 2 * ms)),
                       [.watchCloses, .revoke, .notifyRevoked([r1, r2]), .armTimer(at: 502 * ms)])
        XCTAssertEqual(file.phase, .released(attempt: 0, nextAttempt: 502 * ms))
    }

    /// Acks for several regions in one event: the revocation runs when none is left waiting.
    /// Which regions are acked is the engine's to know: the lifecycle counts them.
    func testAcksOfSeveralRegionsAtOnceRevokeWhenTheLastIsIn() {
        let r3 = RegionID(3)
        var file = FileLifecycle(regions: [r1, r2, r3])
        _ = file.handle(.leaseBroken(now: 0))
        XCTAssertEqual(file.handle(.acknowledged(count: 2, now: 1 * ms)), [])
        XCTAssertEqual(file.phase, .revoking(deadline: 100 * ms, awaiting: 1))
        XCTAssertEqual(file.handle(.acknowledged(count: 0, now: 2 * ms)), [], "no outstanding ack among them")
        XCTAssertEqual(file.handle(.acknowledged(count: 1, now: 2 * ms)),
                       [.watchCloses, .revoke, .notifyRevoked([r1, r2, r3]), .armTimer(at: 502 * ms)])
        XCTAssertEqual(file.handle(.acknowledged(count: 1, now: 3 * ms)), [], "a late ack changes nothing")
    }

    /// A miscount (more acks than were outstanding) ends the wait; it never leaves it waiting
    /// for a count below zero.
    func testMoreAcksThanOutstandingEndTheWait() {
        var file = FileLifecycle(regions: [r1, r2])
        _ = file.handle(.leaseBroken(now: 0))
        XCTAssertEqual(file.handle(.acknowledged(count: 3, now: 1 * ms)).dropFirst().first, .revoke)
    }

    /// A layout change through the leased open file description breaks no lease: the MRs
    /// already disagree with the file, so they go at once (no quiesce) and the restore is
    /// tried at once (nobody holds a conflicting open to wait for).
    func testLayoutChangeRevokesWithoutQuiesceAndRestoresAtOnce() {
        var file = FileLifecycle(regions: [r1, r2])
        XCTAssertEqual(file.handle(.layoutChanged(now: 5 * ms)),
                       [.notifyRevoking([r1, r2], deadline: 5 * ms, cause: .layoutChanged),
                        .watchCloses, .revoke, .notifyRevoked([r1, r2]), .attemptRestore])
        XCTAssertEqual(file.phase, .released(attempt: 0, nextAttempt: .max))
        XCTAssertEqual(file.handle(.acknowledged(count: 1, now: 6 * ms)), [], "a late ack changes nothing")
        XCTAssertEqual(file.handle(.restored(lost: [:])), [.notifyRestored([r1, r2])])
        XCTAssertEqual(file.phase, .leased)
    }

    func testLayoutChangeWhileTheFileIsBusyBacksOffLikeABreak() {
        var file = FileLifecycle(regions: [r1])
        _ = file.handle(.layoutChanged(now: 0))
        XCTAssertEqual(file.handle(.restoreBusy(now: 1 * ms)), [.armTimer(at: 1001 * ms)])
        XCTAssertEqual(file.handle(.closed(now: 2 * ms)), [.attemptRestore])
    }

    func testLayoutChangeDuringAQuiesceEndsTheQuiesce() {
        var file = FileLifecycle(regions: [r1])
        _ = file.handle(.leaseBroken(now: 0))
        XCTAssertEqual(file.handle(.layoutChanged(now: 10 * ms)),
                       [.watchCloses, .revoke, .notifyRevoked([r1]), .armTimer(at: 510 * ms)])
    }

    func testLayoutChangeOfAReleasedFileChangesNothing() {
        var file = FileLifecycle(regions: [r1])
        _ = file.handle(.leaseBroken(now: 0))
        _ = file.handle(.acknowledged(count: 1, now: 0))
        XCTAssertEqual(file.handle(.layoutChanged(now: 1 * ms)), [], "the restore reads the layout anyway")
    }

    func testSilentOwnersCannotHoldTheBreakPastTheDeadline() {
        var file = FileLifecycle(regions: [r1])
        _ = file.handle(.leaseBroken(now: 0))
        XCTAssertEqual(file.handle(.timer(now: 99 * ms)), [], "an early timer must not revoke")
        XCTAssertEqual(file.handle(.timer(now: 100 * ms)).dropFirst().first, .revoke)
    }

    func testDuplicateBreakSignalsAndLateAcksChangeNothing() {
        var file = FileLifecycle(regions: [r1])
        _ = file.handle(.leaseBroken(now: 0))
        XCTAssertEqual(file.handle(.leaseBroken(now: 1)), [])
        _ = file.handle(.acknowledged(count: 1, now: 2))
        XCTAssertEqual(file.handle(.acknowledged(count: 1, now: 3)), [])
        XCTAssertEqual(file.handle(.leaseBroken(now: 4)), [])
    }

    func testBusyFileBacksOffExponentiallyUpToTheCap() {
        var file = FileLifecycle(regions: [r1], timing: .init(quiesce: 100 * ms, initialBackoff: 10 * ms, maxBackoff: 50 * ms))
        _ = file.handle(.leaseBroken(now: 0))
        _ = file.handle(.acknowledged(count: 1, now: 0))
        XCTAssertEqual(file.handle(.timer(now: 10 * ms)), [.attemptRestore])
        XCTAssertEqual(file.handle(.restoreBusy(now: 10 * ms)), [.armTimer(at: 30 * ms)])
        XCTAssertEqual(file.handle(.timer(now: 30 * ms)), [.attemptRestore])
        XCTAssertEqual(file.handle(.restoreBusy(now: 30 * ms)), [.armTimer(at: 70 * ms)])
        _ = file.handle(.timer(now: 70 * ms))
        XCTAssertEqual(file.handle(.restoreBusy(now: 70 * ms)), [.armTimer(at: 120 * ms)], "capped at 50 ms")
    }

    func testCloseEventRestoresWithoutWaitingForTheTimer() {
        var file = FileLifecycle(regions: [r1])
        _ = file.handle(.leaseBroken(now: 0))
        _ = file.handle(.acknowledged(count: 1, now: 0))
        XCTAssertEqual(file.handle(.closed(now: 1)), [.attemptRestore])
        XCTAssertEqual(file.handle(.restored(lost: [:])), [.notifyRestored([r1])])
        XCTAssertEqual(file.phase, .leased)
    }

    func testTruncationBelowARegionLosesOnlyThatRegion() {
        var file = FileLifecycle(regions: [r1, r2])
        _ = file.handle(.leaseBroken(now: 0))
        _ = file.handle(.timer(now: 100 * ms))
        _ = file.handle(.timer(now: 600 * ms))
        XCTAssertEqual(file.handle(.restored(lost: [r2: .rangeTruncated])),
                       [.notifyRestored([r1]), .notifyLost([r2: .rangeTruncated])])
        XCTAssertEqual(file.regions, [r1])
        XCTAssertEqual(file.phase, .leased)
    }

    func testUnlinkedFileLosesEveryRegion() {
        var file = FileLifecycle(regions: [r1, r2])
        _ = file.handle(.leaseBroken(now: 0))
        _ = file.handle(.timer(now: 100 * ms))
        XCTAssertEqual(file.handle(.gone(reason: .unlinked)), [.notifyLost([r1: .unlinked, r2: .unlinked])])
        XCTAssertEqual(file.phase, .lost)
    }

    /// A region deregistered while its ack is outstanding stops being waited for; one whose
    /// ack came already (`awaited: false`) changes nothing.
    func testDeregisteringTheLastAwaitedRegionRevokesAtOnce() {
        let r3 = RegionID(3)
        var file = FileLifecycle(regions: [r1, r2, r3])
        _ = file.handle(.leaseBroken(now: 0))
        _ = file.handle(.acknowledged(count: 2, now: 1))  // r1's and r3's
        XCTAssertEqual(file.remove(r1, awaited: false, now: 2), [])
        XCTAssertTrue(file.remove(r2, awaited: true, now: 2).contains(.revoke))
        XCTAssertEqual(file.regions, [r3])
    }
}
