import Foundation

/// Runs a program to completion and captures what it printed: for tests that drive the CLI or
/// real tools (`truncate`, `fallocate`, `rdma`) as another process would.
public struct Subprocess {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var seconds: Double

    /// Starts `executable` in the background with its output discarded: a breaker (truncate,
    /// cat, fallocate) the test waits for while it drives the engine or daemon.
    public static func start(_ executable: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> Subprocess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let start = Date()
        try process.run()
        // Drain both pipes before waiting so a chatty child cannot block on a full pipe.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Subprocess(status: process.terminationStatus,
                          stdout: String(decoding: outData, as: UTF8.self),
                          stderr: String(decoding: errData, as: UTF8.self),
                          seconds: Date().timeIntervalSince(start))
    }

    /// The checkout this test code is in (its docs, Config, Scripts).
    public static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    /// The path of an executable product built beside the test bundle (`.build/debug/mrlease`).
    public static func builtProduct(_ name: String) -> String {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = bundle.deletingLastPathComponent()
        // `swift test` runs .build/debug/NAME.xctest; Bundle paths may point inside it.
        while directory.path != "/", !FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path) {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent(name).path
    }
}

/// A scratch directory on a chosen filesystem, removed when the test ends.
public final class ScratchDirectory {
    public let path: String

    /// `root` defaults to TMPDIR (the guest's tmpfs under Scripts/vm-test, /tmp on the host).
    public init(in root: String? = nil, name: String = "mrleased-test") throws {
        let base = root ?? NSTemporaryDirectory()
        path = (base as NSString).appendingPathComponent("\(name)-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Creates a file of `size` bytes filled with `byte`, written and fsynced so it has extents.
    @discardableResult
    public func file(_ name: String, size: Int, byte: UInt8 = 0x5A) throws -> String {
        let file = (path as NSString).appendingPathComponent(name)
        guard FileManager.default.createFile(atPath: file, contents: Data(repeating: byte, count: size)) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: file])
        }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: file))
        try handle.synchronize()
        try handle.close()
        return file
    }
}
