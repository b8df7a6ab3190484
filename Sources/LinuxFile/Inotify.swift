import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Owns an inotify instance (nonblocking, close-on-exec): file events as records on a
/// descriptor an event loop can poll.
///
/// inotify watches a path's *inode*, resolved when the watch is added. For a file we only
/// hold an fd for, `addWatch(path: "/proc/self/fd/\(fd)")` resolves that magic link to the
/// open inode, so the watch follows the file through renames and does not depend on its name.
public final class Inotify {
    /// The `IN_*` event and watch bits (sys/inotify.h).
    public struct Mask: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let access = Mask(rawValue: 0x0000_0001)
        public static let modify = Mask(rawValue: 0x0000_0002)
        public static let attrib = Mask(rawValue: 0x0000_0004)
        public static let closeWrite = Mask(rawValue: 0x0000_0008)
        public static let closeNoWrite = Mask(rawValue: 0x0000_0010)
        public static let open = Mask(rawValue: 0x0000_0020)
        public static let movedFrom = Mask(rawValue: 0x0000_0040)
        public static let movedTo = Mask(rawValue: 0x0000_0080)
        public static let create = Mask(rawValue: 0x0000_0100)
        public static let delete = Mask(rawValue: 0x0000_0200)
        public static let deleteSelf = Mask(rawValue: 0x0000_0400)
        public static let moveSelf = Mask(rawValue: 0x0000_0800)
        /// The filesystem holding the watched object was unmounted.
        public static let unmount = Mask(rawValue: 0x0000_2000)
        /// The event queue overflowed: events were lost (watch -1).
        public static let queueOverflow = Mask(rawValue: 0x0000_4000)
        /// The watch is gone (removed, or its inode deleted or unmounted).
        public static let ignored = Mask(rawValue: 0x0000_8000)
        public static let onlyDirectory = Mask(rawValue: 0x0100_0000)
        public static let dontFollow = Mask(rawValue: 0x0200_0000)
        public static let excludeUnlinked = Mask(rawValue: 0x0400_0000)
        /// Add to an existing watch's mask instead of replacing it.
        public static let maskAdd = Mask(rawValue: 0x2000_0000)
        /// The subject of the event is a directory.
        public static let isDirectory = Mask(rawValue: 0x4000_0000)
        public static let oneShot = Mask(rawValue: 0x8000_0000)

        public static let close: Mask = [.closeWrite, .closeNoWrite]
        public static let move: Mask = [.movedFrom, .movedTo]
    }

    public struct Event: Sendable, Equatable {
        public var watch: Int32
        public var mask: Mask
        /// Pairs the `movedFrom` and `movedTo` of one rename.
        public var cookie: UInt32
        /// The entry's name, for events on a watched directory's children.
        public var name: String?

        public init(watch: Int32, mask: Mask, cookie: UInt32, name: String?) {
            self.watch = watch
            self.mask = mask
            self.cookie = cookie
            self.name = name
        }
    }

    private var fd: FileDescriptor?

    /// The corresponding C function is `inotify_init1` (`IN_NONBLOCK | IN_CLOEXEC`).
    public init() throws(Errno) {
        let raw = try valueOrErrno(retryOnInterrupt: false) {
            inotify_init1(CInt(IN_NONBLOCK | IN_CLOEXEC))
        }.get()
        fd = FileDescriptor(rawValue: raw)
    }

    deinit {
        if let fd { _ = Glibc.close(fd.rawValue) }
    }

    /// The inotify descriptor, for an event loop to poll. Precondition: not closed.
    public var descriptor: FileDescriptor {
        guard let fd else { preconditionFailure("Inotify used after close()") }
        return fd
    }

    /// Watches the inode `path` resolves to now; the watch descriptor events will carry.
    /// Watching the same inode again returns the same descriptor (its mask replaced).
    ///
    /// The corresponding C function is `inotify_add_watch`.
    @discardableResult
    public func addWatch(path: String, mask: Mask) throws(Errno) -> Int32 {
        let fd = descriptor.rawValue
        return try valueOrErrno(retryOnInterrupt: true) {
            inotify_add_watch(fd, path, mask.rawValue)
        }.get()
    }

    /// Removes a watch; the kernel then queues an `ignored` event for it.
    ///
    /// The corresponding C function is `inotify_rm_watch`.
    public func removeWatch(_ wd: Int32) throws(Errno) {
        let fd = descriptor.rawValue
        try nothingOrErrno(retryOnInterrupt: true) { inotify_rm_watch(fd, wd) }.get()
    }

    /// All queued events, oldest first; `[]` when none is queued.
    ///
    /// The corresponding C function is `read`.
    public func read() throws(Errno) -> [Event] {
        // Room for many events: the kernel returns only whole events and EINVAL when even
        // the first one does not fit (a header plus NAME_MAX + 1 bytes of name).
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var events: [Event] = []
        let fd = descriptor.rawValue
        while true {
            let result = buffer.withUnsafeMutableBytes { raw in
                valueOrErrno(retryOnInterrupt: true) { Glibc.read(fd, raw.baseAddress, raw.count) }
            }
            switch result {
            case .failure(.wouldBlock):
                return events
            case .failure(let error):
                throw error
            case .success(let count):
                events += Self.parse(buffer[..<count])
            }
        }
    }

    /// Closes the descriptor, dropping every watch; later calls do nothing.
    ///
    /// The corresponding C function is `close`.
    public func close() throws(Errno) {
        guard let fd else { return }
        self.fd = nil
        // Not retried on EINTR: Linux releases the descriptor even when close reports EINTR.
        try nothingOrErrno(retryOnInterrupt: false) { Glibc.close(fd.rawValue) }.get()
    }

    /// Splits `struct inotify_event` records: wd, mask, cookie, len, then len bytes of
    /// NUL-padded name.
    static func parse(_ bytes: ArraySlice<UInt8>) -> [Event] {
        let header = 16
        var events: [Event] = []
        var at = bytes.startIndex
        func u32(_ offset: Int) -> UInt32 {
            (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + offset + $1]) << (8 * $1) }
        }
        while bytes.endIndex - at >= header {
            let length = Int(u32(12))
            guard bytes.endIndex - at >= header + length else { break }
            let nameBytes = bytes[(at + header)..<(at + header + length)].prefix { $0 != 0 }
            events.append(Event(
                watch: Int32(bitPattern: u32(0)), mask: Mask(rawValue: u32(4)), cookie: u32(8),
                name: nameBytes.isEmpty ? nil : String(decoding: nameBytes, as: UTF8.self)))
            at += header + length
        }
        return events
    }
}
