/// The stable machine codes of error replies. Clients switch on these; the message is for people.
public enum ErrorCode: String, Sendable, Equatable, Hashable, CaseIterable {
    /// The file is in use in a way that prevents a lease (another process has it open for
    /// writing, or holds a conflicting lease).
    case fileBusy = "file-busy"
    /// The fd's open mode does not allow the requested access, or the peer may not do this.
    case accessDenied = "access-denied"
    /// The fd is not a regular file (directory, FIFO, socket, device, procfs/sysfs file).
    case notRegularFile = "not-regular-file"
    /// offset + length is beyond the end of the file.
    case rangeOutOfFile = "range-out-of-file"
    /// offset is not a multiple of the page size.
    case badAlignment = "bad-alignment"
    /// The file's filesystem cannot show its extent map (FIEMAP), so the daemon cannot watch
    /// its layout under an MR (9p, FUSE, NFS).
    case unsupportedFilesystem = "unsupported-filesystem"
    /// No registration strategy the daemon has works for this file and device; `errno` says
    /// what the kernel answered.
    case strategyUnavailable = "strategy-unavailable"
    /// The peer's uid would exceed its region or byte limit.
    case quotaExceeded = "quota-exceeded"
    /// The message is malformed: not JSON, a missing or mistyped field, an unknown type.
    case badRequest = "bad-request"
    /// No region with this id belongs to this connection.
    case unknownRegion = "unknown-region"
    /// No grant with this id belongs to this connection (never did, revoked, or expired).
    case unknownGrant = "unknown-grant"
    /// `grant` on a daemon that does not listen for peers (no `listen` configured), or whose
    /// listener is not on the region's device.
    case remoteAccessUnavailable = "remote-access-unavailable"
    /// The packet was larger than the maximum message size.
    case messageTooLarge = "message-too-large"
    /// More descriptors were attached than the request takes; all of them were closed.
    case tooManyFDs = "too-many-fds"
    /// `register` came without its fd.
    case missingFD = "missing-fd"
    /// The client attached its fd, but the daemon could not receive it: the kernel had no fd
    /// to install it in the daemon (EMFILE/ENFILE, reported by recvmsg as MSG_CTRUNC).
    /// Resource exhaustion on the daemon's side; nothing was registered, retry later.
    case fdNotReceived = "fd-not-received"
    /// The daemon ran out of file descriptors while doing the request (EMFILE: its own
    /// RLIMIT_NOFILE, LimitNOFILE= in mrleased.service; ENFILE: the system's fs.file-max);
    /// nothing was done. Retry later; the operator raises the limit.
    case outOfFDs = "out-of-fds"
    /// The message's protocol version (or every version offered in `hello`) is not spoken here.
    case unsupportedVersion = "unsupported-version"
    /// The connection has too many requests in flight.
    case tooManyRequests = "too-many-requests"
    /// The daemon is stopping and takes no new work.
    case shuttingDown = "shutting-down"
    /// A daemon bug or an unexpected failure; the message says which operation failed.
    case `internal` = "internal"
}

/// An error reply's body: a stable code, a human message and, when a system call decided the
/// outcome, its errno by name and number.
public struct ProtocolError: Error, Sendable, Equatable, Hashable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    /// The errno's symbolic name, such as "EOPNOTSUPP" (names are stable across
    /// architectures, numbers are not).
    public var errnoName: String?
    /// The errno's number on the daemon's machine, such as 95.
    public var errnoValue: Int32?
    /// In a `register-batch` reply: the position (from 0) of the range that failed. None of
    /// the batch's ranges stays registered.
    public var index: UInt64?

    public init(_ code: ErrorCode, _ message: String, errnoName: String? = nil, errnoValue: Int32? = nil, index: UInt64? = nil) {
        self.code = code
        self.message = message
        self.errnoName = errnoName
        self.errnoValue = errnoValue
        self.index = index
    }

    public var description: String {
        var text = "\(code.rawValue): "
        if let index { text += "range \(index): " }
        text += message
        if let errnoName { text += " (\(errnoName))" }
        return text
    }
}

extension ProtocolError {
    /// The reply to a packet longer than `Codec.maxMessageBytes`.
    public static var messageTooLarge: ProtocolError {
        ProtocolError(.messageTooLarge, "messages are at most \(Codec.maxMessageBytes) bytes")
    }

    static func missingField(_ path: String) -> ProtocolError {
        ProtocolError(.badRequest, "missing field \"\(path)\"")
    }

    static func wrongType(_ path: String, expected: String, got value: JSONValue) -> ProtocolError {
        ProtocolError(.badRequest, "field \"\(path)\" must be \(expected), got \(value.summary)")
    }

    static func invalid(_ path: String, _ rule: String) -> ProtocolError {
        ProtocolError(.badRequest, "field \"\(path)\" \(rule)")
    }
}
