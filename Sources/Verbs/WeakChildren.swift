/// The children a verbs owner made, held weakly: a parent must be able to close what is still
/// alive without keeping anything alive itself (children hold their parent, never the reverse).
/// pyverbs keeps the same weak sets on its PD and closes them (`close_weakrefs`) before
/// `ibv_dealloc_pd`.
struct WeakChildren<Child: AnyObject> {
    private struct Entry {
        weak var child: Child?
    }

    private var entries: [Entry] = []
    /// Entries are swept for gone children when there are this many: twice what was alive at
    /// the last sweep. Sweeping on every insert made each insert cost every child still
    /// registered: 10 000 MRs in a PD made the next registration scan 10 000 weak references,
    /// and registering N regions O(N²) (docs/benchmarks.md, issue 11).
    private var sweepAt = 16

    /// Records `child`; entries whose child is gone are dropped now and then (amortized O(1)).
    mutating func insert(_ child: Child) {
        if entries.count >= sweepAt {
            entries.removeAll { $0.child == nil }
            sweepAt = max(16, entries.count * 2)
        }
        entries.append(Entry(child: child))
    }

    /// Drops every entry whose child is gone, into storage of the size left. A gone child's
    /// entry keeps the child's weak-reference side table allocated: 100 000 of them, strewn
    /// over the pages the children's objects used, kept malloc_trim from giving those pages
    /// back after the children went (docs/benchmarks.md, issue 19: 66-74 MB after 100 000
    /// regions were released).
    mutating func sweep() {
        entries = entries.filter { $0.child != nil }
        sweepAt = max(16, entries.count * 2)
    }

    /// Entries held, gone children included (for tests: bounded by twice the live ones, plus 16).
    var storedCount: Int { entries.count }

    /// The children still alive, oldest first.
    var live: [Child] { entries.compactMap(\.child) }
}
