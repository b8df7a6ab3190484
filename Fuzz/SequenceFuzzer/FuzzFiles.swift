import Glibc
import SystemPackage

/// The sequence fuzzer's files, the clients' fds on them, and the other openers that break
/// their leases. Every input starts from the same files: `reset` puts back their sizes (and so
/// their extents: all holes, as made) and any name an input unlinked.
final class FuzzFiles {
    struct File {
        let name: String
        let size: Int
        /// Whether the client's fd is read-only (a read lease) or read-write (a write lease).
        let readOnly: Bool
    }

    /// rw0 and rw1 for write leases (rw1 ends mid-page), ro0 and ro1 for read leases.
    static let files = [File(name: "rw0", size: 1 << 20, readOnly: false), File(name: "rw1", size: 3 * 4096 + 100, readOnly: false),
                        File(name: "ro0", size: 1 << 20, readOnly: true), File(name: "ro1", size: 8192, readOnly: true)]
    /// Other openers at once; a new one past this closes the oldest first.
    static let maxBreakers = 6

    let directory: String
    /// The client's fd on each file (held for the harness's life, as a client holds its file:
    /// a second open of a leased file would break the lease it wants).
    private(set) var clientFDs: [FileDescriptor] = []
    /// Other opens that succeeded (the lease was gone or allowed them): a close of one lets a
    /// released file restore.
    private(set) var breakers: [(file: Int, fd: FileDescriptor)] = []
    private var dirty = false
    private var unlinked: Set<Int> = []

    init(directory: String) {
        self.directory = directory
        for index in Self.files.indices { clientFDs.append(make(index)) }
    }

    func path(_ index: Int) -> String { directory + "/" + Self.files[index].name }

    /// Creates file `index` at its size (sparse) and opens the client's fd on it.
    private func make(_ index: Int) -> FileDescriptor {
        let file = Self.files[index]
        let writer = Glibc.open(path(index), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard writer >= 0, ftruncate(writer, off_t(file.size)) == 0 else { fatalError("creating \(file.name): errno \(errno)") }
        if !file.readOnly { return FileDescriptor(rawValue: writer) }
        Glibc.close(writer)
        let reader = Glibc.open(path(index), O_RDONLY | O_CLOEXEC)
        guard reader >= 0 else { fatalError("opening \(file.name): errno \(errno)") }
        return FileDescriptor(rawValue: reader)
    }

    /// Another open of file `index` (flags from the input, always O_NONBLOCK: a leased file
    /// answers EWOULDBLOCK and the kernel starts the break, queueing the lease signal to the
    /// engine's signalfd). Kept while it lasts.
    func open(_ index: Int, flags: Int32) {
        let fd = Glibc.open(path(index), flags | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return }  // EWOULDBLOCK (a break started), or ENOENT once unlinked
        if flags & O_TRUNC != 0 { dirty = true }
        if breakers.count == Self.maxBreakers { closeBreaker(0) }
        breakers.append((index, FileDescriptor(rawValue: fd)))
    }

    /// Closes breaker `index`: inotify's IN_CLOSE lets a released file try its lease again.
    func closeBreaker(_ index: Int) {
        guard breakers.indices.contains(index) else { return }
        Glibc.close(breakers.remove(at: index).fd.rawValue)
    }

    /// A size change through a breaker's fd (`breaker` set) or through the client's own fd of
    /// file `index` (IN_MODIFY on a leased file: a layout change the lease did not see).
    func truncate(breaker: Int?, file index: Int, to size: Int) {
        dirty = true
        let fd = breaker.flatMap { breakers.indices.contains($0) ? breakers[$0].fd : nil } ?? clientFDs[index]
        _ = ftruncate(fd.rawValue, off_t(size))  // EINVAL/EBADF on a read-only fd: nothing happened
    }

    /// A one-byte write through the client's own fd of file `index` (allocates a block where a
    /// hole was).
    func write(file index: Int, at offset: Int) {
        dirty = true
        var byte: UInt8 = 0x5a
        _ = pwrite(clientFDs[index].rawValue, &byte, 1, off_t(offset))  // EBADF on a read-only fd
    }

    /// Removes file `index`'s name (IN_ATTRIB, nlink 0: the engine reports `unlinked`).
    func unlink(_ index: Int) {
        guard Glibc.unlink(path(index)) == 0 else { return }
        dirty = true
        unlinked.insert(index)
    }

    func closeBreakers() {
        while !breakers.isEmpty { closeBreaker(breakers.count - 1) }
    }

    /// Back to the files as made. Call with no lease held (truncating a leased file's other
    /// fd would wait for the break).
    func reset() {
        closeBreakers()
        guard dirty else { return }
        dirty = false
        for index in Self.files.indices {
            if unlinked.contains(index) {
                Glibc.close(clientFDs[index].rawValue)
                clientFDs[index] = make(index)
                continue
            }
            // O_NONBLOCK: a lease left behind would otherwise hold this open for lease-break-time.
            let writer = Glibc.open(path(index), O_RDWR | O_NONBLOCK | O_CLOEXEC)
            guard writer >= 0, ftruncate(writer, 0) == 0, ftruncate(writer, off_t(Self.files[index].size)) == 0 else {
                fatalError("resetting \(Self.files[index].name): errno \(errno)")
            }
            Glibc.close(writer)
        }
        unlinked = []
    }
}
