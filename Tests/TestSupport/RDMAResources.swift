import Foundation

/// What the kernel's RDMA resource tracking (`rdma resource show mr`) says this process holds:
/// the observable proof that an MR is really gone, independent of our own bookkeeping.
public enum RDMAResources {
    /// The rkeys of the MRs this process owns, per `rdma -j resource show mr`.
    public static func memoryRegionKeys(pid: Int32 = getpid()) throws -> Set<UInt32> {
        try memoryRegionKeys(threads: threads(of: pid))
    }

    /// The rkeys of the MRs that any of `threads` created: for a process that has died, pass the
    /// threads read (with `threads(of:)`) while it lived.
    public static func memoryRegionKeys(threads: Set<Int32>) throws -> Set<UInt32> {
        Set(try entries("mr", threads: threads).compactMap { entry in
            (entry["rkey"] as? String).flatMap { UInt32($0, radix: 16) }
        })
    }

    /// The entries of `rdma -j resource show KIND` (qp, pd, mr, cq, cm_id) that belong to process `pid`.
    public static func entries(_ kind: String, pid: Int32 = getpid()) throws -> [[String: Any]] {
        try entries(kind, threads: threads(of: pid))
    }

    /// The ids of `pid`'s threads, `pid` among them. The kernel's resource tracking names each
    /// object by the *thread* that created it (its `pid` field is that thread's id), and the daemon
    /// registers grant MRs on a worker thread: matching the process id alone misses those.
    public static func threads(of pid: Int32) -> Set<Int32> {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return Set(names.compactMap { Int32($0) }).union([pid])
    }

    /// The entries of `rdma -j resource show KIND` created by any of `threads`; nil: every
    /// entry, whoever made it (a thread that has exited leaves its objects under its own id).
    public static func entries(_ kind: String, threads: Set<Int32>?) throws -> [[String: Any]] {
        let result = try Subprocess.run("/usr/bin/env", ["rdma", "-j", "resource", "show", kind])
        guard result.status == 0 else {
            throw CocoaError(.featureUnsupported, userInfo: [NSLocalizedDescriptionKey: "rdma resource show \(kind): \(result.stderr)"])
        }
        let entries = (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]]) ?? []
        guard let threads else { return entries }
        return entries.filter { entry in (entry["pid"] as? Int).map { threads.contains(Int32($0)) } ?? false }
    }

    /// How many fds this process has open.
    public static func openFDCount() -> Int { openFDs().count }

    /// This process's open fds and what they point at, for leak reports. An fd listed but
    /// closed before its link is read is left out: it is not held (the listing's own directory
    /// fd is one; another thread's short-lived fd, such as a pipe of a child just reaped, is
    /// another), and counting it made leak checks fail without a leak.
    public static func openFDs() -> [String: String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return Dictionary(uniqueKeysWithValues: names.compactMap { name in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)")).map { (name, $0) }
        })
    }
}
