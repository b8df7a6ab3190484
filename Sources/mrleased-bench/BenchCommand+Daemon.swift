import DaemonLauncher
import Foundation
import Logging
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import Verbs

extension BenchCommand {
    /// `--daemon`: the issue 4 numbers, from one run against a freshly started `mrleased`.
    func runDaemon() throws {
        let directory = dir ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        let prefix = label.map { "[\($0)] " } ?? ""
        let devices = (try? Device.list()) ?? []
        let verbs = devices.isEmpty ? nil : try VerbsRegistrar(deviceNamed: device ?? ProcessInfo.processInfo.environment["MRLEASED_RDMA_DEVICE"])
        var report = Report(label: label ?? "", kernel: Self.kernelRelease(), guest: ProcessInfo.processInfo.environment["MRLEASED_VM"] != nil,
                            directory: directory, registrar: verbs.map { "\($0.deviceName) (verbs)" } ?? "none: no RDMA device", stub: false)
        say("\(prefix)mrleased-bench --daemon: kernel \(report.kernel) (\(report.guest ? "vm-test guest" : "host")), dir \(directory)")

        // The socket and both registration files live in one scratch directory of --dir.
        let scratch = "\(directory)/mrleased-bench-\(getpid())"
        guard mkdir(scratch, 0o700) == 0 else { throw BenchError("mkdir \(scratch): \(String(cString: strerror(errno)))") }
        defer { rmdir(scratch) }
        let binary = daemonBinary ?? Self.siblingBinary("mrleased")
        let socket = "\(scratch)/bench.sock"
        let child = try Self.startDaemon(binary, socket: socket, device: verbs?.deviceName)
        defer { unlink(socket) }
        let client = try DaemonClient(path: socket)
        guard case .hello(let hello) = try client.request(.hello(.init(clientName: "mrleased-bench"))) else { throw BenchError("hello: unexpected result") }
        say("\(prefix)daemon: \(binary) (pid \(child.pid), \(hello.daemon)), devices \(hello.devices.map(\.name)), strategies \(hello.strategies.map(\.rawValue))")

        for placement in Placement.allCases where placement != .crossCPU || Affinity.cpuCount > 1 {
            let trip = try measureRoundTrip(client: client, daemonPID: child.pid, placement: placement,
                                            count: placement == .scheduler ? roundTrips : max(1, roundTrips / 4), warmUp: warmUp)
            report.roundTrips.append(trip)
            say(prefix + Self.line(trip))
        }

        if let verbs {
            var logger = Logger(label: "mrleased.bench")
            logger.logLevel = .warning
            let engine = try Engine(registrar: verbs, logger: logger)
            // 2 MiB regions repeat every 20 over a 40 MiB file per side, as in the engine benchmark.
            let bench = try DaemonRegistrationBenchmark(client: client, engine: engine, directory: scratch, size: 40 << 20)
            let row: DaemonRegistrationCase
            do {
                row = try bench.run(regions: hugeRegistrations, length: 2 << 20, passes: passes, batchSize: batchSize)
            } catch {
                // FS-DAX without ODP (rxe before ~6.14): the refusal is the kernel's answer, not
                // a benchmark failure; there is nothing to time.
                guard error.description.contains("strategy-unavailable") else { throw error }
                say("\(prefix)registration through the daemon: skipped: \(error)")
                _ = child.stop()
                return
            }
            report.daemonRegistration = row
            say(prefix + Self.line(row))
            // The daemon's own view: its time per request, without the client's side or the
            // wake-ups (power-of-two buckets, so p50 is an upper bound within 2x).
            if case .stats(let stats) = try client.request(.stats) {
                let own = [RequestType.register, .registerBatch, .deregister, .stats].compactMap { type in
                    stats.requestMicros[type].map { "\(type.rawValue) p50 ≤ \($0.p50) µs p99 ≤ \($0.p99) µs (n=\($0.count))" }
                }
                say("\(prefix)daemon's own time per request (stats requestMicros): " + own.joined(separator: "; "))
            }
            let mrs = ProcessCensus.lines(of: "PATH=/usr/bin:/usr/sbin:/sbin:/bin rdma resource show mr pid \(child.pid) 2>/dev/null")
                .filter { $0.contains("mrn") }.count
            say("\(prefix)daemon MRs after deregistration: \(mrs) (rdma resource show mr pid \(child.pid))")
        } else {
            say("\(prefix)registration through the daemon: skipped: no RDMA device")
        }

        let status = child.stop().map(String.init) ?? "none: still running 10 s after SIGTERM (killed)"
        say("\(prefix)mrleased exit status after SIGTERM: \(status)")
        try conclude(&report, prefix: prefix)
    }

    /// The real `mrleased`, started as a child on its own socket with the settings a fresh
    /// install has (`--config /dev/null`) and logs quiet enough that no log line is part of what
    /// we time; its warnings go to our stderr. It inherits our environment, so a run can set
    /// `MRLEASED_*`.
    static func startDaemon(_ binary: String, socket: String, device: String?, extraArguments: [String] = [],
                            environment: [String: String] = [:]) throws -> DaemonChild {
        // The per-uid byte quota defaults to the client's RLIMIT_MEMLOCK, which would cap the
        // registration benchmark's regions at a few MiB: the benchmark times the quota check,
        // not its refusal.
        try DaemonChild(executable: binary, arguments: ["--socket", socket, "--config", "/dev/null", "--log-level", "warning"]
                            + (device.map { ["--device", $0] } ?? []) + extraArguments,
                        environment: environment.merging(["MRLEASED_MAX_BYTES_PER_UID": "\(UInt64(1) << 50)"]) { mine, _ in mine }, inheriting: .all,
                        stderr: .inherited, readyWhen: .accepting(socketPath: socket))
    }

    /// `name` next to this executable (both are products of one `swift build`).
    static func siblingBinary(_ name: String) -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// `--large-registration BYTES`: another client's stats round trips while one large range
    /// registers through a fresh daemon (issue 19: large ranges off the loop).
    func runLargeRegistration() throws {
        let directory = dir ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        let prefix = label.map { "[\($0)] " } ?? ""
        guard !((try? Device.list()) ?? []).isEmpty else { return say("\(prefix)large registration: skipped: no RDMA device") }
        let verbs = try VerbsRegistrar(deviceNamed: device ?? ProcessInfo.processInfo.environment["MRLEASED_RDMA_DEVICE"])
        let scratch = "\(directory)/mrleased-bench-\(getpid())"
        guard mkdir(scratch, 0o700) == 0 else { throw BenchError("mkdir \(scratch): \(String(cString: strerror(errno)))") }
        defer { rmdir(scratch) }
        let socket = "\(scratch)/bench.sock"
        defer { unlink(socket) }
        let child = try Self.startDaemon(daemonBinary ?? Self.siblingBinary("mrleased"), socket: socket, device: verbs.deviceName)
        defer { _ = child.stop() }
        say("\(prefix)mrleased-bench --large-registration: kernel \(Self.kernelRelease()), dir \(directory), \(largeRegistration >> 20) MiB, device \(verbs.deviceName)")
        let outcome: Result<LargeRegistrationCase, BenchError>
        do throws(BenchError) {
            outcome = .success(try LargeRegistrationBenchmark(socket: socket, directory: scratch, verbs: verbs).run(bytes: largeRegistration, idleTrips: roundTrips))
        } catch {
            outcome = .failure(error)
        }
        // 6.5 and later refuse writable pins of page-cache files: nothing pinned to time.
        if case .failure(let error) = outcome, error.refused { return say("\(prefix)large registration: skipped: \(error)") }
        let row = try outcome.get()
        let mib = row.bytes >> 20
        say("\(prefix)large registration \(mib) MiB (\(row.strategy)): through mrleased \(ms(row.daemonRegisterMS)) ms,"
            + " bare ibv_reg_mr \(ms(row.bareRegisterMS)) ms | ratio \(String(format: "%.2f", row.registerRatio))"
            + " | bare as \(row.parallelSlices) slices from \(row.parallelSlices) threads \(ms(row.bareParallelMS)) ms (ratio to one MR \(String(format: "%.2f", row.bareParallelMS / row.bareRegisterMS)))"
            + " | restoration (owner's ack to restored) \(ms(row.restoreMS)) ms | ratio to bare \(String(format: "%.2f", row.restoreRatio))")
        for (what, probe) in [("idle", row.idle), ("during the registration", row.duringRegistration),
                              ("during the revocation", row.duringRevocation), ("during the restoration", row.duringRestoration)] {
            say("\(prefix)another client's stats round trip \(what): median \(us(probe.medianUS)) µs p99 \(us(probe.p99US)) µs"
                + " max \(us(probe.maxUS)) µs (n=\(probe.count)) | p99 ratio to idle \(String(format: "%.2f", probe.p99US / row.idle.p99US))")
        }
        // The issue's target is the registration's; the restoration's is measured alongside
        // (its pin runs on the worker too; the revocation's deregistration stays on the loop).
        say("\(prefix)target another client's stats p99 during a \(mib) MiB pinned registration within 2x idle:"
            + " \(row.registrationP99Ratio <= 2 ? "HOLDS" : "MISSED") (ratio \(String(format: "%.2f", row.registrationP99Ratio)))")
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            say("\(prefix)report-json " + String(decoding: try encoder.encode(row), as: UTF8.self))
        }
    }

    static func line(_ row: RoundTripCase) -> String {
        "stats round trip, \(row.placement) (\(row.requestBytes) B request, \(row.replyBytes) B reply), n=\(row.count): daemon median \(us(row.daemonMedianUS)) µs"
            + " p99 \(us(row.daemonP99US)) µs max \(us(row.daemonMaxUS)) µs | echo process median \(us(row.echoMedianUS)) µs"
            + " p99 \(us(row.echoP99US)) µs max \(us(row.echoMaxUS)) µs | ratio \(String(format: "%.2f", row.ratio))"
            + " | CPU per round trip: daemon \(us(row.daemonCPUPerRequestUS)) µs, echo \(us(row.echoCPUPerRequestUS)) µs"
    }

    static func line(_ row: DaemonRegistrationCase) -> String {
        "register \(row.regions) x \(row.length >> 20) MiB x \(row.passes) passes (\(row.strategy)): daemon median \(us(row.daemonMedianUS)) µs"
            + " p90 \(us(row.daemonP90US)) µs | direct Engine.register median \(us(row.directMedianUS)) µs p90 \(us(row.directP90US)) µs"
            + " | ratio \(String(format: "%.2f", row.ratio)) (deregister median: daemon \(us(row.daemonDeregisterMedianUS)) µs,"
            + " direct \(us(row.directDeregisterMedianUS)) µs; stats with \(row.regions) regions held: median \(us(row.statsWithRegionsMedianUS)) µs)"
            + " | register-batch of \(row.batchSize): per region median \(us(row.batchPerRegionMedianUS)) µs p90 \(us(row.batchPerRegionP90US)) µs,"
            + " ratio \(String(format: "%.2f", row.batchRatio))"
            + " | direct Engine.register right after a process switch (untimed echo round trip before each): median \(us(row.directAfterSwitchMedianUS)) µs"
    }
}

/// Microseconds, one decimal below 100.
func us(_ value: Double) -> String {
    value.isNaN ? "n/a" : String(format: value < 100 ? "%.1f" : "%.0f", value)
}

extension BenchCommand {
    /// The peer counts (`--peer-counts`) and the rdma_cm listener of a peer benchmark.
    func peerCases(_ flag: String) throws -> (counts: [Int], listen: String) {
        guard let counts = counts(peerCounts.replacingOccurrences(of: " ", with: "")), peerBreaks > 0 else {
            throw BenchError("--peer-counts: comma separated positive integers; --peer-breaks positive")
        }
        guard let listen = listen ?? ProcessInfo.processInfo.environment["MRLEASED_RDMA_CM_ADDRESS"].map({ "\($0):0" }) else {
            throw BenchError("\(flag) needs an rdma_cm address: --listen ADDR:PORT or $MRLEASED_RDMA_CM_ADDRESS (the vm-test guests set it)")
        }
        return (counts, listen)
    }

    /// `--peer-break`: lease break → each peer's first write with the restored region's keys,
    /// for each count of peers, against the no-grant baseline (break → `restored`) of the same run.
    func runPeerBreak() throws {
        let (counts, listen) = try peerCases("--peer-break")
        let directory = dir ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        let prefix = label.map { "[\($0)] " } ?? ""
        let scratch = "\(directory)/mrleased-bench-\(getpid())"
        guard mkdir(scratch, 0o700) == 0 else { throw BenchError("mkdir \(scratch): \(String(cString: strerror(errno)))") }
        let socket = "\(scratch)/bench.sock"
        let path = "\(scratch)/peer-break"
        defer { unlink(path); unlink(socket); rmdir(scratch) }
        let size = 1 << 20
        guard FileManager.default.createFile(atPath: path, contents: Data(count: size)) else { throw BenchError("create \(path)") }
        // Owners ack at once: the break is then bounded by the daemon, not by a quiesce deadline.
        let child = try Self.startDaemon(daemonBinary ?? Self.siblingBinary("mrleased"), socket: socket, device: nil,
                                         extraArguments: ["--listen", listen])
        defer { _ = child.stop() }
        say("\(prefix)mrleased-bench --peer-break: kernel \(Self.kernelRelease()), file \(path), listen \(listen), \(peerBreaks) breaks per case")
        let bench = PeerBreakBenchmark(socket: socket, path: path, fileSize: size)
        let baseline = try bench.run(peers: 0, breaks: peerBreaks)
        say("\(prefix)peer-break baseline (no grant): break → restored median \(ms(baseline.restored.medianMS)) ms, max \(ms(baseline.restored.maxMS)) ms; breaker median \(ms(baseline.breaker.medianMS)) ms (n=\(baseline.restored.count))")
        var loaded: PeerBreakBenchmark.Row?
        if let most = counts.max(), most > 1 {
            let row = try bench.run(peers: most, breaks: peerBreaks, elsewhere: true)
            loaded = row
            say("\(prefix)peer-break loaded baseline (\(most) peers writing into another file's region, no grant on the broken one): "
                + "break → restored median \(ms(row.restored.medianMS)) ms; breaker median \(ms(row.breaker.medianMS)) ms (n=\(row.restored.count))"
                + " | ratio breaker / baseline breaker \(ratio(row.breaker.medianMS, baseline.breaker.medianMS))")
        }
        var rows: [PeerBreakBenchmark.Row] = []
        for count in counts {
            let row = try bench.run(peers: count, breaks: peerBreaks)
            rows.append(row)
            say("\(prefix)peer-break \(count) peer\(count == 1 ? "" : "s"): break → first write with new keys median \(ms(row.firstWrite.medianMS)) ms, "
                + "p90 \(ms(row.firstWrite.p90MS)) ms, max \(ms(row.firstWrite.maxMS)) ms (n=\(row.firstWrite.count)); "
                + "break → restored median \(ms(row.restored.medianMS)) ms; breaker median \(ms(row.breaker.medianMS)) ms"
                + " | ratio first write / baseline restored \(ratio(row.firstWrite.medianMS, baseline.restored.medianMS))"
                + ", breaker / baseline breaker \(ratio(row.breaker.medianMS, baseline.breaker.medianMS))")
        }
        // Issue 18's targets, for the most peers: the breaker ≤ 1.3x the no-grant baseline's
        // (and, for what the load alone costs, against the loaded baseline), the first write
        // ≤ 1.5x the one-peer case's.
        if let most = rows.last, most.peers > 1, let one = rows.first(where: { $0.peers == 1 }) {
            let breaker = most.breaker.medianMS / baseline.breaker.medianMS
            let first = most.firstWrite.medianMS / one.firstWrite.medianMS
            var line = "\(prefix)peer-break verdict: \(most.peers) peers' breaker / baseline breaker \(ratio(most.breaker.medianMS, baseline.breaker.medianMS))"
                + " (≤ 1.3x: \(breaker <= 1.3 ? "HOLDS" : "MISSED"))"
            if let loaded { line += ", / loaded baseline breaker \(ratio(most.breaker.medianMS, loaded.breaker.medianMS))" }
            line += "; first write / 1 peer's \(ratio(most.firstWrite.medianMS, one.firstWrite.medianMS)) (≤ 1.5x: \(first <= 1.5 ? "HOLDS" : "MISSED"))"
            say(line)
        }
    }
}

extension BenchCommand {
    /// `--scale`: many regions in one daemon, over many files and clients (issue 11).
    func runScale() throws {
        let directory = dir ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        let prefix = label.map { "[\($0)] " } ?? ""
        let devices = (try? Device.list()) ?? []
        guard !devices.isEmpty else {
            say("\(prefix)scale: skipped: no RDMA device")
            return
        }
        let verbs = try VerbsRegistrar(deviceNamed: device ?? ProcessInfo.processInfo.environment["MRLEASED_RDMA_DEVICE"])
        let maxMR = Int(try verbs.context.query().maxMR)
        let scratch = "\(directory)/mrleased-bench-\(getpid())"
        guard mkdir(scratch, 0o700) == 0 else { throw BenchError("mkdir \(scratch): \(String(cString: strerror(errno)))") }
        defer { rmdir(scratch) }
        let socket = "\(scratch)/bench.sock"
        defer { unlink(socket) }
        let child = try Self.startDaemon(daemonBinary ?? Self.siblingBinary("mrleased"), socket: socket, device: verbs.deviceName,
                                         environment: ["MRLEASED_MAX_REGIONS_PER_UID": "\(scaleRegions + 1000)"])
        var report = Report(label: label ?? "", kernel: Self.kernelRelease(), guest: ProcessInfo.processInfo.environment["MRLEASED_VM"] != nil,
                            directory: directory, registrar: "\(verbs.deviceName) (verbs, through mrleased)", stub: false)
        say("\(prefix)mrleased-bench --scale: kernel \(report.kernel), dir \(directory), \(scaleRegions) regions x 4 KiB over \(scaleFiles) files"
            + " and \(scaleClients) clients, register-batch of \(batchSize); device \(verbs.deviceName) max_mr \(maxMR)")
        let bench = ScaleBenchmark(socket: socket, directory: scratch, daemonPID: child.pid)
        let row = try bench.run(regions: scaleRegions, clients: scaleClients, files: scaleFiles, batch: batchSize, maxMR: maxMR,
                                roundTrips: scaleRoundTrips) { say("\(prefix)scale: \($0)") }
        report.scale = row
        for line in Self.lines(row) { say(prefix + line) }
        let status = child.stop().map(String.init) ?? "none: still running 10 s after SIGTERM (killed)"
        say("\(prefix)mrleased exit status after SIGTERM: \(status)")
        try conclude(&report, prefix: prefix)
    }

    static func lines(_ row: ScaleCase) -> [String] {
        [
            "scale \(row.regions) regions (\(row.strategy))\(row.capped ? ", capped by max_mr \(row.maxMR)" : ""): registered in \(String(format: "%.1f", row.totalSeconds)) s;"
                + " rate over the first 1000 \(rate(row.rateFirstPerSecond))/s, over the last 1000 \(rate(row.rateLastPerSecond))/s | ratio \(String(format: "%.2f", row.rateRatio))",
            "scale stats round trip median: \(us(row.statsEmptyMedianUS)) µs with \(ScaleBenchmark.probeRegions) regions, \(us(row.statsFullMedianUS)) µs with \(row.regions + ScaleBenchmark.probeRegions) | ratio \(String(format: "%.2f", row.statsRatio))",
            "scale one-owner list round trip median (the probe's \(ScaleBenchmark.probeRegions) regions): \(us(row.listEmptyMedianUS)) µs alone, \(us(row.listFullMedianUS)) µs among \(row.regions + ScaleBenchmark.probeRegions) | ratio \(String(format: "%.2f", row.listRatio))",
            "scale daemon memory per region: RSS \(String(format: "%.0f", row.rssBytesPerRegion)) B, of which anonymous (the daemon's own) \(String(format: "%.0f", row.anonBytesPerRegion)) B"
                + " (file-backed: pages of the registered files mapped in the daemon, \(String(format: "%.0f", Double(row.full.rssFileKiB - row.idle.rssFileKiB) * 1024 / Double(row.regions))) B)",
            "scale census: fresh \(row.start) | probe only \(row.idle) | full \(row.full) | mass clients gone after \(String(format: "%.2f", row.releaseSeconds)) s: \(row.released) | every client gone: \(row.end)",
        ]
    }
}
