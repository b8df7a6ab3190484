import Dispatch
import LinuxFile
import MRLeaseEngine
import SystemPackage
import Verbs

/// The baseline the engine is measured against: plain verbs over one mapping of the same file,
/// in a PD of its own, with nothing of the engine in between.
enum PlainVerbs {
    /// Maps `[0, mappedLength)` of `fd` once, then each round registers `count` MRs (range `i`
    /// at `range(i)` in the mapping, `flags`) one after another and deregisters them all in the
    /// same order; returns each round's time for both, in nanoseconds. `what` names the loop
    /// in errors ("plain", "bare").
    static func registerThenDeregister(
        fd: FileDescriptor, mappedLength: Int, count: Int, range: (Int) -> (offset: Int, length: Int), flags: AccessFlags,
        registrar: VerbsRegistrar, rounds: Int = 1, what: String, before: ((Int) throws(BenchError) -> Void)? = nil
    ) throws(BenchError) -> [(register: UInt64, deregister: UInt64)] {
        let mapping: SharedMapping
        let pd: ProtectionDomain
        do {
            mapping = try SharedMapping(fd: fd, offset: 0, length: mappedLength, protection: .readWrite)
            pd = try registrar.context.allocateProtectionDomain()
        } catch {
            throw BenchError("\(what) loop setup (mmap, ibv_alloc_pd): \(error)")
        }
        defer { try? mapping.unmap() }
        var times: [(register: UInt64, deregister: UInt64)] = []
        for _ in 0..<rounds {
            var mrs: [MemoryRegion] = []
            mrs.reserveCapacity(count)
            let start = Engine.now()
            for i in 0..<count {
                let (offset, length) = range(i)
                try before?(i)
                do { mrs.append(try pd.register(address: mapping.base + offset, length: length, access: flags)) } catch {
                    throw BenchError("\(what) ibv_reg_mr \(i) of \(count) × \(length) B: \(error)")
                }
            }
            let registered = Engine.now()
            for mr in mrs {
                do { try mr.deregister() } catch { throw BenchError("\(what) ibv_dereg_mr: \(error)") }
            }
            times.append((registered - start, Engine.now() - registered))
        }
        do { try pd.close() } catch { throw BenchError("\(what) ibv_dealloc_pd: \(error)") }
        return times
    }

    /// `slices` MRs over equal slices of one mapping of `[0, length)`, registered at once from
    /// as many threads; the wall time of the registrations (ns). What parallel `ibv_reg_mr` of
    /// slices would save a large range (issue 19), though it makes `slices` keys, not one.
    static func registerSlicesInParallel(fd: FileDescriptor, length: Int, slices: Int, flags: AccessFlags,
                                         registrar: VerbsRegistrar) throws(BenchError) -> UInt64 {
        let page = SharedMapping.pageSize
        let slice = (length / slices + page - 1) / page * page
        let mapping: SharedMapping
        let pd: ProtectionDomain
        do {
            mapping = try SharedMapping(fd: fd, offset: 0, length: length, protection: .readWrite)
            pd = try registrar.context.allocateProtectionDomain()
        } catch {
            throw BenchError("parallel slices setup (mmap, ibv_alloc_pd): \(error)")
        }
        defer { try? mapping.unmap() }
        nonisolated(unsafe) var made = [Result<MemoryRegion, VerbsError>?](repeating: nil, count: slices)
        nonisolated(unsafe) let base = mapping.base
        let start = Engine.now()
        made.withUnsafeMutableBufferPointer { results in
            nonisolated(unsafe) let results = results
            DispatchQueue.concurrentPerform(iterations: slices) { i in
                let offset = i * slice
                let bytes = min(slice, length - offset)
                do throws(VerbsError) { results[i] = .success(try pd.register(address: base + offset, length: bytes, access: flags)) } catch {
                    results[i] = .failure(error)
                }
            }
        }
        let nanos = Engine.now() - start
        for result in made {
            switch result {
            case .success(let mr)?: try? mr.deregister()
            case .failure(let error)?: throw BenchError("parallel slices ibv_reg_mr: \(error)")
            case nil: throw BenchError("parallel slices: a slice was not registered")
            }
        }
        do { try pd.close() } catch { throw BenchError("ibv_dealloc_pd: \(error)") }
        return nanos
    }
}
