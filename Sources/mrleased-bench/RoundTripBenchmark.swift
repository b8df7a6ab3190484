import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol

/// The request round trip under one CPU placement: `stats` through the daemon against the
/// echo process, µs, and the CPU time each peer spent per round trip.
struct RoundTripCase: Codable {
    var placement: String
    var count: Int
    var requestBytes: Int
    var replyBytes: Int
    var daemonMedianUS: Double
    var daemonP99US: Double
    var daemonMaxUS: Double
    var echoMedianUS: Double
    var echoP99US: Double
    var echoMaxUS: Double
    /// median(daemon) / median(echo).
    var ratio: Double
    /// The daemon's CPU time (its thread's schedstat) per round trip: its own work, whatever
    /// the scheduler does with the wake-ups.
    var daemonCPUPerRequestUS: Double
    var echoCPUPerRequestUS: Double
}

/// Where the peers run. A round trip between two CPUs costs several times one on a single CPU
/// (host, Firecracker: about 28-50 µs against 7 µs for a C echo; the wake-up becomes an IPI),
/// so the scheduler's choice alone can swing the numbers; the pinned cases fix it both ways.
enum Placement: String, CaseIterable {
    case scheduler = "unpinned"
    case sameCPU = "same CPU"
    case crossCPU = "two CPUs"

    /// (this process's CPU, the peers' CPU), nil for the scheduler's choice.
    var cpus: (client: Int, peer: Int)? {
        switch self {
        case .scheduler: nil
        case .sameCPU: (0, 0)
        case .crossCPU: (0, 1)
        }
    }
}

enum Affinity {
    static var cpuCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// `pid` (0: this thread) on `cpu` alone, or on every CPU when nil.
    ///
    /// The corresponding C function is `sched_setaffinity`.
    static func pin(_ pid: pid_t, to cpu: Int?) throws(BenchError) {
        var set = cpu_set_t()
        withUnsafeMutableBytes(of: &set) { bytes in
            for c in cpu.map({ [$0] }) ?? Array(0..<cpuCount) { bytes[c / 8] |= UInt8(1 << (c % 8)) }
        }
        guard setAffinity(pid, MemoryLayout<cpu_set_t>.size, &set) == 0 else {
            throw BenchError("sched_setaffinity(\(pid), \(cpu.map(String.init) ?? "all")): \(String(cString: strerror(errno)))")
        }
    }

    /// glibc declares it only under _GNU_SOURCE, which the Glibc module does not define.
    private typealias SetAffinity = @convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32
    private static func setAffinity(_ pid: pid_t, _ size: Int, _ set: UnsafeRawPointer) -> Int32 {
        guard let symbol = dlsym(nil, "sched_setaffinity") else {  // nil: RTLD_DEFAULT
            errno = ENOSYS
            return -1
        }
        return unsafeBitCast(symbol, to: SetAffinity.self)(pid, size, set)
    }

    /// Nanoseconds `pid`'s main thread has run (first field of /proc/PID/schedstat).
    static func cpuNanoseconds(_ pid: pid_t) -> UInt64 {
        ((try? readProcFile("/proc/\(pid)/schedstat")) ?? "").split(separator: " ").first.flatMap { UInt64($0) } ?? 0
    }
}

/// Round trips of `stats` against the echo process, in alternating blocks of 1000 so that
/// whatever else the machine does falls on both alike.
func measureRoundTrip(client: DaemonClient, daemonPID: pid_t, placement: Placement, count: Int, warmUp: Int) throws(BenchError) -> RoundTripCase {
    // The echo peer answers with the bytes the daemon answered with: same sizes both ways.
    let request = Codec.encode(.stats, id: client.nextID)
    let reply = try client.roundTrip(request)
    client.nextID += 1
    let echo = try EchoPeer(reply: reply)
    defer { echo.close() }
    let cpus = placement.cpus
    try Affinity.pin(0, to: cpus?.client)
    try Affinity.pin(daemonPID, to: cpus?.peer)
    try Affinity.pin(echo.pid, to: cpus?.peer)
    defer {
        try? Affinity.pin(0, to: nil)
        try? Affinity.pin(daemonPID, to: nil)
    }

    var discard = Samples()
    try client.timeStats(warmUp, into: &discard)
    try echo.time(request, count: warmUp, into: &discard)
    var daemon = Samples(), floor = Samples()
    var daemonCPU: UInt64 = 0, echoCPU: UInt64 = 0
    var done = 0
    while done < count {
        let n = min(1000, count - done)
        let d0 = Affinity.cpuNanoseconds(daemonPID)
        try client.timeStats(n, into: &daemon)
        let e0 = Affinity.cpuNanoseconds(echo.pid)
        daemonCPU += Affinity.cpuNanoseconds(daemonPID) - d0
        try echo.time(request, count: n, into: &floor)
        echoCPU += Affinity.cpuNanoseconds(echo.pid) - e0
        done += n
    }
    return RoundTripCase(placement: placement.rawValue, count: count, requestBytes: request.count, replyBytes: reply.count,
                         daemonMedianUS: daemon.quantileUS(0.5), daemonP99US: daemon.quantileUS(0.99), daemonMaxUS: daemon.quantileUS(1),
                         echoMedianUS: floor.quantileUS(0.5), echoP99US: floor.quantileUS(0.99), echoMaxUS: floor.quantileUS(1),
                         ratio: daemon.quantileUS(0.5) / floor.quantileUS(0.5),
                         daemonCPUPerRequestUS: Double(daemonCPU) / Double(count) / 1000,
                         echoCPUPerRequestUS: Double(echoCPU) / Double(count) / 1000)
}

extension Samples {
    func quantileUS(_ q: Double) -> Double { quantileMS(q) * 1000 }
}
