import CRDMA
import Glibc

/// A protection domain: MRs and QPs in one PD can be used together, and only together.
///
/// Owns its `ibv_pd` and keeps its `Context` alive. The daemon keeps one PD with no QP for
/// its regions' own MRs and one per grant (through a `ClientDomain`) for the grant's MR and
/// its peers' QPs, so a peer's QP reaches its grant's MR and nothing else.
/// The PD remembers, weakly, the QPs and MRs made in it, so `close()` can destroy them in
/// order before the PD itself, the way pyverbs' `PD.close` does.
///
/// `register` may be called from several threads at once (libibverbs' `ibv_reg_mr` is
/// thread-safe, and the records of children are kept under a lock): the daemon pins a large
/// range on a worker while its loop registers others in the same PD. Everything else belongs
/// to one thread at a time, and `close()` only after the other threads' calls returned.
public final class ProtectionDomain: @unchecked Sendable {
    public let context: Context
    private(set) var pointer: UnsafeMutablePointer<ibv_pd>?
    private let children = Locked(Children())

    private struct Children {
        var queuePairs = WeakChildren<QueuePair>()
        var memoryRegions = WeakChildren<MemoryRegion>()
    }

    init(context: Context, pointer: UnsafeMutablePointer<ibv_pd>) {
        self.context = context
        self.pointer = pointer
    }

    deinit {
        // Children hold this PD, so by now none remain and EBUSY cannot happen; a PD that
        // close() could not deallocate (a child refused to go) is retried here.
        if let pointer { _ = ibv_dealloc_pd(pointer) }
    }

    public var isOpen: Bool { pointer != nil }

    /// The PD, or the error `op` reports on a PD that `close()` already deallocated.
    func open(for op: String) throws(VerbsError) -> UnsafeMutablePointer<ibv_pd> {
        guard let pointer else { throw VerbsError(op: op, errno: .badFileDescriptor, detail: "the PD was closed") }
        return pointer
    }

    /// Destroys what was made in this PD and still lives (QPs, then MRs: a QP may still be
    /// using an MR's lkey), then deallocates the PD. Objects others still hold become closed
    /// shells: `deregister()` on such an MR does nothing. Every child is tried even after one
    /// fails; the first failure is thrown, and the PD then stays allocated (the kernel would
    /// refuse with EBUSY) until its `deinit`. Calling it again does nothing.
    ///
    /// The corresponding C functions are `ibv_destroy_qp`, `ibv_dereg_mr` and `ibv_dealloc_pd`.
    public func close() throws(VerbsError) {
        guard let pointer else { return }
        var failure: VerbsError?
        let (queuePairs, memoryRegions) = children.withLock { ($0.queuePairs.live, $0.memoryRegions.live) }
        for qp in queuePairs {
            do throws(VerbsError) { try qp.destroy() } catch { failure = failure ?? error }
        }
        for mr in memoryRegions {
            do throws(VerbsError) { try mr.deregister() } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
        try check("ibv_dealloc_pd", ibv_dealloc_pd(pointer), detail: context.device.name)
        self.pointer = nil
    }

    /// Registers `[address, address+length)` for the given access.
    ///
    /// With `.onDemand` the pages are not pinned: the device faults them in and the kernel
    /// invalidates them when the mapping changes. Without it the pages are pinned for as long
    /// as the MR lives, which the kernel refuses for FS-DAX (EOPNOTSUPP) and, from 6.5 on, for
    /// writable file-backed page-cache mappings (EFAULT).
    ///
    /// The corresponding C function is `ibv_reg_mr` (through `ibv_reg_mr_iova2`, iova = address).
    public func register(address: UnsafeMutableRawPointer, length: Int, access: AccessFlags) throws(VerbsError) -> MemoryRegion {
        guard let mr = mrl_reg_mr(try open(for: "ibv_reg_mr"), address, length, access.rawValue) else {
            throw VerbsError(op: "ibv_reg_mr", errno: currentErrno(),
                             detail: "\(length) bytes, access \(access)")
        }
        let region = MemoryRegion(protectionDomain: self, pointer: mr, access: access)
        children.withLock { $0.memoryRegions.insert(region) }
        return region
    }

    /// Registers `[address, address+length)` as `slices` MRs over consecutive page-aligned
    /// slices, each on a thread of its own at once (the calling thread takes the first): a
    /// large pin costs what its pages cost, and the kernel pins slices in parallel. All or
    /// none: when one slice fails, the others are deregistered and its error is thrown. The
    /// threads are made with the caller's signal mask (the daemon's pin worker blocks all).
    ///
    /// The corresponding C function is `ibv_reg_mr`, once per slice.
    public func register(address: UnsafeMutableRawPointer, length: Int, access: AccessFlags, slices: Int,
                         pageSize: Int) throws(VerbsError) -> [MemoryRegion] {
        let count = max(1, min(slices, length / pageSize))
        let slice = (length / count + pageSize - 1) / pageSize * pageSize
        let pieces = (0..<count).map { i in (offset: i * slice, bytes: min(slice, length - i * slice)) }.filter { $0.bytes > 0 }
        let results = Locked([Result<MemoryRegion, VerbsError>?](repeating: nil, count: pieces.count))
        nonisolated(unsafe) let base = address
        let work: @Sendable (Int) -> Void = { [self] i in
            let result: Result<MemoryRegion, VerbsError>
            do throws(VerbsError) { result = .success(try register(address: base + pieces[i].offset, length: pieces[i].bytes, access: access)) } catch {
                result = .failure(error)
            }
            results.withLock { $0[i] = result }
        }
        var threads: [pthread_t] = []
        var failure: VerbsError?
        for i in 1..<max(pieces.count, 1) {
            let box = Unmanaged.passRetained(SliceWork { work(i) })
            var thread = pthread_t()
            if pthread_create(&thread, nil, { context in
                let box = Unmanaged<SliceWork>.fromOpaque(context!).takeRetainedValue()
                box.run()
                return nil
            }, box.toOpaque()) == 0 {
                threads.append(thread)
            } else {
                box.release()
                work(i)   // no thread to be had: this one does it
            }
        }
        work(0)
        for thread in threads { pthread_join(thread, nil) }
        let made = results.withLock { $0 }
        var regions: [MemoryRegion] = []
        for result in made {
            switch result {
            case .success(let region)?: regions.append(region)
            case .failure(let error)?: failure = failure ?? error
            case nil: preconditionFailure("a slice's registration never ran, though every slice is run before the joins")
            }
        }
        if let failure {
            for region in regions { try? region.deregister() }
            throw failure
        }
        return regions
    }

    /// Creates a reliable-connected queue pair.
    ///
    /// The corresponding C function is `ibv_create_qp`.
    public func createQueuePair(
        sendQueue: CompletionQueue, receiveQueue: CompletionQueue,
        maxSend: UInt32 = 64, maxReceive: UInt32 = 64, maxInlineData: UInt32 = 0
    ) throws(VerbsError) -> QueuePair {
        var attributes = QueuePair.reliableConnectedAttributes(
            sendQueue: sendQueue, receiveQueue: receiveQueue, maxSend: maxSend, maxReceive: maxReceive, maxInlineData: maxInlineData)
        guard let qp = ibv_create_qp(try open(for: "ibv_create_qp"), &attributes) else {
            throw VerbsError(op: "ibv_create_qp", errno: currentErrno(), detail: "RC")
        }
        let queuePair = QueuePair(protectionDomain: self, sendQueue: sendQueue, receiveQueue: receiveQueue, pointer: qp)
        children.withLock { $0.queuePairs.insert(queuePair) }
        return queuePair
    }

    /// Forgets the QPs and MRs that are gone, now rather than at the next insert that finds
    /// the records doubled: after many children went at once (a client's 100 000 regions),
    /// so the memory they used can go back to the kernel.
    public func forgetGone() {
        children.withLock {
            $0.queuePairs.sweep()
            $0.memoryRegions.sweep()
        }
    }

    /// Records a QP made in this PD by someone else (`rdma_create_qp`), so `close()` destroys it.
    func track(_ queuePair: QueuePair) {
        children.withLock { $0.queuePairs.insert(queuePair) }
    }
}

/// One slice's registration, handed to its thread.
private final class SliceWork: @unchecked Sendable {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
