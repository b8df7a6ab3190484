/// The children a verbs owner made, held weakly: a parent must be able to close what is still
/// alive without keeping anything alive itself (children hold their parent, never the reverse).
/// pyverbs keeps the same weak sets on its PD and closes them (`close_weakrefs`) before
/// `ibv_dealloc_pd`.
struct WeakChildren<Child: AnyObject> {
    private struct Entry {
        weak var child: Child?
    }

    private var entries: [Entry] = []

    /// Records `child`; entries whose child is gone are dropped on the way.
    mutating func insert(_ child: Child) {
        entries.removeAll { $0.child == nil }
        entries.append(Entry(child: child))
    }

    /// The children still alive, oldest first.
    var live: [Child] { entries.compactMap(\.child) }
}
