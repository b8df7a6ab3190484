import Foundation
import TestSupport
import XCTest

/// clib/ as a C programmer gets it: `make -C clib` (the library, its .pc, the example) and
/// `make -C clib tests` (the C tests and the example with ASan and UBSan), then the programs.
enum CLibrary {
    static let directory = Subprocess.repositoryRoot + "/clib"
    static var build: String { directory + "/build" }

    /// make, cc and json-c's headers, or a skip naming what is missing.
    static func requireToolchain() throws {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        for tool in ["make", "cc", "pkg-config"] where !path.contains(where: { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }) {
            throw XCTSkip("needs \(tool) on PATH (Scripts/install-deps)")
        }
        if !FileManager.default.fileExists(atPath: "/usr/include/json-c/json.h") {
            throw XCTSkip("needs json-c's headers, /usr/include/json-c/json.h (apt-get install libjson-c-dev; Scripts/install-deps)")
        }
    }

    nonisolated(unsafe) private static var built = false

    /// `make -C clib all tests`, once per test process; a failing build is a test failure.
    static func make() throws {
        try requireToolchain()
        if built { return }
        // The guests see the tree read-only: the host built it (Scripts/test and Scripts/vm-test
        // run `make -C clib all tests` before booting).
        if ProcessInfo.processInfo.environment["MRLEASED_VM"] == "1" {
            for program in ["/libmrlease.so.1.5.0", "/check/client-test", "/examples/truncate-demo", "/check/example-truncate-demo"]
            where !FileManager.default.isExecutableFile(atPath: build + program) {
                throw TestFailure("clib/build\(program) is missing: run make -C clib all tests on the host before Scripts/vm-test --no-build")
            }
            built = true
            return
        }
        let run = try Subprocess.run("/usr/bin/env", ["make", "-C", directory, "all", "tests"])
        guard run.status == 0 else {
            throw TestFailure("make -C clib all tests failed (\(run.status)):\n\(run.stdout)\(run.stderr)")
        }
        built = true
    }

    struct Checks {
        var status: Int32
        var output: String
        var passed: Int
        var failed: Int
        var failures: [String] { output.split(separator: "\n").filter { $0.hasPrefix("not ok") }.map(String.init) }
    }

    /// Runs `build/check/PROGRAM` (client-test, compat-1.0.0) with `arguments`; its last line
    /// counts its checks.
    static func runChecks(_ arguments: [String], program: String = "client-test") throws -> Checks {
        try make()
        let run = try Subprocess.run(build + "/check/" + program, arguments)
        print(run.stdout + run.stderr)
        let last = run.stdout.split(separator: "\n").last { $0.hasPrefix("checks: ") }
        let numbers = last.map { $0.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) } } ?? []
        guard numbers.count == 2 else {
            throw TestFailure("\(program) ended without its count (status \(run.status)): \(run.stderr)")
        }
        return Checks(status: run.status, output: run.stdout, passed: numbers[0], failed: numbers[1])
    }
}
