import CLinux
import Foundation
import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import TestSupport
import XCTest

@testable import MRLeaseDaemon

/// Decide once: the doctor, the engine and the daemon refuse the same input with the same
/// code, because all three ask the one registration plan.
final class SameRefusalTests: XCTestCase {
    func testDoctorEngineAndDaemonRefuseTheSameInputWithTheSameCode() throws {
        let scratch = try ScratchDirectory(in: Facility.ext4.value)
        let fifo = scratch.path + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let empty = try scratch.file("empty", size: 0)
        let inputs: [(path: String, code: RefusalCode)] = [
            (scratch.path, .notRegularFile),
            (fifo, .notRegularFile),
            ("/proc/self/status", .notRegularFile),
            (empty, .rangeOutOfFile),
        ]
        let daemon = try InProcessDaemon()
        let client = try daemon.connect()
        let engine = try Engine(registrar: RecordingRegistrar())
        for (path, code) in inputs {
            let doctor = Doctor(access: [.read]).run(paths: [path]).files[0]
            XCTAssertEqual(doctor.refusalCode, code.rawValue, "doctor, \(path): \(doctor.error ?? doctor.refusal ?? "no refusal")")

            let fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.nonBlocking])
            defer { try? fd.close() }
            XCTAssertThrowsError(try engine.register(owner: OwnerID(1), fd: fd, offset: 0, length: 4096, access: [.read])) { error in
                guard case .refused(let refusal) = error as? EngineError else { return XCTFail("engine, \(path): \(error)") }
                XCTAssertEqual(refusal.code, code, "engine, \(path)")
            }
            XCTAssertThrowsError(try client.request(.register(.init(offset: 0, length: 4096, access: [.read])), fd: fd)) { error in
                XCTAssertEqual((error as? ProtocolError)?.code.rawValue, code.rawValue, "daemon, \(path): \(error)")
            }
        }
        XCTAssertEqual(engine.indexProblems(), [])
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }
}

/// epoll and eventfd fds are anonymous inodes: statx gives them no file type bits, which must
/// not read as a regular file (and then be refused for the range instead).
final class AnonymousInodeTests: XCTestCase {
    func testEpollAndEventfdFDsAreRefusedAsNotRegularFiles() throws {
        let daemon = try InProcessDaemon()
        let client = try daemon.connect()
        for (name, raw) in [("epoll", epoll_create1(Int32(EPOLL_CLOEXEC))), ("eventfd", eventfd(0, Int32(EFD_CLOEXEC)))] {
            XCTAssertGreaterThanOrEqual(raw, 0, name)
            let fd = FileDescriptor(rawValue: raw)
            defer { try? fd.close() }
            XCTAssertThrowsError(try client.request(.register(.init(offset: 0, length: 4096, access: [.read])), fd: fd)) { error in
                XCTAssertEqual((error as? ProtocolError)?.code, .notRegularFile, "\(name): \(error)")
            }
        }
    }
}
