import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeasePolicy
import SystemPackage
import Verbs

/// One row of the first-access table: an RDMA WRITE into a region registered a moment before
/// (ODP: its pages are faulted at this first access), with and without the engine's prefetch.
struct FirstAccessCase: Codable {
    var regionBytes: Int
    var iterations: Int
    /// Posting the WRITE to its completion, µs (median, p90), into a fresh region; then a
    /// second WRITE into the same region (warm: nothing left to fault).
    var firstWithoutMedianUS: Double
    var firstWithoutP90US: Double
    var firstWithMedianUS: Double
    var firstWithP90US: Double
    var warmMedianUS: Double
    /// engine.register, µs (median), without and with the prefetch (it is asynchronous:
    /// what it adds to a registration is the ibv_advise_mr call).
    var registerWithoutMedianUS: Double
    var registerWithMedianUS: Double
}

/// Registers fresh ODP regions through two engines, one with `odpPrefetch`, in alternation,
/// and times a loopback RC WRITE of the whole region right after each registration.
final class FirstAccessBenchmark {
    let registrar: VerbsRegistrar
    let directory: String

    init(registrar: VerbsRegistrar, directory: String) {
        self.registrar = registrar
        self.directory = directory
    }

    struct Side {
        let engine: Engine
        let owner: OwnerID
        let path: String
        let fd: FileDescriptor
        let loopback: Loopback
        let source: MemoryRegion
        var first = Samples(), warm = Samples(), register = Samples()
    }

    func side(prefetch: Bool, owner: OwnerID, size: UInt64, regionBytes: Int, buffer: UnsafeMutableRawPointer) throws -> Side {
        var logger = Logger(label: "mrleased.bench")
        logger.logLevel = .warning
        let engine = try Engine(registrar: registrar, configuration: .init(odpPrefetch: prefetch), logger: logger)
        let path = "\(directory)/mrleased-bench-\(getpid())-first-\(prefetch ? "prefetch" : "plain")"
        try BenchFile.create(path, size: size)
        let fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.closeOnExec])
        let pd = registrar.protectionDomain
        return Side(engine: engine, owner: owner, path: path, fd: fd, loopback: try Loopback(protectionDomain: pd),
                    source: try pd.register(address: buffer, length: regionBytes, access: [.localWrite]))
    }

    /// Spins on the CQ (no sleep: the figure is a latency).
    func writeAndWait(_ side: Side, to address: UInt64, rkey: UInt32, length: Int) throws -> UInt64 {
        let start = Engine.now()
        try side.loopback.initiator.post(.write, local: side.source, localAddress: side.source.address, length: UInt32(length),
                                         remoteAddress: address, rkey: rkey, wrID: 7)
        let deadline = start + 20_000_000_000
        while true {
            if let completion = try side.loopback.completions.poll(max: 1).first {
                guard completion.isSuccess else { throw BenchError("RDMA WRITE into a fresh region: \(completion.statusText)") }
                return Engine.now() - start
            }
            if Engine.now() > deadline { throw BenchError("RDMA WRITE into a fresh region: no completion within 20 s") }
        }
    }

    func once(_ side: inout Side, offset: UInt64, regionBytes: Int) throws {
        let start = Engine.now()
        let info = try side.engine.register(owner: side.owner, fd: side.fd, offset: offset, length: UInt64(regionBytes), access: [.read, .write])
        side.register.append(Engine.now() - start)
        defer { _ = try? side.engine.deregister(info.id) }
        guard info.strategy == .odp, let keys = info.keys else { throw BenchError("the region was registered \(info.strategy), not ODP") }
        side.first.append(try writeAndWait(side, to: keys.address, rkey: keys.rkey, length: regionBytes))
        side.warm.append(try writeAndWait(side, to: keys.address, rkey: keys.rkey, length: regionBytes))
    }

    func run(regionBytes: Int, iterations: Int) throws -> FirstAccessCase {
        let size = UInt64(regionBytes) * UInt64(iterations)
        guard let buffer = mmap(nil, regionBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), buffer != MAP_FAILED else {
            throw BenchError("mmap of the source buffer: \(String(cString: strerror(errno)))")
        }
        defer { munmap(buffer, regionBytes) }
        memset(buffer, 0x5A, regionBytes)
        var plain = try side(prefetch: false, owner: OwnerID(11), size: size, regionBytes: regionBytes, buffer: buffer)
        var advised = try side(prefetch: true, owner: OwnerID(12), size: size, regionBytes: regionBytes, buffer: buffer)
        defer {
            for side in [plain, advised] {
                try? side.source.deregister()
                try? side.fd.close()
                unlink(side.path)
                _ = side.engine.release(owner: side.owner)
            }
        }
        // Region i covers pages no earlier region touched: each one's first WRITE is cold.
        for i in 0..<iterations {
            let offset = UInt64(i) * UInt64(regionBytes)
            try once(&plain, offset: offset, regionBytes: regionBytes)
            try once(&advised, offset: offset, regionBytes: regionBytes)
        }
        return FirstAccessCase(regionBytes: regionBytes, iterations: iterations,
                               firstWithoutMedianUS: plain.first.medianMS * 1000, firstWithoutP90US: plain.first.p90MS * 1000,
                               firstWithMedianUS: advised.first.medianMS * 1000, firstWithP90US: advised.first.p90MS * 1000,
                               warmMedianUS: plain.warm.medianMS * 1000,
                               registerWithoutMedianUS: plain.register.medianMS * 1000, registerWithMedianUS: advised.register.medianMS * 1000)
    }
}
