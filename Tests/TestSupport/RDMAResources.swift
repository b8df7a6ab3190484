import Foundation

/// What the kernel's RDMA resource tracking (`rdma resource show mr`) says this process holds:
/// the observable proof that an MR is really gone, independent of our own bookkeeping.
public enum RDMAResources {
    /// The rkeys of the MRs this process owns, per `rdma -j resource show mr`.
    public static func memoryRegionKeys(pid: Int32 = getpid()) throws -> Set<UInt32> {
        let result = try Subprocess.run("/usr/bin/env", ["rdma", "-j", "resource", "show", "mr"])
        guard result.status == 0 else { throw CocoaError(.featureUnsupported, userInfo: [NSLocalizedDescriptionKey: result.stderr]) }
        let entries = (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]]) ?? []
        return Set(entries.compactMap { entry in
            guard (entry["pid"] as? Int).map(Int32.init) == pid, let rkey = entry["rkey"] as? String else { return nil }
            return UInt32(rkey, radix: 16)
        })
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
