import Glibc
import LinuxFile
import MRLeaseEngine
import MRLeasePolicy
import SystemPackage
import Verbs

/// One row of the registration table: `engine.register` against a plain `ibv_reg_mr` loop
/// over one mapping of the same file with the same access flags.
struct RegistrationCase: Codable {
    var regions: Int
    var length: Int
    var strategy: String
    var flags: String
    var engineRegsPerSecond: Double
    var plainRegsPerSecond: Double
    /// engine rate / plain rate: below 1 means the engine is slower.
    var ratio: Double
    /// The engine as the daemon's register-batch drives it: the fd inspected (statx, fstatfs,
    /// F_GETFL) once per 64 regions, each range planned through the daemon's `PlanCache` and
    /// registered.
    var engineBatchRegsPerSecond: Double
    var batchRatio: Double
    var engineDeregsPerSecond: Double
    var plainDeregsPerSecond: Double
    /// The plain loop with the fd inspected before each `ibv_reg_mr` as any registration
    /// through a passed fd must (statx, fstatfs, F_GETFL): the floor of a per-call register.
    var plainInspectingRegsPerSecond: Double
    /// That floor against the plain loop: the most a per-call registration can reach.
    var floorRatio: Double
    /// The same with statx and F_GETFL only (fstatfs answered from a cache by device number).
    var plainIdentityRegsPerSecond: Double
    var identityFloorRatio: Double
}

/// Registrations per second, engine against plain verbs, in alternating passes on one file.
///
/// The engine maps each region on its own (one mapping per region, see `Engine.map`) and
/// inspects the fd on every call; the plain loop maps the file once and only calls
/// ibv_reg_mr. The ratio is the engine's whole per-region overhead.
final class RegistrationBenchmark {
    let engine: Engine
    let registrar: VerbsRegistrar
    let path: String
    let fd: FileDescriptor
    let size: UInt64
    let owner = OwnerID(2)

    init(engine: Engine, registrar: VerbsRegistrar, directory: String, size: UInt64) throws(BenchError) {
        self.engine = engine
        self.registrar = registrar
        self.size = size
        path = "\(directory)/mrleased-bench-\(getpid())-register"
        try BenchFile.create(path, size: size)
        do {
            fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.closeOnExec])
        } catch {
            throw BenchError("open \(path): \(error)")
        }
    }

    deinit {
        try? fd.close()
        unlink(path)
    }

    /// Region i starts at (i mod slots) × length: distinct ranges while they fit in the file,
    /// then the same ranges again (200 × 2 MiB over a 40 MiB file registers each range 10 times).
    func offset(_ i: Int, length: Int) -> UInt64 {
        let slots = max(1, Int(size) / length)
        return UInt64(i % slots) * UInt64(length)
    }

    func run(regions count: Int, length: Int, passes: Int) throws(BenchError) -> RegistrationCase {
        var engineNS: UInt64 = 0, plainNS: UInt64 = 0, engineDeregNS: UInt64 = 0, plainDeregNS: UInt64 = 0, batchNS: UInt64 = 0
        var inspectingNS: UInt64 = 0, identityNS: UInt64 = 0
        var strategy = Strategy.odp
        for _ in 0..<passes {
            batchNS += try enginePass(count: count, length: length, inspectEvery: 64).register
            let engineRun = try enginePass(count: count, length: length)
            engineNS += engineRun.register
            engineDeregNS += engineRun.deregister
            strategy = engineRun.strategy
            let plainRun = try plainPass(count: count, length: length, flags: Self.flags(for: strategy))
            plainNS += plainRun.register
            plainDeregNS += plainRun.deregister
            inspectingNS += try plainPass(count: count, length: length, flags: Self.flags(for: strategy), inspecting: .full).register
            identityNS += try plainPass(count: count, length: length, flags: Self.flags(for: strategy), inspecting: .identityAndMode).register
        }
        let total = Double(count * passes)
        let engineRate = total / (Double(engineNS) / 1e9), plainRate = total / (Double(plainNS) / 1e9)
        return RegistrationCase(regions: count, length: length, strategy: strategy.rawValue,
                                flags: "\(Self.flags(for: strategy))",
                                engineRegsPerSecond: engineRate, plainRegsPerSecond: plainRate, ratio: engineRate / plainRate,
                                engineBatchRegsPerSecond: total / (Double(batchNS) / 1e9),
                                batchRatio: total / (Double(batchNS) / 1e9) / plainRate,
                                engineDeregsPerSecond: total / (Double(engineDeregNS) / 1e9),
                                plainDeregsPerSecond: total / (Double(plainDeregNS) / 1e9),
                                plainInspectingRegsPerSecond: total / (Double(inspectingNS) / 1e9),
                                floorRatio: total / (Double(inspectingNS) / 1e9) / plainRate,
                                plainIdentityRegsPerSecond: total / (Double(identityNS) / 1e9),
                                identityFloorRatio: total / (Double(identityNS) / 1e9) / plainRate)
    }

    static let access: RegionAccess = [.read, .write]

    /// The flags `Engine.makeRegion` passes for this access and strategy.
    static func flags(for strategy: Strategy) -> AccessFlags { strategy.flags(for: access) }

    /// `inspectEvery`: nil, each call inspects the fd (`Engine.register(owner:fd:…)`); n, the fd
    /// is inspected once per n regions and each range planned through a `PlanCache` (checked
    /// only, after the first) and registered, as the daemon's register-batch does.
    func enginePass(count: Int, length: Int, inspectEvery: Int? = nil) throws(BenchError) -> (register: UInt64, deregister: UInt64, strategy: Strategy) {
        var ids: [RegionID] = []
        ids.reserveCapacity(count)
        // Cleanup after the timed part: a region already gone is fine, and nobody listens to events.
        defer { for id in ids { _ = try? engine.deregister(id) } }
        var strategy = Strategy.odp
        let start = Engine.now()
        var facts: FileFacts?
        // Planned as the daemon plans every register and register-batch (`PlanCache`).
        var plans = PlanCache(device: engine.device, pageSize: UInt64(SharedMapping.pageSize))
        var mode = OpenMode.readWrite
        for i in 0..<count {
            do {
                let info: RegionInfo
                if let every = inspectEvery {
                    if i % every == 0 {
                        facts = try FileFacts.inspect(fd, mount: false)
                        mode = try Engine.openMode(fd)
                    }
                    let planned = plans.plan(file: PlannedFile(facts!), mode: mode, offset: offset(i, length: length),
                                             length: UInt64(length), access: Self.access, lessee: .privileged)
                    guard case .success(let plan) = planned else { throw BenchError("plan: \(planned)") }
                    info = try engine.register(owner: owner, uid: 0, fd: fd, facts: facts!, plan: plan)
                } else {
                    info = try engine.register(owner: owner, fd: fd, offset: offset(i, length: length), length: UInt64(length),
                                               access: Self.access)
                }
                ids.append(info.id)
                strategy = info.strategy
            } catch let error as EngineError {
                if case .refused = error { throw BenchError("engine.register \(i) of \(count) × \(length) B: \(error)", refused: true) }
                throw BenchError("engine.register \(i) of \(count) × \(length) B: \(error)")
            } catch {
                throw BenchError("engine.register \(i) of \(count) × \(length) B: \(error)")
            }
        }
        let registered = Engine.now()
        for id in ids {
            do { _ = try engine.deregister(id) } catch { throw BenchError("engine.deregister \(id): \(error)") }
        }
        ids = []
        let end = Engine.now()
        _ = engine.release(owner: owner)
        return (registered - start, end - registered, strategy)
    }

    /// What the plain loop asks of the fd before each registration.
    enum Inspection {
        case none
        /// statx, fstatfs and F_GETFL: what the engine asks of a passed fd (what it is, where
        /// it lives, how it was opened).
        case full
        /// statx (through fstat) and F_GETFL only: fstatfs answered from a cache.
        case identityAndMode
    }

    func plainPass(count: Int, length: Int, flags: AccessFlags, inspecting: Inspection = .none) throws(BenchError) -> (register: UInt64, deregister: UInt64) {
        let fd = self.fd
        let inspect: ((Int) throws(BenchError) -> Void)?
        switch inspecting {
        case .none:
            inspect = nil
        case .full:
            inspect = { (_: Int) throws(BenchError) in
                do {
                    _ = try FileFacts.inspect(fd, mount: false)
                    _ = try Engine.openMode(fd)
                } catch {
                    throw BenchError("inspecting the fd: \(error)")
                }
            }
        case .identityAndMode:
            inspect = { (_: Int) throws(BenchError) in
                var buffer = stat()
                guard fstat(fd.rawValue, &buffer) == 0, fcntl(fd.rawValue, F_GETFL) >= 0 else {
                    throw BenchError("inspecting the fd: \(String(cString: strerror(errno)))")
                }
            }
        }
        return try PlainVerbs.registerThenDeregister(fd: fd, mappedLength: Int(size), count: count,
                                                     range: { (Int(offset($0, length: length)), length) }, flags: flags,
                                                     registrar: registrar, what: "plain", before: inspect)[0]
    }
}
