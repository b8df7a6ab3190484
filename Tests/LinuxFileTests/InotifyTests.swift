import Foundation
import LinuxFile
import SystemPackage
import XCTest

final class InotifyTests: XCTestCase {
    /// Reads until an event with `mask` arrives for `watch`, or 5 s pass; all events read.
    func events(_ inotify: Inotify, until mask: Inotify.Mask, on watch: Int32) throws -> [Inotify.Event] {
        var seen: [Inotify.Event] = []
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            seen += try inotify.read()
            if seen.contains(where: { $0.watch == watch && !$0.mask.isDisjoint(with: mask) }) { break }
            usleep(5_000)
        }
        return seen
    }

    func testWatchOnProcSelfFdSeesAnotherProcessOpenAndCloseTheFile() throws {
        let scratch = try Scratch()
        let path = try scratch.file("data")
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        let inotify = try Inotify()
        defer { try? inotify.close() }
        let watch = try inotify.addWatch(path: "/proc/self/fd/\(fd.rawValue)", mask: [.open, .close])
        XCTAssertEqual(try inotify.read(), [], "our own earlier open is not reported")

        // A rename proves the watch is on the inode, not the name.
        let renamed = scratch.directory.appendingPathComponent("renamed").path
        XCTAssertEqual(rename(path, renamed), 0)

        XCTAssertEqual(try Child("/bin/cat", [renamed]).finish(), 0)
        let reads = try events(inotify, until: .closeNoWrite, on: watch)
        XCTAssertTrue(reads.contains { $0.watch == watch && $0.mask.contains(.open) }, "\(reads)")
        XCTAssertTrue(reads.contains { $0.watch == watch && $0.mask.contains(.closeNoWrite) }, "\(reads)")
        XCTAssertTrue(reads.allSatisfy { $0.name == nil }, "a file watch names no child")

        XCTAssertEqual(try Child("/bin/sh", ["-c", ": >> \"$1\"", "sh", renamed]).finish(), 0)
        let writes = try events(inotify, until: .closeWrite, on: watch)
        XCTAssertTrue(writes.contains { $0.watch == watch && $0.mask.contains(.closeWrite) }, "\(writes)")
    }

    func testDirectoryWatchNamesTheChildAndRemovalQueuesIgnored() throws {
        let scratch = try Scratch()
        let inotify = try Inotify()
        defer { try? inotify.close() }
        let watch = try inotify.addWatch(path: scratch.directory.path, mask: [.create])
        _ = try scratch.file("new")
        let created = try events(inotify, until: .create, on: watch)
        XCTAssertEqual(created.first { $0.mask.contains(.create) }?.name, "new")

        try inotify.removeWatch(watch)
        let removed = try events(inotify, until: .ignored, on: watch)
        XCTAssertTrue(removed.contains { $0.mask.contains(.ignored) }, "\(removed)")
        XCTAssertErrno(.invalidArgument, try inotify.removeWatch(watch))
    }

    func testCloseReleasesTheDescriptor() throws {
        let before = try openDescriptorCount()
        let inotify = try Inotify()
        XCTAssertEqual(try openDescriptorCount(), before + 1)
        try inotify.close()
        try inotify.close()
        XCTAssertEqual(try openDescriptorCount(), before)
    }
}
