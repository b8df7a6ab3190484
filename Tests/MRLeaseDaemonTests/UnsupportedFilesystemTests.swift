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

/// A file whose filesystem cannot show its extent map (FIEMAP) is refused with
/// `unsupported-filesystem`, by the doctor, the engine and the daemon alike; never `internal`.
final class UnsupportedFilesystemTests: XCTestCase {
    /// A regular file on a mounted 9p or FUSE filesystem (the vm-test guest's root is the
    /// host's / over 9p), or a skip naming what is missing.
    func fileWithoutFIEMAP() throws -> String {
        let mounts = try readProcFile("/proc/mounts").split(separator: "\n").map { $0.split(separator: " ") }
        let candidates = mounts.filter { $0.count > 2 && ($0[2] == "9p" || $0[2].hasPrefix("fuse")) }.map { String($0[1]) }
        // The daemon binary of this build: a regular file the test knows exists.
        let executable = RunningDaemon.executable
        guard candidates.contains(where: { executable.hasPrefix($0) }) else {
            throw XCTSkip("needs a file on a filesystem without FIEMAP (a 9p or FUSE mount, as the vm-test guest's root); mounts here: \(Set(mounts.compactMap { $0.count > 2 ? String($0[2]) : nil }).sorted())")
        }
        return executable
    }

    func testAFilesystemThatRefusesFIEMAPIsUnsupportedFilesystemFromTheDaemon() throws {
        // The seam answers as the kernel does for a filesystem without a fiemap operation.
        let daemon = try InProcessDaemon(extentReader: ExtentReader { _, _ throws(Errno) in throw .notSupported })
        let client = try daemon.connect()
        let path = try daemon.scratch.file("data", size: 8192)
        let fd = try FileDescriptor.open(path, .readWrite, options: .closeOnExec)
        defer { try? fd.close() }
        XCTAssertThrowsError(try client.request(.register(.init(offset: 0, length: 4096, access: [.read])), fd: fd)) { error in
            guard let error = error as? ProtocolError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.code, .unsupportedFilesystem, error.message)
            XCTAssertEqual(error.errnoName, "EOPNOTSUPP")
            XCTAssertTrue(error.message.contains("does not support FIEMAP"), error.message)
        }
        XCTAssertEqual(daemon.engine.statistics().files, 0, "nothing tracked")
        XCTAssertEqual(daemon.engine.indexProblems(), [])
    }

    func testAnotherFIEMAPFailureStaysInternalNamingTheOperation() throws {
        let daemon = try InProcessDaemon(extentReader: ExtentReader { _, _ throws(Errno) in throw .ioError })
        let client = try daemon.connect()
        let fd = try FileDescriptor.open(try daemon.scratch.file("data", size: 8192), .readWrite, options: .closeOnExec)
        defer { try? fd.close() }
        XCTAssertThrowsError(try client.request(.register(.init(offset: 0, length: 4096, access: [.read])), fd: fd)) { error in
            XCTAssertEqual((error as? ProtocolError)?.code, .internal)
            XCTAssertTrue("\(error)".contains("FS_IOC_FIEMAP"), "\(error)")
        }
    }

    func testDoctorEngineAndDaemonRefuseAFileOnA9pMountAlike() throws {
        let path = try fileWithoutFIEMAP()
        let doctor = Doctor(access: [.read]).run(paths: [path]).files[0]
        XCTAssertEqual(doctor.refusalCode, RefusalCode.unsupportedFilesystem.rawValue, "doctor: \(doctor.error ?? "no error")")
        XCTAssertTrue(doctor.error?.contains("does not support FIEMAP") == true, doctor.error ?? "")
        // The mount's type, not statfs's f_type (9p passes on the host's, ext4 here).
        let probe = try FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec)
        let mounted = try FileFacts.inspect(probe, mount: true).filesystem
        try probe.close()
        XCTAssertTrue(["9p"].contains(mounted) || mounted.hasPrefix("fuse"), mounted)
        XCTAssertTrue(doctor.error?.hasPrefix("\(mounted) does not support FIEMAP") == true, doctor.error ?? "")

        let fd = try FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec)
        defer { try? fd.close() }
        let engine = try Engine(registrar: RecordingRegistrar())
        XCTAssertThrowsError(try engine.register(owner: OwnerID(1), fd: fd, offset: 0, length: 4096, access: [.read])) { error in
            guard case .refused(let refusal) = error as? EngineError else { return XCTFail("engine: \(error)") }
            XCTAssertEqual(refusal.code, .unsupportedFilesystem)
            XCTAssertEqual(refusal.message, doctor.error, "one message, from one place")
        }
        XCTAssertEqual(engine.indexProblems(), [])

        let daemon = try InProcessDaemon()
        let client = try daemon.connect()
        XCTAssertThrowsError(try client.request(.register(.init(offset: 0, length: 4096, access: [.read])), fd: fd)) { error in
            XCTAssertEqual((error as? ProtocolError)?.code, .unsupportedFilesystem, "daemon: \(error)")
            XCTAssertEqual((error as? ProtocolError)?.message, doctor.error, "the daemon's message names the same filesystem")
        }
        XCTAssertEqual(daemon.engine.statistics().files, 0)
    }
}
