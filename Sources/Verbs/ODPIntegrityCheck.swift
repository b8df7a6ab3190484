import Glibc
import SystemPackage

/// What the ODP integrity self-test found on a device.
public enum ODPIntegrity: Sendable, Equatable, CustomStringConvertible {
    /// An unaligned, multi-packet RDMA WRITE into an ODP MR and an RDMA READ from one landed
    /// every byte where it belongs.
    case intact
    /// A transfer completed successfully but moved wrong bytes: what landed where.
    case corrupts(String)
    /// Nothing to test: the device has no RC ODP WRITE and READ, so the daemon registers
    /// pinned MRs only, which this defect does not touch.
    case notApplicable(String)
    /// The test itself could not run (a verbs call failed, or a completion reported an error):
    /// the answer is unknown, not "intact".
    case failed(VerbsError)

    /// The stable word for logs and reports: "intact", "corrupts-unaligned", "not-applicable",
    /// "failed".
    public var code: String {
        switch self {
        case .intact: "intact"
        case .corrupts: "corrupts-unaligned"
        case .notApplicable: "not-applicable"
        case .failed: "failed"
        }
    }

    /// The alignment (of remote address and length) a peer must keep for its transfers to land
    /// intact: 1 where nothing corrupts, 4096 where unaligned transfers do. rxe's ODP copy
    /// (docs/kernel-matrix.md) is right for packets that start a page, which page-aligned
    /// transfers at path MTU 4096 guarantee on 4 KiB pages. Unknown (`failed`) is treated as
    /// corrupting: a failed test must not turn into a confident "anything goes".
    public var transferAlignment: Int {
        switch self {
        case .intact, .notApplicable: 1
        case .corrupts, .failed: 4096
        }
    }

    public var description: String {
        switch self {
        case .intact: "intact"
        case .corrupts(let detail): "corrupts-unaligned: \(detail)"
        case .notApplicable(let reason): "not-applicable: \(reason)"
        case .failed(let error): "failed: \(error)"
        }
    }
}

/// Checks that one-sided RDMA into and out of an ODP MR lands where it was aimed: over a
/// loopback RC QP pair, an RDMA WRITE from a pinned source into a small ODP MR at an unaligned
/// offset, several packets long and crossing a page boundary, then an RDMA READ of the same
/// range into a pinned sink, each compared byte for byte.
///
/// Measured on 7.3.4: rxe's ODP copy drops the in-page offset and never advances across
/// pages, while every completion reports success, so without this check a peer corrupts a
/// file silently. Every verbs object the check creates is destroyed before it returns.
public struct ODPIntegrityCheck: Sendable {
    /// Where in the ODP MR the transfers start: not a multiple of anything a packet would align to.
    public var offset: Int
    /// How many bytes each transfer moves: more than one packet and, from `offset`, across a
    /// page boundary.
    public var length: Int
    public var mtu: PathMTU
    /// How long to wait for each completion (a port that is down fails after the RC retries).
    public var timeoutSeconds: Double

    public init(offset: Int = 100, length: Int = 5000, mtu: PathMTU = .bytes1024, timeoutSeconds: Double = 5) {
        self.offset = offset
        self.length = length
        self.mtu = mtu
        self.timeoutSeconds = timeoutSeconds
    }

    /// Runs the check on `context`'s device, port 1.
    public func run(on context: Context) -> ODPIntegrity {
        let odp: ODPCaps
        do { odp = try context.query().odp } catch { return .failed(error) }
        guard odp.supported, odp.rc.isSuperset(of: [.write, .read]) else {
            return .notApplicable("\(context.device.name) has no RC ODP WRITE and READ (rc caps \(odp.rc))")
        }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        // Anonymous memory, page-aligned, one page of slack on each side of the range.
        let odpBytes = (offset + length + page - 1) / page * page + page
        let odpMemory = UnsafeMutableRawPointer.allocate(byteCount: odpBytes, alignment: page)
        let pinnedMemory = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: page)
        defer { odpMemory.deallocate(); pinnedMemory.deallocate() }
        let odpBuffer = UnsafeMutableRawBufferPointer(start: odpMemory, count: odpBytes)
        let pinned = UnsafeMutableRawBufferPointer(start: pinnedMemory, count: length)

        let pd: ProtectionDomain
        do { pd = try context.allocateProtectionDomain() } catch { return .failed(error) }
        var result: ODPIntegrity
        do {
            let access: AccessFlags = [.localWrite, .remoteWrite, .remoteRead]
            let odpMR = try pd.register(address: odpMemory, length: odpBytes, access: access.union(.onDemand))
            let pinnedMR = try pd.register(address: pinnedMemory, length: length, access: access)
            let loopback = try Loopback(protectionDomain: pd, mtu: mtu)
            result = try transfer(loopback: loopback, odpMR: odpMR, odp: odpBuffer, pinnedMR: pinnedMR, pinned: pinned, page: page)
            try loopback.close()
        } catch {
            result = .failed(error)
        }
        // QPs, then MRs, then the PD: nothing of the check outlives it.
        do { try pd.close() } catch { result = .failed(error) }
        return result
    }

    /// The WRITE and the READ, each checked; a corruption of either is reported.
    private func transfer(loopback: Loopback, odpMR: MemoryRegion, odp: UnsafeMutableRawBufferPointer,
                          pinnedMR: MemoryRegion, pinned: UnsafeMutableRawBufferPointer, page: Int) throws(VerbsError) -> ODPIntegrity {
        let target = odpMR.address + UInt64(offset)
        var findings: [String] = []

        // WRITE: a pattern that never repeats within a page and is never the 0x00 filler.
        odp.initializeMemory(as: UInt8.self, repeating: 0)
        for index in 0..<length { pinned[index] = Self.pattern(index, seed: 1) }
        let written = try loopback.write(from: pinnedMR, length: length, to: target, rkey: odpMR.rkey, timeout: timeoutSeconds)
        guard written.isSuccess else { return .failed(Self.completionError("RDMA_WRITE", written)) }
        if let wrong = Self.compare(Array(odp[offset..<offset + length]), expected: Array(pinned)) {
            findings.append("RDMA WRITE of \(length) bytes to ODP offset \(offset) (MTU \(mtu.rawValue)) completed successfully but "
                + "\(wrong.count) bytes differ, the first at byte \(wrong.first); "
                + Self.whereLanded(Array(pinned), in: Array(odp), page: page))
        }

        // READ: the ODP memory gets a second pattern from the CPU; the sink starts at 0x00.
        for index in 0..<odp.count { odp[index] = Self.pattern(index, seed: 2) }
        pinned.initializeMemory(as: UInt8.self, repeating: 0)
        let read = try loopback.read(into: pinnedMR, length: length, from: target, rkey: odpMR.rkey, timeout: timeoutSeconds)
        guard read.isSuccess else { return .failed(Self.completionError("RDMA_READ", read)) }
        if let wrong = Self.compare(Array(pinned), expected: Array(odp[offset..<offset + length])) {
            let pageStart = offset / page * page
            let fromPageStart = Array(pinned.prefix(64)) == Array(odp[pageStart..<pageStart + 64])
            findings.append("RDMA READ of \(length) bytes from ODP offset \(offset) completed successfully but \(wrong.count) bytes differ, "
                + "the first at byte \(wrong.first)"
                + (fromPageStart ? "; it returned the bytes at the page start (offset \(pageStart)) instead" : ""))
        }
        return findings.isEmpty ? .intact : .corrupts(findings.joined(separator: "; "))
    }

    /// Byte `index` of pattern `seed`: 1...255 from a multiplicative hash, so any 16 bytes of
    /// it name where they came from (a periodic pattern would match at many offsets).
    static func pattern(_ index: Int, seed: Int) -> UInt8 {
        var x = UInt32(truncatingIfNeeded: index) &* 2_654_435_761 &+ UInt32(truncatingIfNeeded: seed) &* 40503
        x ^= x >> 16
        return UInt8(x % 255 + 1)
    }

    /// How many bytes differ and the first that does; nil when all match.
    static func compare(_ actual: [UInt8], expected: [UInt8]) -> (count: Int, first: Int)? {
        let wrong = zip(actual, expected).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
        return wrong.first.map { (wrong.count, $0) }
    }

    /// Which written bytes each page start of the target holds: rxe's ODP puts every packet
    /// (and every page-sized piece of one) at a page start.
    static func whereLanded(_ written: [UInt8], in memory: [UInt8], page: Int) -> String {
        let window = 16
        var landed: [String] = []
        for start in stride(from: 0, to: memory.count - window + 1, by: page) {
            let head = memory[start..<start + window]
            guard let from = (0...(written.count - window)).first(where: { written[$0..<$0 + window].elementsEqual(head) }) else { continue }
            landed.append("page start \(start) holds written bytes \(from)...")
        }
        return landed.isEmpty ? "no page start holds written bytes" : landed.joined(separator: ", ")
    }

    static func completionError(_ op: String, _ completion: WorkCompletion) -> VerbsError {
        VerbsError(op: "\(op) completion", errno: .ioError, detail: "status \(completion.status) (\(completion.statusText))")
    }
}
