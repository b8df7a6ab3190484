import MRLeaseGrant
import Verbs

/// Why the peer service could not start as configured: a verbs call failed (with the kernel's
/// errno), or `listen` names an address the served device does not carry (no call failed:
/// no errno is made up for it).
enum PeerSetupError: Error, CustomStringConvertible {
    case verbs(VerbsError)
    /// `device`: the RDMA device the address is on (nil: none); `served`: the device mrleased
    /// registers on (nil: not chosen yet, the listener was to choose it).
    case address(GrantEndpoint, device: String?, served: String?)

    var description: String {
        switch self {
        case .verbs(let error):
            "\(error)"
        case .address(let endpoint, nil, _):
            "listen \(endpoint): \(endpoint.host) is not an address of any RDMA device; give the interface an rxe or RoCE device (rdma link add NAME type rxe netdev IF), or listen on another address"
        case .address(let endpoint, let device?, let served):
            "listen \(endpoint): that address is on RDMA device \(device), but mrleased registers on \(served ?? "another"); set `device` to the listener's device or listen on an address of \(served ?? "the configured device")"
        }
    }
}
