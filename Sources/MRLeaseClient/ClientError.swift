import LinuxFile
import MRLeaseProtocol
import SystemPackage

/// Why a client call failed: the daemon refused the request (its `ProtocolError`: stable code,
/// message, errno), or the socket failed (the operation and its errno), or the connection went.
public enum ClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `connect` to the daemon's socket failed.
    case connect(path: String, Errno)
    /// The daemon answered the request with an error reply.
    case refused(RequestType, ProtocolError)
    /// A system call failed: `op` names it and what it was for ("send register", "open /data").
    case system(op: String, Errno)
    /// The daemon's connection ended (it stopped, died, or dropped this client); what the
    /// client did about the leases on its files is in the `ConnectionEnd`.
    case disconnected(op: String, ConnectionEnd)
    /// The daemon sent a packet this client cannot read.
    case malformedReply(op: String, ProtocolError)
    /// No reply within the client's `replyTimeout`.
    case timedOut(op: String, after: Duration)

    /// The daemon's error, when it refused the request.
    public var protocolError: ProtocolError? {
        if case .refused(_, let error) = self { error } else { nil }
    }

    /// The daemon's machine code, when it refused the request.
    public var code: ErrorCode? { protocolError?.code }

    /// The errno of a failed system call on this side (not the daemon's, which is in
    /// `protocolError.errnoName`).
    public var errno: Errno? {
        switch self {
        case .connect(_, let errno), .system(_, let errno): errno
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .connect(let path, let errno):
            var text = "connect \(path): \(errno.symbolicName)"
            switch errno {
            case .noSuchFileOrDirectory, .connectionRefused:
                text += " — is mrleased running? (systemctl start mrleased.socket)"
            case .permissionDenied, .notPermitted:
                text += " — the socket's permissions (mrleased socket-mode) do not let this user connect"
            default:
                text += " (\(errno))"
            }
            return text
        case .refused(let type, let error):
            return "mrleased refused \(type.rawValue): \(error)"
        case .system(let op, let errno):
            return "\(op): \(errno.symbolicName) (\(errno))"
        case .disconnected(let op, let end):
            return "\(op): \(end)"
        case .malformedReply(let op, let error):
            return "\(op): unreadable message from mrleased: \(error.message)"
        case .timedOut(let op, let after):
            return "\(op): no reply from mrleased within \(after)"
        }
    }
}
