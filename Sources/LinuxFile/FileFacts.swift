import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What backs a file's pages, which decides how an MR over it can be registered (KERNEL-FACTS):
/// FS-DAX maps persistent media directly (pins refused, ODP only), page cache refuses writable
/// long-term pins from 6.5 on, shmem (tmpfs, hugetlbfs) pins like anonymous memory.
public enum Backing: String, Sendable {
    case fsDAX = "fs-dax"
    case pageCache = "page-cache"
    case shmem = "shmem"
}

/// The file type from `st_mode`.
public enum FileKind: String, Sendable {
    case regular, directory, fifo, socket, characterDevice, blockDevice, symlink
    /// No file type at all: the kernel's anonymous inodes (epoll, eventfd, signalfd, inotify,
    /// timerfd) have `S_IFMT` bits 0 in `st_mode`, which is not `S_IFREG`.
    case anonymousInode = "kernel-internal anonymous inode (epoll, eventfd, signalfd, …)"

    init(mode: mode_t) {
        switch mode & 0o170000 {
        case 0: self = .anonymousInode
        case 0o040000: self = .directory
        case 0o010000: self = .fifo
        case 0o140000: self = .socket
        case 0o020000: self = .characterDevice
        case 0o060000: self = .blockDevice
        case 0o120000: self = .symlink
        default: self = .regular  // 0o100000; Linux has no other S_IFMT values
        }
    }
}

/// Facts about an open file that decide how it may be registered and watched: identity
/// (device, inode), type, DAX, filesystem and the mount it lives on.
public struct FileFacts: Sendable {
    public var device: DeviceNumber
    public var inode: UInt64
    public var size: UInt64
    public var nlink: UInt32
    /// The file's owner (`stx_uid`).
    public var owner: UInt32
    public var mode: mode_t
    public var kind: FileKind
    /// statx's `STATX_ATTR_DAX`: the file's pages are the persistent media itself.
    public var isDAX: Bool
    /// Whether the kernel and filesystem report the DAX attribute at all (its bit is in
    /// `stx_attributes_mask`); when false, `isDAX` false means "not known", not "no".
    public var daxKnown: Bool
    /// `ext4`, `xfs`, `tmpfs`, `proc`, … from the statfs magic, else mountinfo's fstype.
    public var filesystem: String
    public var fsMagic: UInt64
    /// The mount's id (statx `STATX_MNT_ID`, 5.8+), when the kernel reports it.
    public var mountID: UInt64?
    public var mountPoint: String?
    /// Per-mount then superblock options of that mount.
    public var mountOptions: [String]
    /// The mount's dax option as written (`dax`, `dax=always`, `dax=inode`, `dax=never`).
    public var mountDAX: String?
    public var backing: Backing
    /// Whether the file is on a pseudo filesystem (`isPseudo`), decided when inspected.
    public var isPseudoFile: Bool

    /// Inspects the open file `fd`. With `path`, the mount is matched as the longest mount
    /// point on the same device that is a prefix of the path when the kernel gives no mount id.
    /// An unreadable /proc/self/mountinfo leaves the mount fields empty rather than failing.
    /// `mount: false` skips reading mountinfo (the mount fields stay empty): the registration
    /// path needs only statx and statfs, and mountinfo grows with the host's mounts.
    ///
    /// The corresponding C functions are `statx` (`AT_EMPTY_PATH`) and `fstatfs`.
    public static func inspect(_ fd: FileDescriptor, path: String? = nil, mount includeMount: Bool = true) throws(Errno) -> FileFacts {
        var stx = statx()
        let mask = UInt32(STATX_BASIC_STATS) | MRL_STATX_MNT_ID
        try nothingOrErrno(retryOnInterrupt: true) {
            mrl_statx(fd.rawValue, "", MRL_AT_EMPTY_PATH, mask, &stx)
        }.get()
        var magic: UInt64 = 0
        try nothingOrErrno(retryOnInterrupt: true) { mrl_fstatfs_type(fd.rawValue, &magic) }.get()
        magic &= 0xFFFF_FFFF  // f_type is a signed long holding a 32-bit magic

        let device = DeviceNumber(major: stx.stx_dev_major, minor: stx.stx_dev_minor)
        let mountID = stx.stx_mask & MRL_STATX_MNT_ID != 0 ? stx.stx_mnt_id : nil
        let mounts = includeMount ? (try? MountInfo.current()) ?? [] : []
        let mount = Self.mount(in: mounts, id: mountID, device: device, path: path)

        let isDAX = stx.stx_attributes & MRL_STATX_ATTR_DAX != 0
        // The mount's type first when it was read: statfs's f_type can be another
        // filesystem's (9p passes the server's own, so a 9p file reports the host's ext4).
        let filesystem = mount?.filesystem ?? Self.filesystemName(magic: magic) ?? "0x" + String(magic, radix: 16)
        let backing: Backing = isDAX ? .fsDAX : Self.isShmem(filesystem) ? .shmem : .pageCache
        return FileFacts(
            device: device, inode: stx.stx_ino, size: stx.stx_size, nlink: stx.stx_nlink, owner: stx.stx_uid,
            mode: mode_t(stx.stx_mode), kind: FileKind(mode: mode_t(stx.stx_mode)),
            isDAX: isDAX, daxKnown: stx.stx_attributes_mask & MRL_STATX_ATTR_DAX != 0,
            filesystem: filesystem, fsMagic: magic, mountID: mountID,
            mountPoint: mount?.mountPoint, mountOptions: mount?.options ?? [],
            mountDAX: mount?.daxOption, backing: backing, isPseudoFile: Self.isPseudo(filesystem))
    }

    /// The mount a file is on: by mount id when known; else, among mounts of its device, the
    /// longest mount point containing `path`, or the last one listed (the one on top).
    static func mount(in mounts: [MountInfo], id: UInt64?, device: DeviceNumber, path: String?) -> MountInfo? {
        if let id, let exact = mounts.first(where: { $0.mountID == id }) { return exact }
        let candidates = mounts.filter { $0.device == device }
        guard let path else { return candidates.last }
        return candidates
            .filter { path == $0.mountPoint || path.hasPrefix($0.mountPoint == "/" ? "/" : $0.mountPoint + "/") }
            .max { $0.mountPoint.count < $1.mountPoint.count } ?? candidates.last
    }

    /// Filesystems whose pages are shmem: pinnable like anonymous memory, no writeback.
    static func isShmem(_ filesystem: String) -> Bool {
        switch filesystem {
        case "tmpfs", "hugetlbfs": true
        default: false
        }
    }

    /// Kernel-generated files (procfs, sysfs, …): regular files with no pages behind them to
    /// map or register, whatever FIEMAP answers.
    /// anon_inodefs too: whatever mode a kernel gives its anonymous inodes, they have no pages.
    static func isPseudo(_ filesystem: String) -> Bool {
        switch filesystem {
        case "proc", "sysfs", "debugfs", "tracefs", "securityfs", "cgroup2", "configfs", "anon_inodefs": true
        default: false
        }
    }

    /// The name of the filesystem with statfs `f_type` `magic` (linux/magic.h), among those the
    /// daemon meets. A switch, not a table: a registration asks it, and no hashing is cheaper.
    static func filesystemName(magic: UInt64) -> String? {
        switch magic {
        case 0xEF53: "ext4"  // ext2/3/4 share the magic; the ext4 driver mounts all three here
        case 0x5846_5342: "xfs"
        case 0x9123_683E: "btrfs"
        case 0xF2F5_2010: "f2fs"
        case 0x0102_1994: "tmpfs"
        case 0x9584_58F6: "hugetlbfs"
        case 0x8584_58F6: "ramfs"
        case 0x0000_9FA0: "proc"
        case 0x6265_6572: "sysfs"
        case 0x0000_1CD1: "devpts"
        case 0x6367_7270: "cgroup2"
        case 0x794C_7630: "overlay"
        case 0x0000_6969: "nfs"
        case 0x0102_1997: "9p"
        case 0x6573_5546: "fuse"
        case 0x0000_4D44: "vfat"
        case 0x0000_9660: "iso9660"
        case 0x7371_7368: "squashfs"
        case 0x6462_6720: "debugfs"
        case 0x7472_6163: "tracefs"
        case 0x7363_6673: "securityfs"
        case 0xCAFE_4A11: "bpf"
        case 0x6E73_6673: "nsfs"
        case 0x5049_5045: "pipefs"
        case 0x534F_434B: "sockfs"
        case 0x0904_1934: "anon_inodefs"
        default: nil
        }
    }
}
