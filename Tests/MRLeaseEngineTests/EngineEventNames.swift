@testable import MRLeaseEngine

extension EngineEvent {
    /// "revoking r3", "revoking r3 r4" (one owner's regions of a file), "lost r4 range-truncated",
    /// "layout r5 changed 8192": what a test compares.
    var summary: String {
        switch self {
        case .revoking(let revocation): "revoking " + revocation.regions.map(\.description).joined(separator: " ")
        case .revoked(let id): "revoked \(id)"
        case .restored(let id, _, _): "restored \(id)"
        case .lost(let id, let reason, _): "lost \(id) \(reason.rawValue)"
        case .unlinked(let id): "unlinked \(id)"
        case .layout(let id, let layout, let size): "layout \(id) \(layout.rawValue) \(size)"
        case .deregistered(let id): "deregistered \(id)"
        }
    }
}
