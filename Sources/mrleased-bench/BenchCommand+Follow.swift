import Foundation
import Glibc
import MRLeaseProtocol

extension BenchCommand {
    /// `--follow-break`: a page of an ODP region punched by another opener while 1 and 16
    /// peers write through it, under `follow` and then `revoke`, against the same punch of an
    /// unregistered file (FollowBreakBenchmark). Prints issue 18's verdicts.
    func runFollowBreak() throws {
        let (counts, listen) = try peerCases("--follow-break")
        guard counts.allSatisfy({ $0 > 0 }) else { throw BenchError("--follow-break: every --peer-counts entry must be positive (peers write the punched region)") }
        let directory = dir ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        let prefix = label.map { "[\($0)] " } ?? ""
        let scratch = "\(directory)/mrleased-bench-\(getpid())"
        guard mkdir(scratch, 0o700) == 0 else { throw BenchError("mkdir \(scratch): \(String(cString: strerror(errno)))") }
        let socket = "\(scratch)/bench.sock", path = "\(scratch)/follow", plain = "\(scratch)/unregistered"
        defer { unlink(path); unlink(plain); unlink(socket); rmdir(scratch) }
        let size = 1 << 20
        for file in [path, plain] {
            // Written, not sparse: every punch frees blocks, in both files alike.
            guard FileManager.default.createFile(atPath: file, contents: Data(repeating: 0x5a, count: size)) else { throw BenchError("create \(file)") }
        }
        let child = try Self.startDaemon(daemonBinary ?? Self.siblingBinary("mrleased"), socket: socket, device: nil,
                                         extraArguments: ["--listen", listen])
        defer { _ = child.stop() }
        say("\(prefix)mrleased-bench --follow-break: kernel \(Self.kernelRelease()), dir \(directory), listen \(listen), \(peerBreaks) punches per case")
        let bench = FollowBreakBenchmark(socket: socket, path: path, unregisteredPath: plain, fileSize: size)
        for policy in [RegionLayoutPolicy.follow, .revoke] {
            for count in counts {
                let row = try bench.run(policy: policy, peers: count, punches: peerBreaks)
                let waitRatio = row.breaker.medianMS / row.unregistered.medianMS
                var line = "\(prefix)follow-break policy=\(policy.rawValue) peers=\(count) strategy=\(row.strategy):"
                    + " breaker median \(ms(row.breaker.medianMS)) ms (max \(ms(row.breaker.maxMS))) vs unregistered \(ms(row.unregistered.medianMS)) ms"
                    + " (max \(ms(row.unregistered.maxMS))): ratio \(ratio(row.breaker.medianMS, row.unregistered.medianMS));"
                    + " a region page no peer writes \(ms(row.idlePage.medianMS)) ms, the unregistered file's page mapped here \(ms(row.mappedUnregistered.medianMS)) ms;"
                    + " reconnects \(row.reconnects); longest gap across a punch \(ms(row.gapAboveNormal.maxMS)) ms above the peer's normal"
                    + " (median \(ms(row.gapAboveNormal.medianMS)); normal gap \(ms(row.normalGapMS)) ms)"
                if policy == .follow {
                    line += " | wait ≤ 1.1x: \(waitRatio <= 1.1 ? "HOLDS" : "MISSED"); disconnects 0: \(row.reconnects == 0 ? "HOLDS" : "MISSED");"
                        + " gap ≤ 5 ms above normal: \(row.gapAboveNormal.maxMS <= 5 ? "HOLDS" : "MISSED")"
                }
                say(line)
            }
        }
    }
}
