import MRLeaseGrant
import Verbs

/// Why a peer operation failed. Every case names the operation; `description` says what went
/// wrong and what to do.
public enum PeerError: Error, CustomStringConvertible {
    /// A rule refused the transfer before anything was posted (bounds, access, alignment).
    case refused(operation: PeerOperation, TransferProblem)
    /// Connecting failed for a reason another attempt cannot fix (see `ConnectFailure.isRetryable`):
    /// a non-retryable reject (region-lost, revoked, unknown-grant, bad-secret, expired …).
    case connectFailed(operation: String, ConnectFailure)
    /// Retryable failures went on past the reconnect timeout; `last` is the last one.
    case reconnectTimedOut(operation: String, seconds: Double, attempts: Int, last: ConnectFailure)
    /// An atomic was posted and its connection broke before it completed (flush, retry exceeded):
    /// the responder may or may not have executed it. Not re-executed; the peer is connected
    /// again (to `generation`): read the word to learn what happened, then decide.
    case atomicOutcomeUnknown(operation: PeerOperation, completion: String, generation: UInt64)
    /// A completion failed in a way a reconnect does not explain (a local error, an invalid
    /// request): a bug in the peer or the device, not a revocation.
    case completionFailed(operation: PeerOperation, completion: String)
    /// A verbs or rdma_cm call failed outside a connection attempt.
    case verbs(operation: String, VerbsError)
    /// The peer was closed.
    case closed(operation: String)
    /// An option is unusable (staging buffer too small for the alignment …).
    case badOption(String)

    public var description: String {
        switch self {
        case .refused(let operation, let problem):
            let what = operation == .persist ? "persist (an RDMA READ after the writes)" : operation.rawValue
            return "\(what) refused before posting: \(problem)"
        case .connectFailed(let operation, let failure):
            return "\(operation): \(failure)"
        case .reconnectTimedOut(let operation, let seconds, let attempts, let last):
            return "\(operation): gave up after \(attempts) connection attempts in \(Self.seconds(seconds)) s (the reconnect timeout); "
                + "last: \(last). Raise PeerOptions.reconnectTimeout (--reconnect-timeout) if the region takes longer to come back"
        case .atomicOutcomeUnknown(let operation, let completion, let generation):
            return "\(operation.rawValue): the connection broke while the atomic was in flight (\(completion)); the responder may "
                + "or may not have executed it, so it was not repeated. The peer is connected again (generation \(generation)): "
                + "read the word and decide"
        case .completionFailed(let operation, let completion):
            return "\(operation.rawValue): the work request failed with \(completion), which no revocation explains; "
                + "check the offsets and the device (dmesg)"
        case .verbs(let operation, let error):
            return "\(operation): \(error)"
        case .closed(let operation):
            return "\(operation): the peer is closed; make a new Peer"
        case .badOption(let text):
            return text
        }
    }

    static func seconds(_ value: Double) -> String {
        String(Double(Int(value * 10)) / 10)
    }
}
