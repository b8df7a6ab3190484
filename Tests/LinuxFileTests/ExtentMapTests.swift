import CLinux
import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import XCTest

final class ExtentMapTests: XCTestCase {
    static let mib = 1 << 20
    var scratch: Scratch!

    /// FIEMAP needs a filesystem that implements it: the VM's ext4 mount when there is one,
    /// else TMPDIR (ext4 /tmp on the build host). tmpfs answers EOPNOTSUPP: skip, naming ext4.
    func fiemapScratch() throws -> Scratch {
        let scratch: Scratch
        if let ext4 = Facility.ext4.value {
            scratch = try Scratch(URL(fileURLWithPath: ext4))
        } else {
            scratch = try Scratch()
        }
        let probe = try FileDescriptor.open(FilePath(scratch.file("probe")), .readOnly)
        defer { try? probe.close() }
        if probeSaysUnsupported(probe) {
            throw XCTSkip("needs \(Facility.ext4.rawValue): FIEMAP is EOPNOTSUPP in \(scratch.directory.path)")
        }
        self.scratch = scratch
        return scratch
    }

    private func probeSaysUnsupported(_ fd: FileDescriptor) -> Bool {
        do {
            _ = try fd.extents()
            return false
        } catch {
            return error == .notSupported
        }
    }

    override func tearDown() { scratch = nil }

    /// A file of `size` bytes written and fsynced, open read-write.
    func writtenFile(size: Int) throws -> (String, FileDescriptor) {
        let path = try fiemapScratch().file("data", contents: [UInt8](repeating: 0x5A, count: size))
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        XCTAssertEqual(fsync(fd.rawValue), 0)
        return (path, fd)
    }

    func testWrittenFileIsCoveredByExtentsEndingInLast() throws {
        let (_, fd) = try writtenFile(size: Self.mib)
        defer { try? fd.close() }
        let map = try fd.extents()
        XCTAssertFalse(map.extents.isEmpty)
        XCTAssertEqual(map.extents.last?.flags.contains(.last), true)
        XCTAssertEqual(map.extents.dropLast().filter { $0.flags.contains(.last) }, [])
        XCTAssertEqual(map.extents.first?.logical, 0)
        for (a, b) in zip(map.extents, map.extents.dropFirst()) {
            XCTAssertEqual(a.logicalEnd, b.logical, "a written file has no holes")
        }
        XCTAssertGreaterThanOrEqual(map.extents.last?.logicalEnd ?? 0, UInt64(Self.mib))
        XCTAssertTrue(map.extents.allSatisfy { $0.physical != 0 && !$0.flags.contains(.unknown) })
        print("[measure] 1 MiB file: \(map.extents.map { "\($0.logical)+\($0.length)@\($0.physical) [\($0.flags)]" })")
    }

    func testPunchingAHoleChangesTheMapOnlyWhereThePunchWas() throws {
        let (_, fd) = try writtenFile(size: Self.mib)
        defer { try? fd.close() }
        let before = try fd.extents()
        let hole = (offset: UInt64(256 << 10), length: UInt64(256 << 10))
        let mode = MRL_FALLOC_FL_PUNCH_HOLE | MRL_FALLOC_FL_KEEP_SIZE
        XCTAssertEqual(mrl_fallocate(fd.rawValue, mode, off_t(hole.offset), off_t(hole.length)), 0)
        let after = try fd.extents()

        XCTAssertNotEqual(before, after)
        XCTAssertEqual(after.extents(overlapping: hole.offset, length: hole.length), [])
        XCTAssertFalse(before.extents(overlapping: hole.offset, length: hole.length).isEmpty)
        XCTAssertTrue(before.differs(from: after, offset: 0, length: UInt64(Self.mib)))
        XCTAssertTrue(before.differs(from: after, offset: hole.offset + 4096, length: 4096))
        XCTAssertFalse(before.differs(from: after, offset: 0, length: hole.offset),
                       "the bytes before the hole did not move")
        XCTAssertFalse(before.differs(from: after, offset: hole.offset + hole.length, length: 128 << 10))
    }

    func testManyExtentsAreFetchedInSeveralBatches() throws {
        // 200 one-block runs with holes between: more than one 64-extent batch.
        let path = try fiemapScratch().file("sparse", contents: [])
        let fd = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? fd.close() }
        let block = [UInt8](repeating: 1, count: 4096)
        for i in 0..<200 {
            _ = try fd.writeAll(toAbsoluteOffset: Int64(i * 8192), block)
        }
        let map = try fd.extents(sync: true)
        XCTAssertEqual(map.extents.count, 200)
        XCTAssertEqual(map.extents.map(\.logical), (0..<200).map { UInt64($0 * 8192) })
        XCTAssertEqual(map.extents.filter { $0.flags.contains(.last) }.count, 1)

        let ranged = try fd.extents(sync: false, offset: 100 * 8192, length: 10 * 8192)
        XCTAssertEqual(ranged.extents.map(\.logical), (100..<110).map { UInt64($0 * 8192) })
    }

    func testExtentMapRangeAndDriftLogicWithoutTheKernel() {
        let a = ExtentMap(extents: [
            Extent(logical: 0, physical: 1000, length: 100, flags: []),
            Extent(logical: 100, physical: 1100, length: 100, flags: [.last]),
        ])
        // The same bytes as one extent: not drift.
        let joined = ExtentMap(extents: [Extent(logical: 0, physical: 1000, length: 200, flags: [.last])])
        XCTAssertFalse(a.differs(from: joined, offset: 0, length: 200))
        // Shared after a reflink: drift, even at the same place.
        var shared = joined
        shared.extents[0].flags.insert(.shared)
        XCTAssertTrue(a.differs(from: shared, offset: 50, length: 10))
        // Second half moved.
        let moved = ExtentMap(extents: [
            Extent(logical: 0, physical: 1000, length: 100, flags: []),
            Extent(logical: 100, physical: 9000, length: 100, flags: [.last]),
        ])
        XCTAssertFalse(a.differs(from: moved, offset: 0, length: 100))
        XCTAssertTrue(a.differs(from: moved, offset: 99, length: 2))
        XCTAssertEqual(a.extents(overlapping: 100, length: 1).map(\.physical), [1100])
        XCTAssertEqual(a.extents(overlapping: 200, length: .max), [])
        XCTAssertEqual(Extent.Flags([.last, .shared, Extent.Flags(rawValue: 0x4000)]).names,
                       ["last", "shared", "0x4000"])
    }

    func testObjectsWithoutFiemapPassTheKernelErrnoThrough() throws {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        do {
            _ = try FileDescriptor(rawValue: fds[0]).extents()
            XCTFail("FIEMAP on a pipe should fail")
        } catch {
            print("[measure] FIEMAP on a pipe: \(error)")
            XCTAssertTrue([Errno.inappropriateIOCTLForDevice, .invalidArgument, .notSupported].contains(error), "\(error)")
        }
        let proc = try FileDescriptor.open("/proc/self/status", .readOnly)
        defer { try? proc.close() }
        do {
            _ = try proc.extents()
            XCTFail("FIEMAP on procfs should fail")
        } catch {
            print("[measure] FIEMAP on procfs: \(error)")
            XCTAssertTrue([Errno.inappropriateIOCTLForDevice, .invalidArgument, .notSupported].contains(error), "\(error)")
        }
    }
}
