import MRLeaseGrant
import SystemPackage
import Verbs

/// Why one connection attempt did not end in an established connection with usable terms.
/// Pure: built from what rdma_cm delivered, so every classification is testable on any host.
public enum ConnectFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// mrleased refused with a reason (its reject carries the "ML" magic).
    case rejected(RejectPrivateData)
    /// A reject without mrleased's private data: the IB CM refused (status 8: nobody listens on
    /// the descriptor's port; 28 with nothing readable: a listener that is not mrleased).
    case rejectedByCM(status: Int32)
    /// mrleased's magic, but bytes this build cannot read (a newer daemon, a reason unknown here).
    case unreadableReject(GrantFormatError)
    /// Address, route or connection could not be made (ADDR_ERROR, ROUTE_ERROR, UNREACHABLE,
    /// CONNECT_ERROR, or a verbs call on the way): the network or the daemon's host.
    case transport(String)
    /// No rdma_cm event within the attempt's time.
    case timedOut(String)
    /// A verbs or rdma_cm call failed on this host (no rdma_ucm module, out of memory …).
    case local(String)
    /// ESTABLISHED, but the accept's private data is not a valid accept, or is for another grant.
    case badAccept(String)

    /// Classifies a failed rdma_resolve_addr or rdma_resolve_route call: the network's answer
    /// (no route, network down or unreachable, the local address gone: a link going down and
    /// up again gives these for a while) is transport trouble, retried until the reconnect
    /// timeout; anything else is this host's.
    public static func resolving(_ error: VerbsError, step: String) -> ConnectFailure {
        switch error.errno {
        case .networkUnreachable, .networkDown, .noRouteToHost, .addressNotAvailable:
            .transport("\(step): \(error.op) answered \(error.errno.symbolicName): no way to the endpoint's network right now")
        default:
            .local("\(error)")
        }
    }

    /// Classifies a REJECTED event's status and private data.
    public static func reject(status: Int32, privateData: [UInt8]) -> ConnectFailure {
        do throws(GrantFormatError) {
            return .rejected(try RejectPrivateData(decoding: privateData))
        } catch {
            // All zeros (or nothing) is what rdma_cm delivers when the reject carried no private
            // data: the CM's own reject, not mrleased's.
            if case .badMagic = error.problem { return .rejectedByCM(status: status) }
            if case .truncated = error.problem, privateData.allSatisfy({ $0 == 0 }) { return .rejectedByCM(status: status) }
            return .unreadableReject(error)
        }
    }

    /// Checks an ESTABLISHED event's private data: a valid accept, for `grantID`.
    public static func accept(_ privateData: [UInt8], grantID: UInt64) -> Result<AcceptPrivateData, ConnectFailure> {
        do throws(GrantFormatError) {
            let accept = try AcceptPrivateData(decoding: privateData)
            guard accept.grantID == grantID else {
                return .failure(.badAccept("the accept is for grant \(accept.grantID), not \(grantID): the endpoint is not serving this descriptor's grant"))
            }
            return .success(accept)
        } catch {
            return .failure(.badAccept("\(error)"))
        }
    }

    /// Whether another attempt with the same descriptor can succeed: mrleased's retryable
    /// reasons (too-many-peers, region-revoking, busy) and transport trouble (a restarting
    /// network, lost CM packets). Not: a grant the daemon says is gone or wrong, nobody
    /// listening (the daemon stopped: grants die with it), or an answer this build cannot read.
    public var isRetryable: Bool {
        switch self {
        case .rejected(let reject): reject.reason.isRetryable
        case .transport, .timedOut: true
        case .rejectedByCM, .unreadableReject, .badAccept, .local: false
        }
    }

    /// The daemon's retry-after hint in milliseconds (0: none).
    public var retryAfterMillis: UInt32 {
        if case .rejected(let reject) = self { return reject.retryAfterMilliseconds }
        return 0
    }

    public var description: String {
        switch self {
        case .rejected(let reject):
            let hint = reject.retryAfterMilliseconds == 0 ? "" : ", retry after \(reject.retryAfterMilliseconds) ms"
            return "mrleased rejected the connection: \(Self.wireName(reject.reason))\(hint) (\(Self.explanation(reject.reason)))"
        case .rejectedByCM(let status):
            let why = status == 8
                ? "nobody listens on the descriptor's endpoint (IB CM reason 8, invalid service ID): mrleased stopped or the descriptor is stale"
                : "IB CM reject reason \(status) without mrleased's reason: a listener that is not mrleased, or a request it could not read and dropped"
            return "the connection was rejected by the CM, not by mrleased: \(why); ask the region's owner for a fresh descriptor"
        case .unreadableReject(let error):
            return "mrleased rejected the connection with a reject this build cannot read (\(error)); upgrade the peer"
        case .transport(let what):
            return "no connection: \(what)"
        case .timedOut(let what):
            return "no answer: \(what)"
        case .badAccept(let what):
            return "the accept cannot be used: \(what)"
        case .local(let what):
            return "a local verbs call failed: \(what)"
        }
    }

    /// The reason's stable wire spelling (docs/remote-access.md).
    public static func wireName(_ reason: RejectReason) -> String {
        switch reason {
        case .malformed: "malformed"
        case .unsupportedVersion: "unsupported-version"
        case .unknownGrant: "unknown-grant"
        case .badSecret: "bad-secret"
        case .expired: "expired"
        case .revoked: "revoked"
        case .tooManyPeers: "too-many-peers"
        case .regionRevoking: "region-revoking"
        case .regionLost: "region-lost"
        case .busy: "busy"
        case .wrongEndpoint: "wrong-endpoint"
        }
    }

    static func explanation(_ reason: RejectReason) -> String {
        switch reason {
        case .malformed: "the connect request was not understood; peer and daemon disagree on the format"
        case .unsupportedVersion: "the daemon speaks another format version; upgrade the older side"
        case .unknownGrant: "no such grant: it ended, or its owner's connection to mrleased closed; ask for a new descriptor"
        case .badSecret: "the descriptor's secret is wrong; copy the descriptor again"
        case .expired: "the grant expired; ask the region's owner for a new one"
        case .revoked: "the owner revoked the grant; ask for a new one"
        case .tooManyPeers: "the grant's maximum number of peers are connected; retry when one leaves"
        case .regionRevoking: "the region is being revoked after a lease break; it will be restored with new keys, or lost"
        case .regionLost: "the region is gone for good (lost after a revocation, or deregistered)"
        case .busy: "the daemon is short of resources; retry later"
        case .wrongEndpoint: "the region is not registered on this endpoint's device"
        }
    }
}
