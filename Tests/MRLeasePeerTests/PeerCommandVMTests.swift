import Foundation
import MRLeaseGrant
import TestSupport
import XCTest

@testable import MRLeasePeer

/// `mrlease peer` as a separate process against `TestResponder` on the guest's rxe1.
final class PeerCommandVMTests: XCTestCase {
    private let mrlease = Subprocess.builtProduct("mrlease")

    private func responder(alignment: UInt32 = 1) throws -> TestResponder {
        let responder = try TestResponder(address: try Facility.rdmaCMAddress.require(), length: 1 << 20, alignment: alignment)
        addTeardownBlock { responder.stop() }
        return responder
    }

    private func peer(_ responder: TestResponder, _ arguments: [String]) throws -> Subprocess {
        // timeout(1): a hung peer fails the test with what it printed instead of holding the guest.
        try Subprocess.run("/usr/bin/timeout", ["-k", "5", "60", mrlease, "peer", responder.descriptor.text] + arguments)
    }

    /// The `key=value` fields of the last line starting with `prefix`.
    private func fields(_ output: String, line prefix: String) throws -> [String: String] {
        let line = try XCTUnwrap(output.split(separator: "\n").last { $0.hasPrefix(prefix) }, "no \(prefix) line in:\n\(output)")
        return Dictionary(line.split(separator: " ").compactMap { word in
            let parts = word.split(separator: "=", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }, uniquingKeysWith: { $1 })
    }

    func testWriteVerifyReadAndBenchPrintWhatAScriptCanParse() throws {
        let responder = try responder()
        let write = try peer(responder, ["write", "--offset", "4096", "--length", "10000", "--pattern", "seed:5"])
        XCTAssertEqual(write.status, 0, write.stderr)
        XCTAssertEqual(try fields(write.stdout, line: "connected")["generation"], "1")
        XCTAssertEqual(try fields(write.stdout, line: "connected")["persist"], "read-after-write")
        XCTAssertEqual(try fields(write.stdout, line: "wrote")["length"], "10000")
        let expected = PeerPattern.seeded(5).bytes(at: 4096, count: 10000)
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: responder.memory + 4096, count: 10000)), expected)

        let verify = try peer(responder, ["verify", "--offset", "4096", "--length", "10000", "--pattern", "seed:5"])
        XCTAssertEqual(verify.status, 0, verify.stderr + verify.stdout)
        XCTAssertTrue(verify.stdout.contains("verified offset=4096 length=10000"), verify.stdout)
        responder.memory.storeBytes(of: ~expected[123], toByteOffset: 4096 + 123, as: UInt8.self)
        let mismatch = try peer(responder, ["verify", "--offset", "4096", "--length", "10000", "--pattern", "seed:5"])
        XCTAssertEqual(mismatch.status, 3, mismatch.stdout)
        XCTAssertEqual(try fields(mismatch.stdout, line: "mismatch")["offset"], "4219")

        let read = try peer(responder, ["read", "--offset", "4096", "--length", "20"])
        XCTAssertEqual(read.status, 0, read.stderr)
        let hex = expected.prefix(16).map { String(format: "%02x", $0) }.joined(separator: " ")
        XCTAssertTrue(read.stdout.contains("00001000: " + hex), read.stdout)

        for op in ["write", "read"] {
            let bench = try peer(responder, ["bench", "--op", op, "--size", "4096", "--seconds", "2"])
            XCTAssertEqual(bench.status, 0, bench.stderr)
            let result = try fields(bench.stdout, line: "bench")
            print("mrlease peer bench: \(bench.stdout.split(separator: "\n").last ?? "")")
            XCTAssertGreaterThan(Double(result["ops"] ?? "") ?? 0, 10, bench.stdout)
            XCTAssertGreaterThan(Double(result["median_us"] ?? "") ?? 0, 0, bench.stdout)
            XCTAssertGreaterThanOrEqual(Double(result["p99_us"] ?? "") ?? 0, Double(result["median_us"] ?? "") ?? 0, bench.stdout)
            XCTAssertGreaterThan(Double(result["bandwidth_MBps"] ?? "") ?? 0, 0, bench.stdout)
        }
    }

    func testRefusalsAndRejectsExitOneWithTheReasonOnStderr() throws {
        let responder = try responder(alignment: 4096)
        let unaligned = try peer(responder, ["write", "--offset", "100", "--length", "4096"])
        XCTAssertEqual(unaligned.status, 1)
        XCTAssertTrue(unaligned.stderr.contains("mrlease peer write: write refused before posting: offset 100 and length 4096"), unaligned.stderr)
        responder.setAnswer(.reject(RejectPrivateData(reason: .revoked)))
        let revoked = try peer(responder, ["read", "--length", "4096"])
        XCTAssertEqual(revoked.status, 1)
        XCTAssertTrue(revoked.stderr.contains("mrleased rejected the connection: revoked"), revoked.stderr)
        let garbage = try Subprocess.run(mrlease, ["peer", "mrlgnotadescriptor", "read"])
        XCTAssertEqual(garbage.status, 2, garbage.stderr)
        XCTAssertTrue(garbage.stderr.contains("not a grant descriptor"), garbage.stderr)
    }

    /// The loop's last `persisted` line says what the memory holds, across a revocation.
    func testAWriteLoopCarriesOnAcrossARevocationAndItsLastPersistedLineIsWhatTheMemoryHolds() throws {
        let responder = try responder()
        let output = try ScratchDirectory()
        let path = output.path + "/loop.out"
        FileManager.default.createFile(atPath: path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: mrlease)
        process.arguments = ["peer", responder.descriptor.text, "write", "--loop", "--seconds", "4", "--offset", "8192",
                             "--length", "4096", "--pattern", "seed:100"]
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        // Revoke once the loop has persisted under generation 1 (the CLI takes a while to start in the guest).
        let started = Date().addingTimeInterval(30)
        while process.isRunning, Date() < started, !((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").contains("persisted iteration=") {
            usleep(20_000)
        }
        try responder.revoke(whileDown: .reject(RejectPrivateData(reason: .regionRevoking, retryAfterMilliseconds: 20)), downFor: 0.3)
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning, Date() < deadline { usleep(50_000) }
        if process.isRunning {
            process.terminate()
            usleep(500_000)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            throw TestFailure("mrlease peer write --loop still ran after 60 s; its output ends:\n\(text.suffix(1500)); responder: \(responder.events)")
        }
        process.waitUntilExit()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 0, stderr)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let last = try fields(text, line: "persisted")
        XCTAssertEqual(last["generation"], "2", text.suffix(500).description)
        let reconnected = try fields(text, line: "reconnected")
        XCTAssertEqual(reconnected["reconnects"], "1")
        XCTAssertEqual(reconnected["generation"], "2")
        XCTAssertNotNil(Int(reconnected["waited_ms"] ?? ""), "\(reconnected)")
        XCTAssertTrue(text.contains("generation=1\n"), "the loop persisted under generation 1 before the revocation")
        let pattern = try XCTUnwrap(PeerPattern(last["pattern"] ?? ""))
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: responder.memory + 8192, count: 4096)), pattern.bytes(at: 8192, count: 4096),
                       "the memory holds the last persisted iteration's bytes")
        print("mrlease peer write --loop: \(text.split(separator: "\n").filter { $0.hasPrefix("persisted") }.count) iterations; "
              + "\(text.split(separator: "\n").first { $0.hasPrefix("reconnected") } ?? "")")
    }
}
