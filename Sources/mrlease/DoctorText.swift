import MRLeaseEngine
import MRLeasePolicy

/// The doctor's human-readable form: one section for the host, one per file.
enum DoctorText {
    static func render(_ report: DoctorReport) -> String {
        var out = ""
        let host = report.host
        out += "Host\n"
        out += row("kernel", host.kernel)
        out += row("RLIMIT_MEMLOCK", "soft \(bytes(host.memlockSoft)), hard \(bytes(host.memlockHard))")
        out += row("lease-break-time", host.leaseBreakTimeSeconds.map { "\($0) s" } ?? "unreadable")
        out += row("leases", host.leasesEnabled ? "enabled (fs.leases-enable = 1)" : "DISABLED (fs.leases-enable = 0): mrleased cannot guard files")
        out += row("CAP_LEASE", host.capLease ? "yes: may lease files it does not own" : "no: may lease only files this user owns")
        out += row("CAP_IPC_LOCK", host.capIPCLock ? "yes" : "no: pinned MRs count against RLIMIT_MEMLOCK")
        out += row("own-fd layout", "\(host.layoutProtection): a truncate/fallocate through a client's own fd is caught after the fact and revoked; pinned MRs lose RDMA WRITEs in between")
        out += "\nRDMA devices\n"
        if let problem = host.rdmaProblem { out += "  \(problem)\n" }
        for device in host.devices {
            out += "  \(device.name)  guid \(device.guid)  firmware \(device.firmware ?? "?")\n"
            if let error = device.error { out += "    error: \(error)\n" }
            out += "    ODP: \(device.odpSupported ? "supported" : "not supported")"
            if device.odpSupported {
                out += ", implicit \(device.odpImplicit ? "yes" : "no"), RC [\(device.odpRC.joined(separator: ","))]"
                    + ", UC [\(device.odpUC.joined(separator: ","))], UD [\(device.odpUD.joined(separator: ","))]"
            }
            out += "\n"
            if let integrity = device.odpIntegrityDetail {
                out += "    ODP integrity: \(integrity)\n"
                out += "    transfer alignment: \(device.transferAlignment.map(String.init) ?? "?")"
                    + (device.transferAlignment == 1 ? " (any offset and length)" : " (peers keep remote address and length to multiples of it, path MTU 4096)") + "\n"
            }
            for port in device.ports {
                out += "    port \(port.port): \(port.state), \(port.linkLayer), MTU \(port.activeMTU)\n"
                for gid in port.gids { out += "      GID \(gid)\n" }
            }
        }
        for file in report.files {
            out += "\nFile \(file.path)\n"
            if let error = file.error {
                out += row("error", error)
                continue
            }
            out += row("filesystem", "\(file.filesystem ?? "?") (\(file.backing ?? "?"))")
            out += row("DAX", "\(file.dax == true ? "on" : "off")" + (file.mountDAX.map { ", mount option \($0)" } ?? ""))
            out += row("size", "\(file.size ?? 0) bytes, dev \(file.device ?? "?") ino \(file.inode ?? 0)")
            out += row("extents", file.extentCount.map { "\($0) (FIEMAP)" } ?? (file.extentNote ?? "?"))
            out += row("opened", file.openedWritable == true ? "read-write" : "read-only")
            if let lease = file.lease { out += row("lease", lease.message) }
            for (index, step) in (file.plan ?? []).enumerated() {
                out += row(index == 0 ? "plan" : "", step)
            }
            for trial in file.trials {
                var text = "\(trial.result)"
                if let op = trial.op, let errno = trial.errno { text += ": \(op) → \(errno) (\(trial.errnoValue ?? 0))" }
                if let note = trial.note { text += ": \(note)" }
                out += row("\(trial.device) \(trial.kind)", "\(text)  [\(trial.flags)]")
            }
            if let strategy = file.strategy {
                out += row("strategy", "\(strategy.uppercased()) on \(file.strategyDevice ?? "?"): \(file.strategyReason ?? "")")
                if let policies = file.layoutPolicies {
                    out += row("layout policy", "\(policies.joined(separator: " or ")): \(file.layoutPolicyReason ?? "")")
                }
            } else {
                out += row("strategy", "REFUSE: \(file.refusal ?? "unknown")")
            }
        }
        return out
    }

    static func row(_ label: String, _ value: String) -> String {
        "  " + label.padding(toLength: 26) + value + "\n"
    }

    static func bytes(_ value: UInt64?) -> String {
        guard let value else { return "unlimited" }
        if value >= 1 << 30 { return "\(value >> 30) GiB" }
        if value >= 1 << 20 { return "\(value >> 20) MiB" }
        if value >= 1 << 10 { return "\(value >> 10) KiB" }
        return "\(value) B"
    }
}

extension String {
    func padding(toLength length: Int) -> String {
        count >= length ? self + " " : self + String(repeating: " ", count: length - count)
    }
}
