import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import XCTest

final class SharedMappingTests: XCTestCase {
    let page = SharedMapping.pageSize

    func testStoresThroughTheMappingReachTheFileAfterFlush() throws {
        let scratch = try Scratch()
        let path = try scratch.file("data", contents: [UInt8](repeating: 0, count: 2 * page))
        let before = try openDescriptorCount()
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        let mapping = try SharedMapping(fd: fd, offset: 0, length: 2 * page, protection: .readWrite)
        XCTAssertEqual(mapping.length, 2 * page)
        XCTAssertFalse(mapping.isSync)

        let message = Array("through the mapping".utf8)
        let at = page + 100  // second page
        message.withUnsafeBytes { mapping.base.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        try mapping.flush()

        var readBack = [UInt8](repeating: 0, count: message.count)
        let count = try readBack.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: Int64(at), into: $0) }
        XCTAssertEqual(count, message.count)
        XCTAssertEqual(readBack, message)

        try mapping.unmap()
        try mapping.unmap()
        try fd.close()
        XCTAssertEqual(try openDescriptorCount(), before)
    }

    func testMappingAtAnOffsetSeesThatPartOfTheFile() throws {
        let scratch = try Scratch()
        let bytes = (0..<(3 * page)).map { UInt8(truncatingIfNeeded: $0 / page + 1) }
        let fd = try FileDescriptor.open(FilePath(try scratch.file("data", contents: bytes)), .readOnly)
        defer { try? fd.close() }
        let mapping = try SharedMapping(fd: fd, offset: UInt64(2 * page), length: page, protection: .read)
        XCTAssertEqual(mapping.base.load(as: UInt8.self), 3)
    }

    func testMapSyncIsRefusedOnPageCacheFiles() throws {
        let scratch = try Scratch()
        let fd = try FileDescriptor.open(
            FilePath(try scratch.file("data", contents: [UInt8](repeating: 1, count: page))), .readWrite)
        defer { try? fd.close() }
        XCTAssertErrno(.notSupported, try SharedMapping(fd: fd, offset: 0, length: page, protection: .readWrite, sync: true))
    }

    func testMapSyncIsAcceptedOnFSDAX() throws {
        let scratch = try Scratch(URL(fileURLWithPath: try Facility.ext4DAX.require()))
        let fd = try FileDescriptor.open(
            FilePath(try scratch.file("data", contents: [UInt8](repeating: 1, count: page))), .readWrite)
        defer { try? fd.close() }
        let mapping = try SharedMapping(fd: fd, offset: 0, length: page, protection: .readWrite, sync: true)
        XCTAssertTrue(mapping.isSync)
    }

    func testMisalignedOffsetAndEmptyLengthAreInvalid() throws {
        let scratch = try Scratch()
        let fd = try FileDescriptor.open(
            FilePath(try scratch.file("data", contents: [UInt8](repeating: 1, count: 2 * page))), .readWrite)
        defer { try? fd.close() }
        XCTAssertErrno(.invalidArgument, try SharedMapping(fd: fd, offset: 100, length: page, protection: .read))
        XCTAssertErrno(.invalidArgument, try SharedMapping(fd: fd, offset: 0, length: 0, protection: .read))
    }

    func testReadWriteMappingOfAReadOnlyFdIsRefused() throws {
        let scratch = try Scratch()
        let fd = try FileDescriptor.open(
            FilePath(try scratch.file("data", contents: [UInt8](repeating: 1, count: page))), .readOnly)
        defer { try? fd.close() }
        XCTAssertErrno(.permissionDenied, try SharedMapping(fd: fd, offset: 0, length: page, protection: .readWrite))
    }
}
