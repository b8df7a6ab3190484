import ArgumentParser
import Foundation
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

@main
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mrleased-bench",
        abstract: "Time lease-break revocation and registration against baselines from the same run.",
        discussion: """
        Break: a child calls truncate(2) on a file with R regions registered (4 KiB each, one per \
        page) and times its own blocked time; interleaved with it, the same child breaks a lease \
        held by a minimal loop that unlocks the moment the signal arrives (the baseline).
        Registration: engine.register against a plain ibv_reg_mr loop with the same flags.
        Without an RDMA device the break benchmark runs on a stub registrar (fake keys) and the \
        registration benchmark is skipped.
        --daemon: starts the real mrleased and times stats round trips over its socket against \
        an echo peer on a socketpair, then (with an RDMA device) 2 MiB registrations through it \
        against a direct Engine.register; the break and registration benchmarks do not run.
        """,
        version: Release.version
    )

    @Option(help: "Directory for the benchmark files (default: $TMPDIR, else /tmp).")
    var dir: String?

    @Option(help: "A label for this run's lines (e.g. 'guest 7.x ext4-dax').")
    var label: String?

    @Option(help: "Region counts for the break benchmark, comma separated.")
    var regions: String = "1,100,10000"

    @Option(help: "Breaks per region count (engine and baseline each).")
    var iterations: Int = 15

    @Option(help: "Breaks per region count from 1000 regions up.")
    var largeIterations: Int = 7

    @Option(help: "Region counts for the variant whose owner never acknowledges (revocation at the quiesce deadline).")
    var noAckRegions: String = "1,10000"

    @Option(help: "Breaks per region count in the no-ack variant.")
    var noAckIterations: Int = 5

    @Option(help: "The engine's quiesce deadline, ms.")
    var quiesceMs: UInt64 = 100

    @Option(help: "The engine's first re-lease retry after a release, ms (daemon default 500; only restoration waits on it).")
    var restoreBackoffMs: UInt64 = 100

    @Option(help: "4 KiB registrations per pass in the registration benchmark.")
    var registrations: Int = 2000

    @Option(help: "2 MiB registrations per pass in the registration benchmark.")
    var hugeRegistrations: Int = 200

    @Option(help: "Region sizes (bytes, multiples of the page size) for the registration benchmark, comma separated: --registrations regions each below 1 MiB, --huge-registrations from 1 MiB.")
    var registrationSizes: String = "4096,2097152"

    @Option(help: "Alternating engine/plain passes per registration case.")
    var passes: Int = 2

    @Option(help: "Ranges per register-batch request in the --daemon registration case (at most 64).")
    var batchSize: Int = 50

    @Option(help: "auto (verbs when a device exists, else stub), verbs, or stub.")
    var registrar: String = "auto"

    @Option(help: "RDMA device (default: $MRLEASED_RDMA_DEVICE, else the first).")
    var device: String?

    @Flag(help: "Skip the break benchmark.")
    var skipBreak = false

    @Flag(help: "Skip the registration benchmark.")
    var skipRegistration = false

    @Flag(help: "Skip the ODP first-access benchmark (a loopback RDMA WRITE into a fresh region, with and without the engine's prefetch).")
    var skipFirstAccess = false

    @Option(help: "Region size for the first-access benchmark, bytes.")
    var firstAccessBytes: Int = 256 << 10

    @Option(help: "Fresh regions per side in the first-access benchmark.")
    var firstAccessIterations: Int = 20

    @Flag(help: "Also print the results as one JSON object at the end.")
    var json = false

    @Flag(help: "Benchmark the daemon instead (stats round trip; 2 MiB registrations through it vs a direct engine call).")
    var daemon = false

    @Option(help: "The mrleased binary for --daemon (default: the one next to this executable).")
    var daemonBinary: String?

    @Option(help: "Timed stats round trips for --daemon, unpinned (each also against the echo peer; a quarter of this with both pinnings).")
    var roundTrips: Int = 20_000

    @Option(help: "Untimed round trips before the timed ones, daemon and echo each.")
    var warmUp: Int = 1000

    @Flag(help: "Time lease break → each remote peer's first write with the new keys (needs an rdma_cm address: --listen or $MRLEASED_RDMA_CM_ADDRESS).")
    var peerBreak = false

    @Flag(help: "Punch a page of an ODP region while peers write through it, under layout policy follow and then revoke, against the same punch of an unregistered file (needs an rdma_cm address and ODP; uses --peer-counts, --peer-breaks).")
    var followBreak = false

    @Option(help: "Peers per --peer-break case, comma separated (0, the baseline without a grant, always runs first).")
    var peerCounts: String = "1,16"

    @Option(help: "Lease breaks per --peer-break case.")
    var peerBreaks: Int = 5

    @Option(help: "The rdma_cm listener for --peer-break, ADDR:PORT (default: $MRLEASED_RDMA_CM_ADDRESS:0).")
    var listen: String?

    @Flag(help: "Register --scale-regions 4 KiB regions through a fresh mrleased over --scale-files files and --scale-clients connections: rate at the start and the end, stats and one-owner list with and without them, memory per region, and that all is released.")
    var scale = false

    @Option(help: "Regions for --scale (capped below the device's max_mr).")
    var scaleRegions: Int = 100_000

    @Option(help: "Files for --scale.")
    var scaleFiles: Int = 100

    @Option(help: "Client connections for --scale.")
    var scaleClients: Int = 10

    @Option(help: "Timed round trips per stats/list measurement in --scale.")
    var scaleRoundTrips: Int = 400

    @Option(help: "Register one range of this many bytes through a fresh mrleased (a file in --dir) while another client times stats round trips; and the same range bare (ibv_reg_mr). 0: off.")
    var largeRegistration: UInt64 = 0

    @Flag(help: "Time the protocol's JSON codec alone (no socket, no daemon): per message, and per range of a register-batch.")
    var codec = false

    @Option(help: "Calls per timed run of --codec (9 runs; the median is printed).")
    var codecIterations: Int = 2000

    /// The echo peer process of --daemon: serves the SOCK_SEQPACKET socket on stdin.
    @Flag(help: .hidden)
    var echoPeer = false

    func validate() throws {
        guard ["auto", "verbs", "stub"].contains(registrar) else { throw ValidationError("--registrar: auto, verbs or stub") }
        guard counts(regions) != nil, counts(noAckRegions) != nil else { throw ValidationError("region counts: comma separated positive integers") }
        guard let sizes = counts(registrationSizes), sizes.allSatisfy({ $0 % SharedMapping.pageSize == 0 }) else {
            throw ValidationError("--registration-sizes: comma separated multiples of the page size (\(SharedMapping.pageSize))")
        }
        guard roundTrips > 0, warmUp >= 0 else { throw ValidationError("--round-trips must be positive, --warm-up not negative") }
        guard iterations > 0, largeIterations > 0, noAckIterations > 0, passes > 0 else { throw ValidationError("iterations and passes must be positive") }
        guard (1...Codec.maxBatchRanges).contains(batchSize) else { throw ValidationError("--batch-size must be 1 to \(Codec.maxBatchRanges)") }
        guard scaleRegions >= 2000, scaleFiles > 0, scaleClients > 0, scaleRoundTrips > 0 else {
            throw ValidationError("--scale-regions at least 2000 (the rate is compared over the first and last 1000); files, clients and round trips positive")
        }
    }

    /// `--codec`: one line per step, µs per message (and per range for the batch).
    func runCodec() throws {
        let prefix = label.map { "[\($0)] " } ?? ""
        say("\(prefix)mrleased-bench --codec: kernel \(Self.kernelRelease()), \(codecIterations) calls per run, median of 9 runs")
        for row in try CodecBenchmark(batchSize: batchSize, iterations: codecIterations).run() {
            let perRange = row.name.hasPrefix("register-batch") ? ", \(us(row.perMessageNS / 1000 / Double(batchSize))) µs per range" : ""
            say("\(prefix)codec \(row.name) (\(row.bytes) B): \(us(row.perMessageNS / 1000)) µs\(perRange)")
        }
    }

    func counts(_ list: String) -> [Int]? {
        let values = list.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.contains(where: { $0 == nil || $0! <= 0 }) else { return nil }
        return values.compactMap { $0 }
    }

    func run() throws {
        if echoPeer { return EchoPeer.serve(fd: 0) }
        if daemon { return try runDaemon() }
        if codec { return try runCodec() }
        if peerBreak { return try runPeerBreak() }
        if followBreak { return try runFollowBreak() }
        if scale { return try runScale() }
        if largeRegistration > 0 { return try runLargeRegistration() }
        let directory = dir ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        let (chosen, registrarNote) = try makeRegistrar()
        let isStub = chosen is StubRegistrar
        let breakCounts = counts(regions)!, noAckCounts = counts(noAckRegions)!
        // One page per region, at least 1 MiB; 10 000 regions need 40 MiB.
        let page = UInt64(SharedMapping.pageSize)
        let size = max(1 << 20, UInt64((breakCounts + noAckCounts).max() ?? 1) * page)

        var logger = Logger(label: "mrleased.bench")
        logger.logLevel = .warning  // the engine logs each break at info: not part of what we time
        let events = EventLog()
        let timing = FileLifecycle.Timing(quiesce: quiesceMs * 1_000_000, initialBackoff: restoreBackoffMs * 1_000_000,
                                          maxBackoff: max(2_000_000_000, restoreBackoffMs * 1_000_000))
        let engine = try Engine(registrar: chosen, configuration: .init(timing: timing), logger: logger)

        var report = Report(label: label ?? "", kernel: Self.kernelRelease(), guest: ProcessInfo.processInfo.environment["MRLEASED_VM"] != nil,
                            directory: directory, registrar: registrarNote, stub: isStub)
        let prefix = label.map { "[\($0)] " } ?? ""
        say("\(prefix)mrleased-bench: kernel \(report.kernel) (\(report.guest ? "vm-test guest" : "host")), dir \(directory)")
        say("\(prefix)registrar: \(registrarNote)")

        if !skipBreak {
            let before = ProcessCensus.take(countMRs: !isStub)
            do {
                let bench = try BreakBenchmark(engine: engine, bare: chosen as? VerbsRegistrar, events: events, directory: directory, size: size)
                let facts = try? FileFacts.inspect(bench.fd)
                report.filesystem = facts.map { "\($0.filesystem), \($0.backing.rawValue)" } ?? "?"
                say("\(prefix)break file: \(bench.path), \(String(format: "%.1f", Double(size) / 1048576)) MiB, \(report.filesystem); quiesce \(quiesceMs) ms, re-lease backoff \(restoreBackoffMs) ms")
                for count in breakCounts {
                    let n = count >= 1000 ? largeIterations : iterations
                    let row: BreakCase
                    do { row = try bench.run(regions: count, iterations: n, acknowledge: true, countMRs: !isStub) } catch {
                        // FS-DAX on a kernel without ODP: the kernel's answer, not a failure.
                        guard error.refused else { throw error }
                        say("\(prefix)break benchmark: skipped: the kernel refuses these regions: \(error)")
                        break
                    }
                    report.breakCases.append(row)
                    say(prefix + Self.setupLine(row, stub: isStub))
                    say(prefix + line(row, stub: isStub))
                }
                for count in noAckCounts where report.breakCases.contains(where: \.acknowledged) {
                    let row = try bench.run(regions: count, iterations: noAckIterations, acknowledge: false, countMRs: !isStub)
                    report.breakCases.append(row)
                    say(prefix + Self.setupLine(row, stub: isStub))
                    say(prefix + line(row, stub: isStub))
                }
            }
            let after = ProcessCensus.take(countMRs: !isStub)
            report.breakCensus = "\(before) -> \(after)" + (before == after ? " (back to start)" : " (LEAK)")
            say("\(prefix)break benchmark census: \(report.breakCensus)")
        }

        if !skipRegistration {
            if let verbs = chosen as? VerbsRegistrar {
                let before = ProcessCensus.take(countMRs: true)
                do {
                    let largest = UInt64(counts(registrationSizes)!.max() ?? 0)
                    let bench = try RegistrationBenchmark(engine: engine, registrar: verbs, directory: directory, size: max(size, largest * 20))
                    for length in counts(registrationSizes)! {
                        let count = length < 1 << 20 ? registrations : hugeRegistrations
                        guard count > 0 else { continue }
                        let row: RegistrationCase
                        do { row = try bench.run(regions: count, length: length, passes: passes) } catch {
                            guard error.refused else { throw error }
                            say("\(prefix)registrations: skipped: the kernel refuses these regions: \(error)")
                            break
                        }
                        report.registrationCases.append(row)
                        say(prefix + Self.line(row))
                    }
                }
                let after = ProcessCensus.take(countMRs: true)
                report.registrationCensus = "\(before) -> \(after)" + (before == after ? " (back to start)" : " (LEAK)")
                say("\(prefix)registration benchmark census: \(report.registrationCensus)")
            } else {
                report.registrationCensus = "skipped: no RDMA device"
                say("\(prefix)registrations: skipped: no RDMA device")
            }
        }

        if !skipFirstAccess {
            if let verbs = chosen as? VerbsRegistrar, verbs.odp.supported {
                let row = try FirstAccessBenchmark(registrar: verbs, directory: directory)
                    .run(regionBytes: firstAccessBytes, iterations: firstAccessIterations)
                report.firstAccess = row
                say(prefix + Self.line(row))
            } else {
                say("\(prefix)first access with ODP prefetch: skipped: \(chosen is VerbsRegistrar ? "the device has no ODP" : "no RDMA device")")
            }
        }

        try conclude(&report, prefix: prefix)
    }

    static func line(_ row: FirstAccessCase) -> String {
        "first RDMA WRITE of \(row.regionBytes >> 10) KiB into a fresh ODP region (loopback RC, n=\(row.iterations)):"
            + " without prefetch median \(us(row.firstWithoutMedianUS)) µs p90 \(us(row.firstWithoutP90US)) µs"
            + " | with prefetch median \(us(row.firstWithMedianUS)) µs p90 \(us(row.firstWithP90US)) µs"
            + " | ratio with/without \(String(format: "%.2f", row.firstWithMedianUS / row.firstWithoutMedianUS))"
            + " | warm (second) WRITE \(us(row.warmMedianUS)) µs"
            + " | engine.register median without \(us(row.registerWithoutMedianUS)) µs, with \(us(row.registerWithMedianUS)) µs"
            + " (ratio \(String(format: "%.2f", row.registerWithMedianUS / row.registerWithoutMedianUS)))"
    }

    /// The verdicts against the issues' targets, then (`--json`) the whole report.
    func conclude(_ report: inout Report, prefix: String) throws {
        report.judge()
        for verdict in report.verdicts { say("\(prefix)\(verdict)") }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            // Prefixed like every other line, so the guest's console filter keeps it.
            say("\(prefix)report-json " + String(decoding: try encoder.encode(report), as: UTF8.self))
        }
    }

    /// The registrar and how to label its numbers.
    func makeRegistrar() throws -> (any Registrar, String) {
        let stubNote = "host, no RDMA: stub registrar (lease/revocation path only)"
        if registrar == "stub" { return (StubRegistrar(), stubNote.replacingOccurrences(of: "host, no RDMA", with: "forced")) }
        let name = device ?? ProcessInfo.processInfo.environment["MRLEASED_RDMA_DEVICE"]
        let devices = (try? Device.list()) ?? []
        if devices.isEmpty && registrar == "auto" { return (StubRegistrar(), stubNote) }
        let verbs = try VerbsRegistrar(deviceNamed: name)
        return (verbs, "\(verbs.deviceName) (verbs: real MRs; RC ODP \(verbs.odp.supported ? "\(verbs.odp.rc)" : "none"))")
    }

    static func setupLine(_ row: BreakCase, stub: Bool) -> String {
        let rate = Double(row.regions) / (row.registerMS / 1000)
        return "setup regions=\(row.regions)\(row.acknowledged ? "" : " no-ack"): engine.register \(row.regions) x 4 KiB in \(ms(row.registerMS)) ms"
            + " (\(Self.rate(rate))/s\(stub ? ", stub: no ibv_reg_mr" : ""))" + (row.mrsListed.map { ", rdma resource show mr: \($0) MRs" } ?? "")
            + (row.bareRegisterPerSecond.map { "; bare ibv_reg_mr of as many MRs over one mapping \(Self.rate($0))/s, ratio \(String(format: "%.2f", rate / $0))" } ?? "")
    }

    func line(_ row: BreakCase, stub: Bool) -> String {
        let variant = row.acknowledged ? "" : " no-ack"
        var text = "break-to-unlock regions=\(row.regions)\(variant): engine median \(ms(row.engineMedianMS)) ms p90 \(ms(row.engineP90MS)) ms"
            + " | baseline median \(ms(row.baselineMedianMS)) ms p90 \(ms(row.baselineP90MS)) ms | ratio \(ratio(row.engineMedianMS, row.baselineMedianMS))"
            + " (n=\(row.iterations)"
        if let work = row.revokeWorkMedianMS { text += ", ack+revoke work median \(ms(work)) ms" }
        if let bare = row.bareDeregisterMedianMS {
            text += ", bare ibv_dereg_mr of \(row.regions) MRs median \(ms(bare)) ms: floor \(ms(row.baselineMedianMS + bare)) ms, ratio to floor \(ratio(row.engineMedianMS, row.baselineMedianMS + bare))"
        }
        if !row.acknowledged { text += ", median past the quiesce deadline \(ms(row.engineMedianMS - Double(quiesceMs))) ms" }
        text += ", restore median \(ms(row.restoreMedianMS)) ms\(stub ? ", stub" : ""))"
        return text
    }

    static func line(_ row: RegistrationCase) -> String {
        let size = row.length >= 1 << 20 ? "\(row.length >> 20) MiB" : "\(row.length >> 10) KiB"
        return "registrations \(row.regions) x \(size) (\(row.strategy), \(row.flags)): engine \(rate(row.engineRegsPerSecond))/s"
            + " | plain ibv_reg_mr \(rate(row.plainRegsPerSecond))/s | ratio \(String(format: "%.2f", row.ratio))"
            + " | engine with the fd inspected once per 64 (as register-batch) \(rate(row.engineBatchRegsPerSecond))/s, ratio \(String(format: "%.2f", row.batchRatio))"
            + " (deregistration: engine \(rate(row.engineDeregsPerSecond))/s, plain \(rate(row.plainDeregsPerSecond))/s)"
            + " | plain with the fd inspected per call (statx, fstatfs, F_GETFL: the floor of a per-call register) \(rate(row.plainInspectingRegsPerSecond))/s,"
            + " ratio to plain \(String(format: "%.2f", row.floorRatio)); engine per call to that floor \(String(format: "%.2f", row.engineRegsPerSecond / row.plainInspectingRegsPerSecond))"
            + " | plain with fstat and F_GETFL only (fstatfs cached) \(rate(row.plainIdentityRegsPerSecond))/s, ratio to plain \(String(format: "%.2f", row.identityFloorRatio))"
    }

    static func rate(_ value: Double) -> String { String(format: value >= 100 ? "%.0f" : "%.1f", value) }

    static func kernelRelease() -> String {
        var names = utsname()
        uname(&names)
        return withUnsafeBytes(of: names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}

/// One line to stdout, unbuffered: in the guest, stdout is the serial console behind a pipe.
func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { bytes in
        var done = 0
        while done < bytes.count {
            let n = write(1, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            done += n
        }
    }
}
