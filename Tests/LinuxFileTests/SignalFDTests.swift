import CLinux
import Foundation
import LinuxFile
import SystemPackage
import XCTest

final class SignalFDTests: XCTestCase {
    func testSignalSentToThisThreadIsReadWithItsSender() throws {
        let signal = FileLease.breakSignal
        let signals = try SignalFD(signals: [signal, SIGIO])
        defer { try? signals.close() }
        _ = try signals.read()
        XCTAssertEqual(mrl_signal_is_blocked(signal), 1, "init blocks the signals in this thread")
        XCTAssertEqual(mrl_signal_is_blocked(SIGIO), 1)
        XCTAssertEqual(try signals.read(), [], "nothing pending reads as empty, not EAGAIN")

        // Unblocked, this real-time signal would terminate the test process.
        XCTAssertEqual(mrl_tgkill(getpid(), mrl_gettid(), signal), 0)
        XCTAssertEqual(mrl_tgkill(getpid(), mrl_gettid(), signal), 0)
        let infos = try signals.wait(timeout: .seconds(2))
        XCTAssertEqual(infos.count, 2, "real-time signals queue: none merged")
        XCTAssertEqual(infos.first?.signal, signal)
        XCTAssertEqual(infos.first?.pid, getpid())
        XCTAssertEqual(infos.first?.code, -6, "SI_TKILL")
        XCTAssertEqual(try signals.read(), [])
    }

    func testWaitTimesOutEmpty() throws {
        let signals = try SignalFD(signals: [FileLease.breakSignal, SIGIO])
        defer { try? signals.close() }
        _ = try signals.read()
        let start = ContinuousClock.now
        XCTAssertEqual(try signals.wait(timeout: .milliseconds(100)), [])
        XCTAssertGreaterThanOrEqual(start.duration(to: .now), .milliseconds(100))
    }

    func testCloseIsIdempotentAndReleasesTheDescriptor() throws {
        let before = try openDescriptorCount()
        let signals = try SignalFD(signals: [SIGIO])
        XCTAssertEqual(try openDescriptorCount(), before + 1)
        try signals.close()
        try signals.close()
        XCTAssertEqual(try openDescriptorCount(), before)
    }
}
