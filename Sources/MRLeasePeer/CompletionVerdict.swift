/// What a failed work completion means to a peer. Pure: judged from `ibv_wc_status` values
/// (verbs.h, stable ABI), so it is tested on any host.
public enum CompletionVerdict: Sendable, Hashable {
    /// The connection broke under the request — the daemon disconnected the QP (revocation:
    /// posted requests complete with WR_FLUSH_ERR), deregistered the MR (REM_ACCESS_ERR), or
    /// went silent (RETRY_EXC_ERR). Reconnect and retry. `mayHaveExecuted`: whether the
    /// responder may have carried the request out although it failed here (its ACK was lost
    /// or never waited for); false only where the responder said no (a NAK).
    case connectionLost(mayHaveExecuted: Bool)
    /// A fault no reconnect explains (local length/protection errors, an invalid request).
    case fault

    // ibv_wc_status values (enum order in verbs.h).
    static let localLengthError: UInt32 = 1, localQPOperationError: UInt32 = 2, localProtectionError: UInt32 = 4
    static let flushError: UInt32 = 5, badResponse: UInt32 = 7, localAccessError: UInt32 = 8
    static let remoteInvalidRequest: UInt32 = 9, remoteAccessError: UInt32 = 10, remoteOperationError: UInt32 = 11
    static let retryExceeded: UInt32 = 12, rnrRetryExceeded: UInt32 = 13, remoteAbort: UInt32 = 16
    static let fatal: UInt32 = 19, responseTimeout: UInt32 = 20

    public init(status: UInt32) {
        switch status {
        case Self.remoteAccessError:
            // The responder checked the rkey and refused: the MR was deregistered (a revocation)
            // before this request reached it. A NAK: nothing was executed.
            self = .connectionLost(mayHaveExecuted: false)
        case Self.flushError, Self.retryExceeded, Self.rnrRetryExceeded, Self.remoteOperationError,
             Self.remoteAbort, Self.fatal, Self.responseTimeout, Self.badResponse:
            self = .connectionLost(mayHaveExecuted: true)
        default:
            self = .fault
        }
    }
}
