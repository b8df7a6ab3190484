import Glibc
import SystemPackage

/// `$JOURNAL_STREAM` (systemd.exec(5)): "DEVICE:INODE" of the stream systemd connects a
/// service's stdout/stderr to when they go to the journal. Every child the service starts
/// inherits the variable, whatever its own stderr is, so — as the man page says — it means
/// "stderr is the journal" only when stderr's st_dev and st_ino are those two numbers.
public struct JournalStream: Equatable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }

    /// "DEVICE:INODE", both decimal unsigned integers (systemd writes them with "%lu:%lu");
    /// nil for anything else, signs and spaces included.
    public init?(_ value: String) {
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2,
              parts.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") } }),
              let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return nil }
        self.init(device: device, inode: inode)
    }

    /// Whether `value` (the variable, nil when unset) names the file with `device` and `inode`.
    public static func names(_ value: String?, device: UInt64, inode: UInt64) -> Bool {
        value.flatMap(JournalStream.init) == JournalStream(device: device, inode: inode)
    }

    /// Whether `fd` (stderr unless a test says otherwise) is the stream `$JOURNAL_STREAM` in
    /// `environment` names. False when the variable is unset, malformed or inherited, and when
    /// fstat fails (a closed stderr is no journal either).
    ///
    /// The corresponding C function is `fstat`.
    public static func isConnected(_ fd: FileDescriptor = .standardError, environment: [String: String]) -> Bool {
        var status = stat()
        guard fstat(fd.rawValue, &status) == 0 else { return false }
        return names(environment["JOURNAL_STREAM"], device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    }
}
