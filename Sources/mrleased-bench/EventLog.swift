import MRLeaseEngine
import MRLeasePolicy

/// What the engine's calls returned to the benchmark's one owner, collected for the loop that
/// acknowledges them.
final class EventLog {
    var revoking: [Revocation] = []
    var restored = 0
    var lost: [String] = []

    func record(_ notices: [EngineNotice]) {
        for notice in notices { record(notice.event) }
    }

    func record(_ event: EngineEvent) {
        switch event {
        case .revoking(let revocation): revoking.append(revocation)
        case .revoked, .unlinked, .layout, .deregistered: break
        case .restored: restored += 1
        case .lost(let id, let reason, _): lost.append("\(id) \(reason)")
        }
    }

    func reset() {
        revoking = []
        restored = 0
        lost = []
    }
}
