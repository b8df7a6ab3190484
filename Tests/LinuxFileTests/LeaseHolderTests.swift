import Foundation
import LinuxFile
import SystemPackage
import XCTest

/// Who holds a lease (fdinfo), whether a process still runs (/proc/<pid>/stat), and releasing
/// a lease that is not there: what a client needs to clean up after a daemon that died.
final class LeaseHolderTests: XCTestCase {
    func testFdinfoLeaseLinesGiveTheHolderPidAndState() {
        let active = "pos:\t0\nflags:\t02120002\nmnt_id:\t27\nino:\t16278385\nlock:\t1: LEASE  ACTIVE    WRITE 3033 fe:00:16278385 0 EOF\n"
        XCTAssertEqual(LeaseHolder(fdinfo: active), LeaseHolder(pid: 3033, state: "ACTIVE"))
        let breaking = "pos:\t0\nlock:\t1: POSIX  ADVISORY  WRITE 12 fe:00:1 0 EOF\nlock:\t2: LEASE  BREAKING  UNLCK 0 fe:00:1 0 EOF\n"
        XCTAssertEqual(LeaseHolder(fdinfo: breaking), LeaseHolder(pid: 0, state: "BREAKING"))
        XCTAssertNil(LeaseHolder(fdinfo: "pos:\t0\nflags:\t02\nmnt_id:\t27\nino:\t5\n"))
    }

    func testAFileWithoutALeaseHasNoHolderAndReleasingItIsEAGAIN() throws {
        let scratch = try Scratch()
        let fd = try FileDescriptor.open(FilePath(try scratch.file("data")), .readWrite)
        defer { try? fd.close() }
        XCTAssertNil(try FileLease(fd: fd).holder())
        // Kernel fact (6.1, 7.x, host 6.18): F_SETLEASE F_UNLCK without a lease is EAGAIN.
        XCTAssertThrowsError(try FileLease(fd: fd).release()) { XCTAssertEqual($0 as? Errno, .resourceTemporarilyUnavailable) }
    }

    func testALeaseTakenByAChildOnASharedOpenFileOutlivesItAndAnyFdOfThatFileReleasesIt() throws {
        let scratch = try Scratch()
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        // The child inherits the fd (the same open file description) and leases it, as mrleased
        // leases the fd a client passes.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        child.arguments = ["-c", "import fcntl, signal, time; signal.signal(signal.SIGIO, signal.SIG_IGN); fcntl.fcntl(0, 1024, fcntl.F_WRLCK); print('leased', flush=True); time.sleep(600)"]
        let out = Pipe()
        child.standardOutput = out
        // Its stdin: Foundation closes the child's other inherited fds.
        child.standardInput = FileHandle(fileDescriptor: fd.rawValue, closeOnDealloc: false)
        try child.run()
        _ = out.fileHandleForReading.availableData  // "leased"
        XCTAssertEqual(try FileLease(fd: fd).holder(), LeaseHolder(pid: child.processIdentifier, state: "ACTIVE"))
        XCTAssertEqual(try ProcessState.of(pid: child.processIdentifier), .alive)

        kill(child.processIdentifier, SIGKILL)
        // A zombie (not reaped yet) has exited, though kill(pid, 0) still succeeds on it.
        var state = ProcessState.alive
        for _ in 0..<200 where state == .alive { usleep(5_000); state = try ProcessState.of(pid: child.processIdentifier) }
        XCTAssertEqual(state, .exited)
        child.waitUntilExit()
        XCTAssertEqual(try ProcessState.of(pid: child.processIdentifier), .exited)
        XCTAssertEqual(try FileLease(fd: fd).holder()?.pid, child.processIdentifier, "the lease stays with the open file")

        try FileLease(fd: fd).release()
        XCTAssertNil(try FileLease(fd: fd).holder())
    }

    func testThisProcessIsAliveAndAPidBeyondPidMaxHasExited() throws {
        XCTAssertEqual(try ProcessState.of(pid: getpid()), .alive)
        // pid_max is at most 2^22: no /proc entry, and kill(pid, 0) is ESRCH.
        XCTAssertEqual(try ProcessState.of(pid: 1 << 30), .exited)
    }
}
