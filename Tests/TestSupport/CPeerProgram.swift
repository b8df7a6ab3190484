import Foundation
import XCTest

/// The C peer exactly as docs/protocol.md prints it: the one ```c block of its "Writing a peer
/// in C" section, compiled with the command the section shows, run as a separate process.
public enum CPeerProgram {
    public static let heading = "## 9. Writing a peer in C"
    /// The build line the section prints; the tests compile with exactly these arguments.
    public static let buildArguments = ["-Wall", "-Wextra", "-O2", "peer.c", "-lrdmacm", "-libverbs", "-o", "peer"]
    public static let lineLimit = 200

    /// The program's exit statuses, in the order of its `enum { OK, VERBS, USAGE, REJECTED, MISMATCH }`.
    public enum Exit: Int32 {
        case ok = 0, verbs, usage, rejected, mismatch
        public static let declaration = "enum { OK, VERBS, USAGE, REJECTED, MISMATCH };"
    }

    public static func document(_ name: String) throws -> String {
        try String(contentsOfFile: Subprocess.repositoryRoot + "/docs/" + name, encoding: .utf8)
    }

    /// The section's text, from its heading to the next `## ` heading or the end.
    public static func section() throws -> String {
        let text = try document("protocol.md")
        guard let start = text.range(of: "\n" + heading + "\n") else {
            throw TestFailure("docs/protocol.md has no \"\(heading)\" section")
        }
        let rest = text[start.upperBound...]
        let end = rest.range(of: "\n## ")?.lowerBound ?? rest.endIndex
        return String(rest[..<end])
    }

    /// The section's fenced C blocks (the tests require exactly one).
    public static func blocks(in section: String) -> [String] {
        section.components(separatedBy: "\n```c\n").dropFirst().compactMap { $0.components(separatedBy: "\n```").first.map { $0 + "\n" } }
    }

    public static func source() throws -> String {
        let found = blocks(in: try section())
        guard found.count == 1, let only = found.first else {
            throw TestFailure("\"\(heading)\" holds \(found.count) ```c blocks, not exactly one")
        }
        return only
    }

    /// `cc` and the librdmacm/libibverbs headers, or a skip naming what is missing.
    public static func requireCompiler() throws -> String {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            .map { "\($0)/cc" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let path else { throw XCTSkip("needs a C compiler (cc on PATH)") }
        for header in ["/usr/include/rdma/rdma_cma.h", "/usr/include/infiniband/verbs.h"]
        where !FileManager.default.fileExists(atPath: header) {
            throw XCTSkip("needs \(header) (apt-get install librdmacm-dev libibverbs-dev)")
        }
        return path
    }

    public struct Build {
        public var binary: String
        public var compilerOutput: String
    }

    nonisolated(unsafe) private static var built: Build?
    nonisolated(unsafe) private static var directory: ScratchDirectory?

    /// Compiles the document's program once per test process (the guests compile under TCG,
    /// which is slow) with the printed command; a compiler failure is a test failure.
    public static func build() throws -> Build {
        let cc = try requireCompiler()
        if let built { return built }
        let scratch = try ScratchDirectory(name: "mrleased-cpeer")
        try source().write(toFile: scratch.path + "/peer.c", atomically: true, encoding: .utf8)
        let run = try Subprocess.run("/bin/sh", ["-c", "cd \"$0\" && exec \"$@\"", scratch.path, cc] + buildArguments)
        guard run.status == 0 else {
            throw TestFailure("cc \(buildArguments.joined(separator: " ")) failed (\(run.status)):\n\(run.stdout)\(run.stderr)")
        }
        print("cpeer: compiled docs/protocol.md's C peer in \(String(format: "%.1f", run.seconds)) s")
        let result = Build(binary: scratch.path + "/peer", compilerOutput: run.stdout + run.stderr)
        directory = scratch
        built = result
        return result
    }

    public struct Run {
        public var status: Int32
        public var stdout: [UInt8]
        public var stderr: String
        public var text: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// Runs the built peer with `arguments`, calling `serve` (one turn of whatever answers its
    /// connection) until it exits; a peer still running after `seconds` is killed and reported.
    public static func run(_ arguments: [String], seconds: Double = 60, serve: () throws -> Void = {}) throws -> Run {
        let binary = try build().binary
        let out = binary + ".out", err = binary + ".err"
        for file in [out, err] where !FileManager.default.createFile(atPath: file, contents: nil) {
            throw TestFailure("cannot create \(file)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
        try process.run()
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            try serve()
            if Date() > deadline {
                process.terminate()
                process.waitUntilExit()
                throw TestFailure("the C peer ran longer than \(seconds) s; stderr: \(try String(contentsOfFile: err, encoding: .utf8))")
            }
            usleep(1000)
        }
        try serve()
        let result = Run(status: process.terminationStatus, stdout: Array(try Data(contentsOf: URL(fileURLWithPath: out))),
                         stderr: try String(contentsOfFile: err, encoding: .utf8))
        // A descriptor is a credential: the log names it, never prints it.
        let shown = arguments.map { $0.contains("mrlg") ? "DESCRIPTOR" : $0 }.joined(separator: " ")
        let said = result.stderr.trimmingCharacters(in: .newlines)
        print("cpeer \(shown): exit \(result.status)" + (said.isEmpty ? "" : ", stderr: \(said)"))
        return result
    }
}
