import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One FIEMAP extent: where `length` bytes at file offset `logical` live on the device.
public struct Extent: Sendable, Equatable, Hashable {
    public var logical: UInt64
    public var physical: UInt64
    public var length: UInt64
    public var flags: Flags

    public init(logical: UInt64, physical: UInt64, length: UInt64, flags: Flags) {
        self.logical = logical
        self.physical = physical
        self.length = length
        self.flags = flags
    }

    /// One past the extent's last file offset.
    public var logicalEnd: UInt64 { logical &+ length }

    /// The `FIEMAP_EXTENT_*` bits (linux/fiemap.h).
    public struct Flags: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// The last extent of the file.
        public static let last = Flags(rawValue: 0x0001)
        /// Location not known yet (`physical` is meaningless).
        public static let unknown = Flags(rawValue: 0x0002)
        /// Delayed allocation: no blocks yet; implies `unknown`.
        public static let delalloc = Flags(rawValue: 0x0004)
        /// Data is compressed or otherwise encoded; not readable in place.
        public static let encoded = Flags(rawValue: 0x0008)
        public static let dataEncrypted = Flags(rawValue: 0x0080)
        /// Not block-aligned.
        public static let notAligned = Flags(rawValue: 0x0100)
        /// Data inside the metadata block; implies `notAligned`.
        public static let dataInline = Flags(rawValue: 0x0200)
        /// Packed with other files' tails; implies `notAligned`.
        public static let dataTail = Flags(rawValue: 0x0400)
        /// Allocated but not written (reads as zeros).
        public static let unwritten = Flags(rawValue: 0x0800)
        /// Simulated extent from a filesystem that tracks blocks, not extents.
        public static let merged = Flags(rawValue: 0x1000)
        /// Shared with another file or snapshot (reflink): a write would move it.
        public static let shared = Flags(rawValue: 0x2000)

        private static let named: [(Flags, String)] = [
            (.last, "last"), (.unknown, "unknown"), (.delalloc, "delalloc"),
            (.encoded, "encoded"), (.dataEncrypted, "data_encrypted"),
            (.notAligned, "not_aligned"), (.dataInline, "data_inline"),
            (.dataTail, "data_tail"), (.unwritten, "unwritten"), (.merged, "merged"),
            (.shared, "shared"),
        ]

        /// The set bits by name, in bit order; an unnamed bit shows as hex.
        public var names: [String] {
            var rest = self
            var result: [String] = []
            for (flag, name) in Self.named where contains(flag) {
                result.append(name)
                rest.remove(flag)
            }
            if !rest.isEmpty { result.append("0x" + String(rest.rawValue, radix: 16)) }
            return result
        }

        public var description: String { names.joined(separator: ",") }
    }
}

/// A file's extents in logical order, as FIEMAP reported them.
public struct ExtentMap: Sendable, Equatable {
    public var extents: [Extent]

    public init(extents: [Extent]) {
        self.extents = extents
    }

    /// Extents overlapping [offset, offset+length).
    public func extents(overlapping offset: UInt64, length: UInt64) -> [Extent] {
        let end = offset.addingReportingOverflow(length).overflow ? .max : offset + length
        return extents.filter { $0.logical < end && $0.logicalEnd > offset }
    }

    /// Whether the range [offset, offset+length) is placed differently in `other`: the
    /// overlapping extents, clipped to the range and with physically contiguous neighbours
    /// joined, differ in physical placement, length or the `shared`/`unwritten` flags. Other
    /// flags (`last`, `merged`, …) and how a filesystem happens to split a run do not count:
    /// only a change that moves or unshares the bytes an MR points at is drift.
    public func differs(from other: ExtentMap, offset: UInt64, length: UInt64) -> Bool {
        placement(offset: offset, length: length) != other.placement(offset: offset, length: length)
    }

    private func placement(offset: UInt64, length: UInt64) -> [Extent] {
        let end = offset.addingReportingOverflow(length).overflow ? .max : offset + length
        let relevant: Extent.Flags = [.shared, .unwritten]
        var runs: [Extent] = []
        for extent in extents(overlapping: offset, length: length) {
            let start = max(extent.logical, offset)
            var clipped = Extent(
                logical: start,
                physical: extent.physical + (start - extent.logical),
                length: min(extent.logicalEnd, end) - start,
                flags: extent.flags.intersection(relevant))
            if let previous = runs.last,
               previous.logicalEnd == clipped.logical,
               previous.physical + previous.length == clipped.physical,
               previous.flags == clipped.flags {
                clipped = Extent(
                    logical: previous.logical, physical: previous.physical,
                    length: previous.length + clipped.length, flags: previous.flags)
                runs.removeLast()
            }
            runs.append(clipped)
        }
        return runs
    }
}

extension FileDescriptor {
    /// The extents of [offset, offset+length) of this file (the whole file by default),
    /// fetched in batches until the kernel marks one `last` or maps no more.
    ///
    /// `sync` sets `FIEMAP_FLAG_SYNC`, which writes back dirty data first so delayed
    /// allocations get real blocks. A filesystem or file type without FIEMAP fails with the
    /// kernel's errno unchanged (`EOPNOTSUPP` from a filesystem without it, `ENOTTY` or
    /// `EINVAL` from objects that are no regular files); callers report it.
    ///
    /// The corresponding C function is `ioctl` (`FS_IOC_FIEMAP`).
    public func extents(
        sync: Bool = true, offset: UInt64 = 0, length: UInt64 = .max
    ) throws(Errno) -> ExtentMap {
        try _extents(sync: sync, offset: offset, length: length).get()
    }

    /// Extents fetched per ioctl: 64 × 56 bytes keeps one call's buffer small.
    static var fiemapBatch: Int { 64 }

    func _extents(sync: Bool, offset: UInt64, length: UInt64) -> Result<ExtentMap, Errno> {
        let batch = Self.fiemapBatch
        let bytes = MemoryLayout<fiemap>.size + batch * MemoryLayout<fiemap_extent>.stride
        let buffer = UnsafeMutableRawPointer.allocate(
            byteCount: bytes, alignment: MemoryLayout<fiemap>.alignment)
        defer { buffer.deallocate() }
        let header = buffer.bindMemory(to: fiemap.self, capacity: 1)

        let end: UInt64? = offset.addingReportingOverflow(length).overflow ? nil : offset + length
        var start = offset
        var found: [Extent] = []
        var first = true
        while end.map({ start < $0 }) ?? true {
            buffer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            header.pointee.fm_start = start
            header.pointee.fm_length = end.map { $0 - start } ?? .max
            // Syncing once, before the first batch, is enough to fix the layout we read.
            header.pointee.fm_flags = (sync && first) ? UInt32(FIEMAP_FLAG_SYNC) : 0
            header.pointee.fm_extent_count = UInt32(batch)
            first = false
            let fd = rawValue
            if case .failure(let error) = nothingOrErrno(retryOnInterrupt: true, {
                mrl_ioctl_fiemap(fd, header)
            }) {
                return .failure(error)
            }
            let mapped = Int(header.pointee.fm_mapped_extents)
            let raw = mrl_fiemap_extents(header)!
            for i in 0..<mapped {
                let e = raw[i]
                found.append(Extent(
                    logical: e.fe_logical, physical: e.fe_physical, length: e.fe_length,
                    flags: Extent.Flags(rawValue: e.fe_flags)))
            }
            guard let last = found.last, mapped > 0, !last.flags.contains(.last) else { break }
            start = last.logicalEnd
        }
        return .success(ExtentMap(extents: found))
    }
}
