import Foundation
import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeaseProtocol
import SystemPackage

/// `Field:   N kB` of a /proc file (status, meminfo) in KiB; -1 when it is not there.
func kibField(_ field: String, in text: String) -> Int {
    text.split(separator: "\n").first { $0.hasPrefix(field + ":") }
        .flatMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first }.flatMap { Int($0) } ?? -1
}

/// What one daemon process holds, read from outside it: fds, MRs (the rdma tool), leases
/// (/proc/locks), and its memory (/proc/PID/status).
struct DaemonCensus: Codable, Equatable, CustomStringConvertible {
    var fds: Int
    var mrs: Int?
    var leases: Int
    var rssKiB: Int
    var rssAnonKiB: Int
    var rssFileKiB: Int

    static func take(pid: pid_t) -> DaemonCensus {
        let status = (try? readProcFile("/proc/\(pid)/status")) ?? ""
        func kib(_ field: String) -> Int { kibField(field, in: status) }
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        let mrs: Int? = access("/usr/bin/rdma", X_OK) == 0 || access("/sbin/rdma", X_OK) == 0
            ? ProcessCensus.lines(of: "PATH=/usr/bin:/usr/sbin:/sbin:/bin rdma resource show mr pid \(pid) 2>/dev/null").filter { $0.contains("mrn") }.count
            : nil
        // "1: LEASE  ACTIVE    WRITE 1234 ..." (the pid is the fifth field).
        let leases = ((try? readProcFile("/proc/locks")) ?? "").split(separator: "\n").count { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            return fields.count > 4 && fields[1] == "LEASE" && fields[4] == "\(pid)"
        }
        return DaemonCensus(fds: fds, mrs: mrs, leases: leases, rssKiB: kib("VmRSS"), rssAnonKiB: kib("RssAnon"), rssFileKiB: kib("RssFile"))
    }

    var description: String {
        "fds \(fds), MRs \(mrs.map(String.init) ?? "n/a (no rdma tool)"), leases \(leases), RSS \(rssKiB) KiB (anon \(rssAnonKiB), file \(rssFileKiB))"
    }
}

/// One row of the scale table: `regions` 4 KiB regions registered through one daemon by
/// `clients` connections over `files` files (register-batch, `batch` ranges a request).
struct ScaleCase: Codable {
    var regions: Int
    var clients: Int
    var files: Int
    var batch: Int
    var strategy: String
    /// The device's max_mr, and whether it capped `regions`.
    var maxMR: Int
    var capped: Bool
    /// Regions per second over the first and the last 1 000 registered.
    var rateFirstPerSecond: Double
    var rateLastPerSecond: Double
    var totalSeconds: Double
    /// `stats` and one owner's `list` (the probe's 16 regions) round trips, median µs, with
    /// only the probe's regions and with every region registered.
    var statsEmptyMedianUS: Double
    var statsFullMedianUS: Double
    var listEmptyMedianUS: Double
    var listFullMedianUS: Double
    var start: DaemonCensus
    var idle: DaemonCensus
    var full: DaemonCensus
    /// After the mass clients left (the probe's regions still held: compare with `idle`), and
    /// after every client left (compare with `start`).
    var released: DaemonCensus
    var end: DaemonCensus
    /// Seconds from closing every client to the daemon holding no region.
    var releaseSeconds: Double

    /// The rate and the machine's memory as the registration went on (about every tenth of
    /// it): whether a falling rate follows the memory the regions take (issue 19, 6.1 pinned).
    var curve: [ScaleStep] = []

    var rateRatio: Double { rateLastPerSecond / rateFirstPerSecond }
    var statsRatio: Double { statsFullMedianUS / statsEmptyMedianUS }
    var listRatio: Double { listFullMedianUS / listEmptyMedianUS }
    var rssBytesPerRegion: Double { Double(full.rssKiB - idle.rssKiB) * 1024 / Double(regions) }
    var anonBytesPerRegion: Double { Double(full.rssAnonKiB - idle.rssAnonKiB) * 1024 / Double(regions) }
}

/// One point of the scale curve: the rate over the last 1 000 regions registered, and
/// /proc/meminfo's MemAvailable, Cached and Shmem (the guest's tmpfs, where its ext4 image lives).
struct ScaleStep: Codable {
    var regions: Int
    /// nil at the start, before any block of 1 000 was timed (JSON has no NaN: a NaN here
    /// made `--json` fail and the run exit non-zero).
    var ratePerSecond: Double?
    var memAvailableKiB: Int
    var cachedKiB: Int
    var shmemKiB: Int

    static func memory() -> (available: Int, cached: Int, shmem: Int) {
        let text = (try? readProcFile("/proc/meminfo")) ?? ""
        return (kibField("MemAvailable", in: text), kibField("Cached", in: text), kibField("Shmem", in: text))
    }

    var description: String {
        "\(regions) regions: \(ratePerSecond.map { "\(Int($0))/s" } ?? "no block timed yet"), MemAvailable \(memAvailableKiB / 1024) MiB, Cached \(cachedKiB / 1024) MiB, Shmem \(shmemKiB / 1024) MiB"
    }
}

/// Registers many regions through a running daemon and measures what grows with them.
final class ScaleBenchmark {
    let socket: String
    let directory: String
    let daemonPID: pid_t
    static let regionBytes: UInt64 = 4096
    static let probeRegions = 16

    init(socket: String, directory: String, daemonPID: pid_t) {
        self.socket = socket
        self.directory = directory
        self.daemonPID = daemonPID
    }

    /// A sparse file of `pages` pages: registration needs no block behind a page (ODP faults
    /// on access, a pinned registration allocates), and 400 MiB of writes would only time the
    /// guest's disk.
    func makeFile(_ name: String, pages: Int) throws(BenchError) -> FileDescriptor {
        let path = "\(directory)/\(name)"
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.create, .truncate, .closeOnExec], permissions: [.ownerReadWrite])
        } catch { throw BenchError("create \(path): \(error)") }
        guard ftruncate(fd.rawValue, off_t(UInt64(pages) * Self.regionBytes)) == 0 else {
            throw BenchError("ftruncate \(path): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    func removeFiles(_ names: [String]) {
        for name in names { unlink("\(directory)/\(name)") }
    }

    /// Registers `[first, first+count)` pages of `fd` as 4 KiB regions, `batch` a request.
    func register(_ client: DaemonClient, fd: FileDescriptor, pages: Range<Int>, batch: Int) throws(BenchError) -> String {
        var strategy = ""
        var start = pages.lowerBound
        while start < pages.upperBound {
            let end = min(start + batch, pages.upperBound)
            let ranges = (start..<end).map {
                Request.Register(offset: UInt64($0) * Self.regionBytes, length: Self.regionBytes, access: [.read, .write])
            }
            guard case .registerBatch(let made) = try client.request(.registerBatch(ranges), fds: [fd]), made.count == ranges.count else {
                throw BenchError("register-batch of \(ranges.count): unexpected reply")
            }
            strategy = made.first?.strategy.rawValue ?? strategy
            start = end
        }
        return strategy
    }

    /// Median µs of `count` round trips of `request`.
    func timeRequest(_ client: DaemonClient, _ request: Request, count: Int) throws(BenchError) -> Double {
        var samples = Samples()
        for _ in 0..<count {
            let start = Engine.now()
            _ = try client.request(request)
            samples.append(Engine.now() - start)
        }
        return samples.medianMS * 1000
    }

    func run(regions wanted: Int, clients clientCount: Int, files fileCount: Int, batch: Int, maxMR: Int,
             roundTrips: Int, progress: (String) -> Void) throws(BenchError) -> ScaleCase {
        // Room under max_mr for the probe's regions; the rest is what the device allows.
        let regions = min(wanted, max(0, maxMR - Self.probeRegions - 64))
        let perFile = (regions + fileCount - 1) / fileCount
        let start = DaemonCensus.take(pid: daemonPID)

        var probe: DaemonClient! = try DaemonClient(path: socket)
        _ = try probe.request(.hello(.init(clientName: "mrleased-bench scale probe")))
        let probeFD = try makeFile("scale-probe", pages: Self.probeRegions)
        var names = ["scale-probe"]
        defer { removeFiles(names) }
        defer { try? probeFD.close() }
        _ = try register(probe, fd: probeFD, pages: 0..<Self.probeRegions, batch: batch)
        let listRequest = Request.list(after: nil, all: false)
        // The watcher asks `stats` while the daemon releases; it connects now, so the idle
        // census and the one after the release both count its connection.
        var watcher: DaemonClient? = try DaemonClient(path: socket)
        _ = try timeRequest(probe, .stats, count: roundTrips / 4)  // warm-up
        let statsEmpty = try timeRequest(probe, .stats, count: roundTrips)
        let listEmpty = try timeRequest(probe, listRequest, count: roundTrips)
        let idle = DaemonCensus.take(pid: daemonPID)

        var clients: [DaemonClient] = []
        for i in 0..<clientCount {
            let client = try DaemonClient(path: socket)
            _ = try client.request(.hello(.init(clientName: "mrleased-bench scale \(i)")))
            clients.append(client)
        }
        // Registration in file order, file f by client f mod clients; the time of every block of
        // 1 000 regions is kept, so the rate at the start and at the end come from one run.
        var done = 0
        var strategy = ""
        var blockStarts: [UInt64] = [Engine.now()]
        var curve: [ScaleStep] = []
        func step() {
            let memory = ScaleStep.memory()
            let last = blockStarts.count > 1 ? Double(blockStarts[blockStarts.count - 1] - blockStarts[blockStarts.count - 2]) / 1e9 : nil
            curve.append(ScaleStep(regions: done, ratePerSecond: last.map { 1000 / $0 }, memAvailableKiB: memory.available,
                                   cachedKiB: memory.cached, shmemKiB: memory.shmem))
        }
        step()
        let began = Engine.now()
        for f in 0..<fileCount where done < regions {
            let name = "scale-\(f)"
            let fd = try makeFile(name, pages: perFile)
            names.append(name)
            defer { try? fd.close() }
            var page = 0
            while page < perFile && done < regions {
                let step = min(batch, perFile - page, regions - done, 1000 - done % 1000)
                strategy = try register(clients[f % clientCount], fd: fd, pages: page..<(page + step), batch: step)
                page += step
                done += step
                if done % 1000 == 0 { blockStarts.append(Engine.now()) }
            }
            if (f + 1) % max(1, fileCount / 10) == 0 {
                step()
                progress("\(done) regions registered over \(f + 1) files; \(curve[curve.count - 1].description)")
            }
        }
        let totalSeconds = Double(Engine.now() - began) / 1e9
        let blocks = zip(blockStarts, blockStarts.dropFirst()).map { Double($1 - $0) / 1e9 }
        let full = DaemonCensus.take(pid: daemonPID)
        let statsFull = try timeRequest(probe, .stats, count: roundTrips)
        let listFull = try timeRequest(probe, listRequest, count: roundTrips)
        guard case .stats(let stats) = try probe.request(.stats), stats.regions == UInt64(done + Self.probeRegions) else {
            throw BenchError("stats does not count the \(done + Self.probeRegions) regions registered")
        }

        // Every client goes: the daemon must give everything back.
        let closed = Engine.now()
        clients = []
        while true {
            guard case .stats(let now) = try watcher!.request(.stats) else { throw BenchError("stats: unexpected reply") }
            if now.regions == UInt64(Self.probeRegions) { break }
            if Engine.now() - closed > 120_000_000_000 { throw BenchError("the daemon still holds \(now.regions) regions 120 s after its clients left") }
            usleep(2000)
        }
        let releaseSeconds = Double(Engine.now() - closed) / 1e9
        let released = DaemonCensus.take(pid: daemonPID)
        // Then the probe and the watcher: back to the fresh daemon's census (the close is
        // handled in the daemon's next loop turn, so it is waited for, 10 s at most).
        probe = nil
        watcher = nil
        var end = DaemonCensus.take(pid: daemonPID)
        let deadline = Engine.now() + 10_000_000_000
        while (end.fds != start.fds || end.leases != 0 || (end.mrs ?? 0) != 0) && Engine.now() < deadline {
            usleep(10_000)
            end = DaemonCensus.take(pid: daemonPID)
        }
        var row = ScaleCase(regions: done, clients: clientCount, files: fileCount, batch: batch, strategy: strategy,
                         maxMR: maxMR, capped: regions < wanted,
                         rateFirstPerSecond: 1000 / (blocks.first ?? .nan), rateLastPerSecond: 1000 / (blocks.last ?? .nan),
                         totalSeconds: totalSeconds,
                         statsEmptyMedianUS: statsEmpty, statsFullMedianUS: statsFull,
                         listEmptyMedianUS: listEmpty, listFullMedianUS: listFull,
                         start: start, idle: idle, full: full, released: released, end: end, releaseSeconds: releaseSeconds)
        row.curve = curve
        return row
    }
}
