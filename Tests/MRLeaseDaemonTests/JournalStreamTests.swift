import Foundation
import Glibc
import MRLeaseDaemon
import SystemPackage
import TestSupport
import XCTest

/// `$JOURNAL_STREAM` by systemd.exec(5)'s rule: stderr is the journal only when the variable
/// names stderr's own st_dev and st_ino.
final class JournalStreamTests: XCTestCase {
    /// "DEVICE:INODE" of the file at `path`, from stat(2) as Foundation reports it.
    static func streamValue(of path: String) throws -> String {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        guard let device = (attributes[.systemNumber] as? NSNumber)?.uint64Value,
              let inode = (attributes[.systemFileNumber] as? NSNumber)?.uint64Value else {
            throw CocoaError(.fileReadUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        return "\(device):\(inode)"
    }

    /// Whether `JournalStream.isConnected` says stderr is the journal while stderr is `path`.
    /// Stderr is put back before anything is asserted, so a failure is reported where it belongs.
    func isConnectedWithStderr(on path: String, environment: [String: String]) throws -> Bool {
        let file = try FileDescriptor.open(path, .writeOnly)
        defer { try? file.close() }
        let saved = try FileDescriptor.standardError.duplicate()
        defer { try? saved.close() }
        _ = try file.duplicate(as: .standardError)
        let connected = JournalStream.isConnected(environment: environment)
        _ = try saved.duplicate(as: .standardError)
        return connected
    }

    func testStderrOnAFileIsTheJournalWhenTheVariableNamesThatFilesDeviceAndInode() throws {
        let scratch = try ScratchDirectory(name: "mrleased-journal")
        let file = try scratch.file("stream", size: 0)
        XCTAssertTrue(try isConnectedWithStderr(on: file, environment: ["JOURNAL_STREAM": try Self.streamValue(of: file)]))
    }

    func testAVariableInheritedWhileStderrGoesElsewhereIsNotTheJournal() throws {
        let scratch = try ScratchDirectory(name: "mrleased-journal")
        let stderrFile = try scratch.file("stderr", size: 0)
        // The parent's stream: same filesystem, another inode.
        let parentsStream = try Self.streamValue(of: try scratch.file("parent", size: 0))
        XCTAssertFalse(try isConnectedWithStderr(on: stderrFile, environment: ["JOURNAL_STREAM": parentsStream]))
        XCTAssertFalse(try isConnectedWithStderr(on: stderrFile, environment: [:]))
    }

    func testAFileDescriptorMatchesOnlyItsOwnDeviceAndInode() throws {
        let scratch = try ScratchDirectory(name: "mrleased-journal")
        let path = try scratch.file("stream", size: 0)
        let file = try FileDescriptor.open(path, .readOnly)
        defer { try? file.close() }
        let value = try Self.streamValue(of: path)
        XCTAssertTrue(JournalStream.isConnected(file, environment: ["JOURNAL_STREAM": value]))
        XCTAssertFalse(JournalStream.isConnected(file, environment: ["JOURNAL_STREAM": try Self.streamValue(of: "/dev/null")]))
        XCTAssertFalse(JournalStream.isConnected(FileDescriptor(rawValue: -1), environment: ["JOURNAL_STREAM": value]),
                       "a closed fd is no journal")
    }

    func testBothNumbersMustMatch() {
        XCTAssertTrue(JournalStream.names("64769:1234", device: 64769, inode: 1234))
        XCTAssertFalse(JournalStream.names("64769:1234", device: 64769, inode: 1235))
        XCTAssertFalse(JournalStream.names("64769:1234", device: 64770, inode: 1234))
        XCTAssertFalse(JournalStream.names("1234:64769", device: 64769, inode: 1234))
        XCTAssertFalse(JournalStream.names(nil, device: 64769, inode: 1234))
        XCTAssertTrue(JournalStream.names("18446744073709551615:0", device: .max, inode: 0))
    }

    func testMalformedValuesNameNoStream() {
        for value in ["", "abc", "1:", ":2", "1:2:3", ":", "1", "1;2", "+1:2", "-1:2", " 1:2", "1:2 ", "0x1:2", "1:2\n",
                      "18446744073709551616:2", "1:١"] {
            XCTAssertNil(JournalStream(value), "parsed \(value.debugDescription)")
            XCTAssertFalse(JournalStream.names(value, device: 1, inode: 2), value.debugDescription)
        }
        XCTAssertEqual(JournalStream("0:2"), JournalStream(device: 0, inode: 2))
    }
}
