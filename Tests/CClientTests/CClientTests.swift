import Foundation
import TestSupport
import XCTest

/// libmrlease on the host (no RDMA device): every request type against the built `mrleased`,
/// and every error code a client can provoke here; what a real daemon never sends (unreadable
/// packets, events while a request waits, a dead daemon's lease) against a scripted fake in
/// the C test itself. All of it under ASan and UBSan.
final class CClientTests: XCTestCase {
    func testEveryRequestAndProvokableErrorCodeAgainstTheDaemon() throws {
        try Facility.requireNoRDMADevice()
        try CLibrary.make()
        // A low connection limit, so that too-many-requests takes a few connections only.
        let daemon = try RunningDaemon(environment: ["MRLEASED_MAX_CONNECTIONS_PER_UID": "4"])
        defer { XCTAssertEqual(daemon.stop(), 0, daemon.log) }
        let scratch = try ScratchDirectory(name: "mrlease-clib")
        let checks = try CLibrary.runChecks(["host", daemon.socketPath, scratch.path])
        XCTAssertEqual(checks.status, 0, checks.failures.joined(separator: "\n"))
        XCTAssertEqual(checks.failed, 0, checks.failures.joined(separator: "\n"))
        // Each daemon code the host can provoke is asserted by name in the C test.
        for code in ["strategy-unavailable", "bad-alignment", "range-out-of-file", "bad-request", "not-regular-file", "access-denied",
                     "quota-exceeded", "message-too-large", "missing-fd", "too-many-fds", "unsupported-version", "unknown-region",
                     "unknown-grant", "remote-access-unavailable", "too-many-requests", "internal"] {
            XCTAssertTrue(checks.output.contains(code), "the C test checks \(code)")
        }
        XCTAssertGreaterThanOrEqual(checks.passed, 70, "the checks ran: \(checks.passed)")
    }

    /// A program built against libmrlease 1.0.0's header (clib/abi/mrlease-1.0.0.h: shorter
    /// structs, no sized calls), linked to this libmrlease.so.1, gets 1.0.0's layouts: every
    /// result lands in a heap block of the old size, and ASan reports a byte written past it.
    func testAProgramBuiltAgainstTheFirstHeaderRunsAgainstThisLibrary() throws {
        try Facility.requireNoRDMADevice()
        try CLibrary.make()
        let daemon = try RunningDaemon()
        defer { XCTAssertEqual(daemon.stop(), 0, daemon.log) }
        let scratch = try ScratchDirectory(name: "mrlease-clib-compat")
        let checks = try CLibrary.runChecks(["host", daemon.socketPath, scratch.path], program: "compat-1.0.0")
        XCTAssertEqual(checks.status, 0, checks.output)
        XCTAssertEqual(checks.failed, 0, checks.failures.joined(separator: "\n"))
        XCTAssertEqual(checks.passed, 4, checks.output)
    }

    /// Only the mrlease_* API leaves the shared library, and it carries its soname.
    func testTheLibraryExportsOnlyItsAPIUnderItsSoname() throws {
        try CLibrary.make()
        let symbols = try Subprocess.run("/usr/bin/env", ["make", "-s", "-C", CLibrary.directory, "check-symbols"])
        XCTAssertEqual(symbols.status, 0, symbols.stdout + symbols.stderr)
        let dynamic = try Subprocess.run("/usr/bin/env", ["objdump", "-p", CLibrary.build + "/libmrlease.so.1.5.0"])
        XCTAssertTrue(dynamic.stdout.contains("SONAME               libmrlease.so.1"), dynamic.stdout)
        XCTAssertTrue(dynamic.stdout.contains("NEEDED               libjson-c.so.5"), dynamic.stdout)
    }

    /// `make install` with DESTDIR, PREFIX and LIBDIR as a Debian package calls it: the files in
    /// their places, a .pc naming that prefix, and a program built with `pkg-config --cflags
    /// --libs mrlease` from the staged tree that runs against the staged library.
    func testInstallLaysOutTheFilesAndPkgConfigBuildsAProgram() throws {
        if ProcessInfo.processInfo.environment["MRLEASED_VM"] == "1" {
            throw XCTSkip("needs a writable source tree (make install writes clib/build/mrlease.pc; the guests mount the tree read-only): the host run checks the install")
        }
        try CLibrary.make()
        let stage = try ScratchDirectory(name: "mrlease-clib-install")
        let libdir = "/usr/lib/x86_64-linux-gnu"
        let install = try Subprocess.run("/usr/bin/env", ["make", "-C", CLibrary.directory, "install", "DESTDIR=\(stage.path)", "PREFIX=/usr", "LIBDIR=\(libdir)"])
        XCTAssertEqual(install.status, 0, install.stdout + install.stderr)
        for file in ["/usr/include/mrlease.h", "\(libdir)/libmrlease.so.1.5.0", "\(libdir)/pkgconfig/mrlease.pc", "/usr/share/man/man3/libmrlease.3"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: stage.path + file), "\(file) is installed")
        }
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: stage.path + "\(libdir)/libmrlease.so.1"), "libmrlease.so.1.5.0")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: stage.path + "\(libdir)/libmrlease.so"), "libmrlease.so.1")
        let pc = try String(contentsOfFile: stage.path + "\(libdir)/pkgconfig/mrlease.pc", encoding: .utf8)
        XCTAssertTrue(pc.contains("prefix=/usr\n") && pc.contains("libdir=\(libdir)\n") && pc.contains("Requires.private: json-c"), pc)

        let environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                           "PKG_CONFIG_PATH": stage.path + "\(libdir)/pkgconfig", "PKG_CONFIG_SYSROOT_DIR": stage.path]
        let flags = try Subprocess.run("/usr/bin/env", ["pkg-config", "--cflags", "--libs", "mrlease"], environment: environment)
        XCTAssertEqual(flags.status, 0, flags.stderr)
        XCTAssertTrue(flags.stdout.contains("-L\(stage.path)\(libdir) -lmrlease"), flags.stdout)
        let binary = stage.path + "/truncate-demo"
        let compile = try Subprocess.run("/bin/sh", ["-c", "cc -Wall -Wextra -Werror \"$0\" $(pkg-config --cflags --libs mrlease) -o \"$1\" -I\"$2\"",
                                                      CLibrary.directory + "/examples/truncate-demo.c", binary, stage.path + "/usr/include"],
                                         environment: environment)
        XCTAssertEqual(compile.status, 0, compile.stdout + compile.stderr)
        // Usage errors come before any connection: the staged library loads and runs.
        let run = try Subprocess.run(binary, [], environment: ["LD_LIBRARY_PATH": stage.path + libdir])
        XCTAssertEqual(run.status, 2, run.stderr)
        XCTAssertTrue(run.stderr.contains("usage: truncate-demo FILE [SOCKET]"), run.stderr)
    }
}
