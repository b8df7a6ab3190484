/// One line of /proc/self/mountinfo (proc(5)): a mount, its filesystem and options.
public struct MountInfo: Sendable, Equatable {
    public var mountID: UInt64
    public var parentID: UInt64
    public var device: DeviceNumber
    /// The directory of the filesystem that is the root of this mount.
    public var root: String
    public var mountPoint: String
    /// Per-mount options (`rw`, `noatime`, …).
    public var mountOptions: [String]
    public var filesystem: String
    public var source: String
    /// Per-superblock options (`rw`, `dax=always`, `errors=remount-ro`, …).
    public var superOptions: [String]

    /// Parses one mountinfo line; nil when it does not have the documented shape.
    ///
    /// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
    /// a variable number of optional fields ends at the lone "-".
    public init?(line: Substring) {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 9,
              let separator = fields[6...].firstIndex(of: "-"),
              separator + 2 < fields.count,
              let mountID = UInt64(fields[0]), let parentID = UInt64(fields[1]),
              let device = DeviceNumber(fields[2])
        else { return nil }
        self.mountID = mountID
        self.parentID = parentID
        self.device = device
        root = Self.unescape(fields[3])
        mountPoint = Self.unescape(fields[4])
        mountOptions = fields[5].split(separator: ",").map(String.init)
        filesystem = String(fields[separator + 1])
        source = Self.unescape(fields[separator + 2])
        superOptions = separator + 3 < fields.count
            ? fields[separator + 3].split(separator: ",").map(String.init) : []
    }

    /// Every mount of this process's mount namespace, in the kernel's order.
    public static func current() throws -> [MountInfo] {
        try parse(readProcFile("/proc/self/mountinfo"))
    }

    public static func parse(_ text: String) -> [MountInfo] {
        text.split(separator: "\n").compactMap { MountInfo(line: $0) }
    }

    /// Per-mount then superblock options, each once.
    public var options: [String] {
        var seen = Set<String>()
        return (mountOptions + superOptions).filter { seen.insert($0).inserted }
    }

    /// The dax option as written (`dax`, `dax=always`, `dax=inode`, `dax=never`), or nil.
    public var daxOption: String? {
        options.first { $0 == "dax" || $0.hasPrefix("dax=") }
    }

    /// The kernel writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3,
               let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A device number as the kernel splits it, printed `major:minor` like mountinfo and lsblk.
public struct DeviceNumber: Sendable, Hashable, CustomStringConvertible {
    public var major: UInt32
    public var minor: UInt32

    public init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    /// Parses `major:minor`.
    public init?<S: StringProtocol>(_ text: S) {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let major = UInt32(parts[0]), let minor = UInt32(parts[1])
        else { return nil }
        self.init(major: major, minor: minor)
    }

    public var description: String { "\(major):\(minor)" }
}
