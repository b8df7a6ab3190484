import Foundation

/// What the kernel's RDMA resource tracking (`rdma resource show mr`) says this process holds:
/// the observable proof that an MR is really gone, independent of our own bookkeeping.
public enum RDMAResources {
    /// The rkeys of the MRs this process owns, per `rdma -j resource show mr`.
    public static func memoryRegionKeys(pid: Int32 = getpid()) throws -> Set<UInt32> {
        Set(try entries("mr", pid: pid).compactMap { entry in
            (entry["rkey"] as? String).flatMap { UInt32($0, radix: 16) }
        })
    }

    /// The entries of `rdma -j resource show KIND` (qp, pd, mr, cq, cm_id) that belong to `pid`.
    public static func entries(_ kind: String, pid: Int32 = getpid()) throws -> [[String: Any]] {
        let result = try Subprocess.run("/usr/bin/env", ["rdma", "-j", "resource", "show", kind])
        guard result.status == 0 else {
            throw CocoaError(.featureUnsupported, userInfo: [NSLocalizedDescriptionKey: "rdma resource show \(kind): \(result.stderr)"])
        }
        let entries = (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]]) ?? []
        return entries.filter { ($0["pid"] as? Int).map(Int32.init) == pid }
    }

    /// How many fds this process has open.
    public static func openFDCount() -> Int { openFDs().count }

    /// This process's open fds and what they point at, for leak reports.
    public static func openFDs() -> [String: String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return Dictionary(uniqueKeysWithValues: names.map { name in
            (name, (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)")) ?? "?")
        })
    }
}
