import CLinux
import Foundation
import LinuxFile
import SystemPackage
import XCTest

/// Leases against real breakers: other processes opening or truncating the file.
///
/// Every test blocks the break signal and SIGIO in this (the test) thread through a SignalFD
/// before it takes a lease, and the lease aims its signal at this thread: an unblocked
/// real-time signal would kill the test process.
final class FileLeaseTests: XCTestCase {
    var scratch: Scratch!
    var signals: SignalFD!

    override func setUpWithError() throws {
        scratch = try Scratch()
        signals = try SignalFD(signals: [FileLease.breakSignal, SIGIO])
        _ = try signals.read()  // a break left queued by an earlier test is not ours
    }

    override func tearDownWithError() throws {
        try signals.close()
        signals = nil
        scratch = nil
    }

    /// Waits for the break signal naming `fd`; fails the test when none comes.
    func expectBreak(
        on fd: FileDescriptor, file: StaticString = #filePath, line: UInt = #line
    ) throws -> SignalInfo? {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            for info in try signals.wait(timeout: .milliseconds(200)) where info.fd == fd.rawValue {
                return info
            }
        }
        XCTFail("no lease-break signal for fd \(fd.rawValue) within 5 s", file: file, line: line)
        return nil
    }

    /// Releases the lease and measures how long the blocked breaker still takes to exit.
    func releaseAndFinish(_ lease: FileLease, _ child: Child, _ label: String) throws -> Int32 {
        XCTAssertTrue(child.isRunning, "\(label) should still be blocked by the lease")
        let released = ContinuousClock.now
        try lease.release()
        let status = child.finish()
        let afterRelease = released.duration(to: .now)
        let total = child.started.duration(to: .now)
        print("[measure] \(label): exited \(afterRelease) after release, \(total) after start")
        XCTAssertLessThan(total, .seconds(10), "the breaker must not wait for lease-break-time")
        return status
    }

    func testTruncateBreaksWriteLeaseAndSignalNamesTheFd() throws {
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let lease = FileLease(fd: fd)
        try lease.acquire(.write)
        XCTAssertEqual(try lease.current(), .write)

        // truncate(2) (perl's truncate) blocks in break_lease until we let go.
        let child = try Child("/usr/bin/perl", ["-e", "truncate($ARGV[0], 0) or die qq($!)", path])
        let info = try XCTUnwrap(try expectBreak(on: fd))
        XCTAssertEqual(info.signal, FileLease.breakSignal)
        XCTAssertEqual(info.fd, fd.rawValue)
        XCTAssertNil(try lease.current(), "a truncate asks for the lease to go, not a downgrade")

        // The file's size shows the truncate landing, without Foundation's wait granularity.
        XCTAssertEqual(try fileSize(path), 12, "the truncate waits for the lease")
        let released = ContinuousClock.now
        try lease.release()
        while try fileSize(path) != 0, released.duration(to: .now) < .seconds(10) {
            usleep(200)
        }
        print("[measure] truncate(2) landed \(released.duration(to: .now)) after release")
        XCTAssertEqual(child.finish(), 0)
        XCTAssertLessThan(child.started.duration(to: .now), .seconds(10))
        XCTAssertEqual(try fileSize(path), 0)
    }

    func testTruncateToolOpensNonblockingSoItFailsFastButStillBreaksTheLease() throws {
        // coreutils truncate opens O_WRONLY|O_CREAT|O_NONBLOCK: break_lease then starts the
        // break and fails the open with EWOULDBLOCK instead of waiting for us.
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let lease = FileLease(fd: fd)
        try lease.acquire(.write)

        let child = try Child("/usr/bin/truncate", ["-s", "0", path])
        let status = child.finish()
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(child.errors.contains("Resource temporarily unavailable"), child.errors)
        XCTAssertNotNil(try expectBreak(on: fd))
        XCTAssertNil(try lease.current())
        try lease.release()
        XCTAssertEqual(try fileSize(path), 12, "the failed truncate changed nothing")
    }

    func testReadOnlyOpenByAnotherProcessBreaksWriteLeaseToADowngrade() throws {
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let lease = FileLease(fd: fd)
        try lease.acquire(.write)

        let child = try Child("/bin/cat", [path])
        XCTAssertNotNil(try expectBreak(on: fd))
        XCTAssertEqual(try lease.current(), .read, "a reader asks for a downgrade")

        XCTAssertEqual(try releaseAndFinish(lease, child, "cat vs write lease"), 0)
        XCTAssertEqual(child.output, "hello lease\n")
    }

    func testOpenForWriteBreaksReadLease() throws {
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        let lease = FileLease(fd: fd)
        try lease.acquire(.read)
        XCTAssertEqual(try lease.current(), .read)

        let child = try Child("/bin/sh", ["-c", ": >> \"$1\"", "sh", path])
        XCTAssertNotNil(try expectBreak(on: fd))
        XCTAssertNil(try lease.current())

        XCTAssertEqual(try releaseAndFinish(lease, child, "open for append vs read lease"), 0)
    }

    func testTruncateBreaksReadLease() throws {
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        let lease = FileLease(fd: fd)
        try lease.acquire(.read)

        let child = try Child("/usr/bin/perl", ["-e", "truncate($ARGV[0], 0) or die qq($!)", path])
        XCTAssertNotNil(try expectBreak(on: fd))

        XCTAssertEqual(try releaseAndFinish(lease, child, "truncate(2) vs read lease"), 0)
        XCTAssertEqual(try fileSize(path), 0)
    }

    func testReadLeaseIsRefusedWhileWeHoldTheFileOpenForWrite() throws {
        let path = try scratch.file("data")
        let writer = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? writer.close() }
        XCTAssertErrno(.resourceTemporarilyUnavailable, try FileLease(fd: writer).acquire(.read))

        let reader = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? reader.close() }
        XCTAssertErrno(.resourceTemporarilyUnavailable, try FileLease(fd: reader).acquire(.read))

        try writer.close()
        try FileLease(fd: reader).acquire(.read)  // the writable fd was the only obstacle
        try FileLease(fd: reader).release()
    }

    func testWriteLeaseIsRefusedWhileASecondOpenExists() throws {
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let other = try FileDescriptor.open(FilePath(path), .readOnly)
        XCTAssertErrno(.resourceTemporarilyUnavailable, try FileLease(fd: fd).acquire(.write))

        try other.close()
        try FileLease(fd: fd).acquire(.write)
        XCTAssertEqual(try FileLease(fd: fd).current(), .write)
    }

    func testBreakSignalIsAimedAtTheAcquiringThread() throws {
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        try FileLease(fd: fd).acquire(.read)
        var type: Int32 = -1
        XCTAssertEqual(mrl_get_owner(fd.rawValue, &type), mrl_gettid())
        XCTAssertEqual(type, MRL_F_OWNER_TID)
        XCTAssertEqual(mrl_fcntl_noarg(fd.rawValue, 11 /* F_GETSIG */), FileLease.breakSignal)
        XCTAssertEqual(FileLease.breakSignal, mrl_sigrtmin() + 1)
    }

    func testReleaseLeavesNoLease() throws {
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        let lease = FileLease(fd: fd)
        try lease.acquire(.read)
        try lease.release()
        XCTAssertNil(try lease.current())
    }
}
