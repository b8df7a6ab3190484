import MRLeaseEngine

/// What the engine told the benchmark's one owner, collected outside the engine: acknowledging
/// from inside `onEvent` would re-enter the engine while it is still carrying out actions.
final class EventLog {
    var revoking: [RegionID] = []
    var restored = 0
    var lost: [String] = []

    func record(_ event: EngineEvent) {
        switch event {
        case .revoking(let id, _, _): revoking.append(id)
        case .revoked: break
        case .restored: restored += 1
        case .lost(let id, let reason): lost.append("\(id) \(reason)")
        }
    }

    func reset() {
        revoking = []
        restored = 0
        lost = []
    }
}
