import LinuxFile
import MRLeaseEngine
import SystemPackage
import Verbs

/// A registrar double: no RDMA here, so it hands out fake keys and records, at each
/// deregistration, whether the file's lease and the region's mapping were still in place.
/// It checks ordering and error paths; it never stands for RDMA working (the VM tests do).
public final class RecordingRegistrar: Registrar {
    public final class FakeMR: RegisteredMemory {
        public let lkey: UInt32, rkey: UInt32, address: UInt64
        let onDeregister: (FakeMR) -> Void
        let onPrefetch: (FakeMR, Bool) -> Void
        init(key: UInt32, address: UInt64, onDeregister: @escaping (FakeMR) -> Void, onPrefetch: @escaping (FakeMR, Bool) -> Void) {
            lkey = key
            rkey = key | 0x8000_0000
            self.address = address
            self.onDeregister = onDeregister
            self.onPrefetch = onPrefetch
        }
        public func deregister() throws(VerbsError) { onDeregister(self) }
        public func prefetch(forWriting: Bool, synchronous: Bool) throws(VerbsError) { onPrefetch(self, forWriting) }
    }

    public var deviceName: String { "fake0" }
    public var odp: ODPCaps
    public var nextKey: UInt32 = 1
    public var steps: [String] = []
    /// Every registration's address and length, in order.
    public var ranges: [(address: UInt64, length: Int)] = []
    /// The file whose lease each deregistration checks.
    public var inode: UInt64 = 0
    /// Whether each deregistration reads /proc/locks and /proc/self/maps for its step (tests
    /// with thousands of regions turn it off: two file reads per MR).
    public var checksAtDeregistration = true
    /// Registrations with these flags fail with the errno, as the kernel would refuse them.
    public var refuse: [AccessFlags: Errno] = [:]

    public init(odp: ODPCaps = ODPCaps(supported: true, implicit: false, rc: [.read, .write, .atomic])) {
        self.odp = odp
    }

    public func register(address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) throws(VerbsError) -> any RegisteredMemory {
        if let errno = refuse.first(where: { flags.isSuperset(of: $0.key) })?.value {
            throw VerbsError(op: "ibv_reg_mr", errno: errno)
        }
        defer { nextKey += 1 }
        steps.append("register \(flags.contains(.onDemand) ? "odp" : "pinned")")
        ranges.append((UInt64(UInt(bitPattern: address)), length))
        return FakeMR(key: nextKey, address: UInt64(UInt(bitPattern: address))) { [unowned self] mr in
            guard self.checksAtDeregistration else { return self.steps.append("deregister") }
            let leased = Self.leaseHeld(inode: self.inode)
            let mapped = Self.isMapped(address: mr.address)
            self.steps.append("deregister lease=\(leased) mapped=\(mapped)")
        } onPrefetch: { [unowned self] mr, writing in
            self.steps.append("prefetch \(writing ? "write" : "read") key \(mr.lkey)")
        }
    }

    /// /proc/locks lists leases as "N: LEASE  ACTIVE|BREAKING  WRITE|READ|UNLCK  pid  maj:min:ino …".
    public static func leaseHeld(inode: UInt64) -> Bool {
        let locks = (try? readProcFile("/proc/locks")) ?? ""
        return locks.split(separator: "\n").contains { $0.contains("LEASE") && $0.contains(":\(inode) ") }
    }

    /// The mappings of this process whose file is `inode` (the /proc/self/maps lines naming it).
    public static func mappings(ofInode inode: UInt64) -> Int {
        let maps = (try? readProcFile("/proc/self/maps")) ?? ""
        return maps.split(separator: "\n").count { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            return fields.count >= 5 && fields[4] == "\(inode)"
        }
    }

    public static func isMapped(address: UInt64) -> Bool {
        let maps = (try? readProcFile("/proc/self/maps")) ?? ""
        return maps.split(separator: "\n").contains { line in
            let range = line.prefix { $0 != " " }.split(separator: "-").compactMap { UInt64($0, radix: 16) }
            return range.count == 2 && range[0] <= address && address < range[1]
        }
    }
}
