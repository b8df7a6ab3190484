import Foundation
import LinuxFile
import TestSupport

/// What the guest's kernel says the daemon holds: its fds, its MRs (rdma resource), its leases.
extension RunningDaemon {
    /// The daemon on the guest's RDMA device, logging warnings only: these tests read what the
    /// kernel says it holds, not its log. `layoutPolicy` "revoke" for a suite about the lease
    /// protocol (leases held, revoked, released): under the default, `follow`, an ODP region's
    /// file holds no lease (FollowVMTests); pinned regions revoke under either.
    convenience init(device: String, layoutPolicy: String? = nil, environment: [String: String] = [:],
                     socketPath: String? = nil) throws {
        try self.init(arguments: ["--device", device, "--log-level", "warning"] + (layoutPolicy.map { ["--layout-policy", $0] } ?? []),
                      environment: environment, socketPath: socketPath)
    }

    /// What the daemon holds once its fd count has stopped moving (a connection the daemon
    /// has not yet seen close still counts until its next loop turn).
    func settledHoldings() throws -> (fds: Int, mrs: Set<UInt32>, leases: Int) {
        var previous = try holdings()
        for _ in 0..<100 {
            usleep(50_000)
            let now = try holdings()
            if now.fds == previous.fds && now.mrs == previous.mrs && now.leases == previous.leases { return now }
            previous = now
        }
        return previous
    }

    /// What the daemon holds right now, as the kernel sees it.
    func holdings() throws -> (fds: Int, mrs: Set<UInt32>, leases: Int) {
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        let locks = try readProcFile("/proc/locks")
        let leases = locks.split(separator: "\n").filter { $0.contains("LEASE") && $0.split(separator: " ").contains(Substring("\(pid)")) }.count
        return (fds, try RDMAResources.memoryRegionKeys(pid: pid), leases)
    }
}
