import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Owns one `MAP_SHARED` mapping of a file range: the memory an MR is registered over.
/// Stores through it reach the file (page cache or, on DAX, the media); `deinit` unmaps.
public final class SharedMapping {
    public enum Protection: Sendable {
        case read
        case readWrite

        var rawValue: CInt { self == .read ? PROT_READ : PROT_READ | PROT_WRITE }
    }

    private var address: UnsafeMutableRawPointer?
    public let offset: UInt64
    public let length: Int
    public let protection: Protection
    public let isSync: Bool

    /// Maps [offset, offset+length) of `fd` shared. `offset` must be a multiple of the page
    /// size (`EINVAL` otherwise) and `length` positive (`EINVAL`).
    ///
    /// `sync` asks for `MAP_SHARED_VALIDATE | MAP_SYNC`, which only DAX files accept
    /// (`EOPNOTSUPP` otherwise): the page tables then point at persistent media whose
    /// metadata is already durable, so a CPU store is durable after a cache flush, without
    /// msync. `MAP_SHARED_VALIDATE` makes the kernel refuse the flag instead of ignoring it.
    ///
    /// The corresponding C function is `mmap`.
    public init(
        fd: FileDescriptor, offset: UInt64, length: Int, protection: Protection, sync: Bool = false
    ) throws(Errno) {
        // Alignment and length are the kernel's to judge (EINVAL); only an offset that does
        // not fit off_t is refused here, before the conversion would trap.
        guard offset <= UInt64(off_t.max) else { throw .invalidArgument }
        let flags = sync ? MRL_MAP_SHARED_VALIDATE | MRL_MAP_SYNC : MAP_SHARED
        let mapped = mmap(nil, length, protection.rawValue, flags, fd.rawValue, off_t(offset))
        guard let mapped, mapped != mrl_map_failed() else { throw Errno.current }
        address = mapped
        self.offset = offset
        self.length = length
        self.protection = protection
        isSync = sync
    }

    deinit {
        if let address { munmap(address, length) }
    }

    /// The first mapped byte. Precondition: not unmapped.
    public var base: UnsafeMutableRawPointer {
        guard let address else { preconditionFailure("SharedMapping used after unmap()") }
        return address
    }

    /// Writes dirty pages back to the file and waits (`MS_SYNC`). On a `MAP_SYNC` mapping the
    /// data path is CPU cache flushes; msync is still correct, only slower.
    ///
    /// The corresponding C function is `msync`.
    public func flush() throws(Errno) {
        let base = self.base
        let length = self.length
        try nothingOrErrno(retryOnInterrupt: true) { msync(base, length, MS_SYNC) }.get()
    }

    /// Unmaps; later calls do nothing.
    ///
    /// The corresponding C function is `munmap`.
    public func unmap() throws(Errno) {
        guard let address else { return }
        self.address = nil
        let length = self.length
        try nothingOrErrno(retryOnInterrupt: false) { munmap(address, length) }.get()
    }

    /// How many pages of `[offset, offset+length)` of the mapping (the whole mapping by
    /// default) are in the file's page cache now. A page a pinned MR holds that left the page
    /// cache (a hole punched, the file truncated) is no longer the file's: what the device
    /// writes there is lost. `offset` must be a multiple of the page size (`EINVAL`), and the
    /// range inside the mapping (`ENOMEM` otherwise).
    ///
    /// The corresponding C function is `mincore`.
    public func residentPages(offset: Int = 0, length: Int? = nil) throws(Errno) -> Int {
        let length = length ?? self.length - offset
        guard offset >= 0, length >= 0, offset <= self.length - length else { throw .noMemory }
        let page = Self.pageSize
        var vector = [UInt8](repeating: 0, count: (length + page - 1) / page)
        let start = base + offset
        try nothingOrErrno(retryOnInterrupt: false) { mincore(start, length, &vector) }.get()
        return vector.reduce(0) { $0 + Int($1 & 1) }
    }

    /// The system page size, which mapping offsets must be a multiple of.
    public static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
}
