import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import XCTest

final class FileFactsTests: XCTestCase {
    func inspect(_ path: String, _ options: FileDescriptor.OpenOptions = []) throws -> FileFacts {
        let fd = try FileDescriptor.open(FilePath(path), .readOnly, options: options)
        defer { try? fd.close() }
        return try FileFacts.inspect(fd, path: path)
    }

    func testRegularFileOnExt4IsPageCacheBackedAndNotDAX() throws {
        let scratch = try Facility.ext4.value.map { try Scratch(URL(fileURLWithPath: $0)) } ?? Scratch()
        let path = try scratch.file("data")
        let facts = try inspect(path)
        guard facts.filesystem == "ext4" else {
            throw XCTSkip("needs \(Facility.ext4.rawValue); TMPDIR is \(facts.filesystem)")
        }
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(facts.inode, UInt64(st.st_ino))
        // glibc's dev_t encoding (gnu_dev_major/minor), independent of statx.
        let dev = UInt64(st.st_dev)
        let major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF))
        let minor = UInt32(truncatingIfNeeded: (dev & 0xFF) | ((dev >> 12) & ~0xFF))
        XCTAssertEqual(facts.device, DeviceNumber(major: major, minor: minor))
        XCTAssertEqual(facts.size, 12)
        XCTAssertEqual(facts.nlink, 1)
        XCTAssertEqual(facts.kind, .regular)
        XCTAssertEqual(facts.fsMagic, 0xEF53)
        XCTAssertFalse(facts.isDAX)
        XCTAssertTrue(facts.daxKnown, "6.x kernels report the DAX attribute bit")
        XCTAssertNil(facts.mountDAX)
        XCTAssertEqual(facts.backing, .pageCache)
        XCTAssertNotNil(facts.mountID)
        let mountPoint = try XCTUnwrap(facts.mountPoint)
        // Compare real paths: the test directory may sit behind a symlink.
        let realPath = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        XCTAssertTrue(realPath.hasPrefix(mountPoint), "\(mountPoint) should contain \(realPath)")
        XCTAssertTrue(facts.mountOptions.contains("rw"), "\(facts.mountOptions)")
        print("[measure] ext4 file: dev \(facts.device) mount \(mountPoint) options \(facts.mountOptions)")
    }

    func testFileInDevShmIsShmem() throws {
        guard FileManager.default.fileExists(atPath: "/dev/shm") else { throw XCTSkip("needs /dev/shm") }
        let scratch = try Scratch(URL(fileURLWithPath: "/dev/shm"))
        let facts = try inspect(try scratch.file("data"))
        XCTAssertEqual(facts.filesystem, "tmpfs")
        XCTAssertEqual(facts.backing, .shmem)
        XCTAssertEqual(facts.mountPoint, "/dev/shm")
    }

    func testDirectoryFifoAndProcFileAreNamedForWhatTheyAre() throws {
        let scratch = try Scratch()
        XCTAssertEqual(try inspect(scratch.directory.path, [.directory]).kind, .directory)

        let fifo = scratch.directory.appendingPathComponent("fifo").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let fifoFacts = try inspect(fifo, [.nonBlocking])  // no writer: open must not wait
        XCTAssertEqual(fifoFacts.kind, .fifo)

        let proc = try inspect("/proc/self/status")
        XCTAssertEqual(proc.filesystem, "proc")
        XCTAssertEqual(proc.mountPoint, "/proc")
        XCTAssertEqual(proc.kind, .regular)
    }

    func testAnEpollOrInotifyFDIsAnAnonymousInodeNotARegularFile() throws {
        let inotify = try Inotify()
        let facts = try FileFacts.inspect(inotify.descriptor, mount: false)
        print("[measure] inotify fd: st_mode \(String(facts.mode, radix: 8)), filesystem \(facts.filesystem)")
        XCTAssertNotEqual(facts.kind, .regular, "mode \(String(facts.mode, radix: 8)) on \(facts.filesystem)")
        XCTAssertTrue(facts.isPseudoFile, "anon_inodefs has no pages to register")
    }

    func testAFileOwnedByAnotherUIDReportsItsOwner() throws {
        let scratch = try Scratch()
        let path = try scratch.file("owned")
        XCTAssertEqual(chown(path, 65534, 65534), 0)
        XCTAssertEqual(try inspect(path).owner, 65534)
    }

    func testFSDAXFileReportsDAXAndTheMountOption() throws {
        let root = try Facility.ext4DAX.require()
        let scratch = try Scratch(URL(fileURLWithPath: root))
        let facts = try inspect(try scratch.file("data"))
        XCTAssertTrue(facts.isDAX)
        XCTAssertEqual(facts.backing, .fsDAX)
        XCTAssertNotNil(facts.mountDAX)
    }

    func testMountInfoLineParsesEscapesOptionalFieldsAndDaxOption() throws {
        let line = #"36 35 259:1 / /mnt/pmem\040disk rw,noatime shared:7 master:1 - ext4 /dev/pmem0 rw,dax=always,errors=remount-ro"#
        let mount = try XCTUnwrap(MountInfo(line: line[...]))
        XCTAssertEqual(mount.mountID, 36)
        XCTAssertEqual(mount.device.description, "259:1")
        XCTAssertEqual(mount.mountPoint, "/mnt/pmem disk")
        XCTAssertEqual(mount.filesystem, "ext4")
        XCTAssertEqual(mount.source, "/dev/pmem0")
        XCTAssertEqual(mount.options, ["rw", "noatime", "dax=always", "errors=remount-ro"])
        XCTAssertEqual(mount.daxOption, "dax=always")
        XCTAssertNil(MountInfo(line: "garbage line"))
        XCTAssertFalse(try MountInfo.current().isEmpty)
    }
}
