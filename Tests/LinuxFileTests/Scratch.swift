import Foundation
import SystemPackage
import XCTest

/// A directory of throwaway files for one test, under `FileManager.temporaryDirectory` (which
/// follows TMPDIR), removed when the test ends.
final class Scratch {
    let directory: URL

    init(_ root: URL = FileManager.default.temporaryDirectory) throws {
        directory = root.appendingPathComponent("linuxfile-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    /// A new file named `name` holding `contents`; its path.
    func file(_ name: String, contents: [UInt8] = Array("hello lease\n".utf8)) throws -> String {
        let path = directory.appendingPathComponent(name).path
        let fd = try FileDescriptor.open(
            FilePath(path), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
        defer { try? fd.close() }
        _ = try fd.writeAll(contents)
        return path
    }
}

/// A child process started now; the test decides when to wait for it.
struct Child {
    let process: Process
    let started: ContinuousClock.Instant

    /// Starts `executable` with `arguments`, its output captured.
    init(_ executable: String, _ arguments: [String]) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = Pipe()
        process.standardError = Pipe()
        started = .now
        try process.run()
    }

    /// Waits for the child to exit; its exit status.
    @discardableResult
    func finish() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }

    var isRunning: Bool { process.isRunning }

    var output: String {
        let pipe = process.standardOutput as! Pipe
        return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    var errors: String {
        let pipe = process.standardError as! Pipe
        return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }
}

/// How many descriptors this process has open (entries of /proc/self/fd).
func openDescriptorCount() throws -> Int {
    try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
}

/// The size of the file at `path`, from stat.
func fileSize(_ path: String) throws -> UInt64 {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    return (attributes[.size] as? NSNumber)?.uint64Value ?? .max
}

/// Asserts that `body` throws exactly `expected`.
func XCTAssertErrno<T>(
    _ expected: Errno, _ body: @autoclosure () throws -> T,
    file: StaticString = #filePath, line: UInt = #line
) {
    do {
        _ = try body()
        XCTFail("expected \(expected), it succeeded", file: file, line: line)
    } catch let error as Errno {
        XCTAssertEqual(error, expected, file: file, line: line)
    } catch {
        XCTFail("expected \(expected), got \(error)", file: file, line: line)
    }
}
