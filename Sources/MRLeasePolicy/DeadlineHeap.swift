/// Timers by deadline (monotonic ns): a binary min-heap of (deadline, key). Cancelling is lazy:
/// the owner of the timer keeps the deadline it means, and ignores a popped entry whose
/// deadline is no longer it. `earliest` may then be a stale entry's: a loop that wakes early
/// pops it and sleeps again.
///
/// `@inlinable`: the engine and the daemon use it with their own key types, and generic code
/// that is not specialized in their modules looked up its tuple type's metadata in the Swift
/// runtime on every loop turn (a locked cache: under TCG a tenth of a `stats` request's time,
/// perf in the 7.3.4 guest).
public struct DeadlineHeap<Key: Hashable & Sendable>: Sendable {
    @usableFromInline var entries: [(deadline: UInt64, key: Key)] = []

    @inlinable public init() {}

    @inlinable public var isEmpty: Bool { entries.isEmpty }
    @inlinable public var count: Int { entries.count }
    @inlinable public var earliest: UInt64? { entries.first?.deadline }

    @inlinable public mutating func schedule(_ key: Key, at deadline: UInt64) {
        entries.append((deadline, key))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].deadline < entries[parent].deadline else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes every entry of `key`, at once (O(n)): for a timer whose deadline may be
    /// replaced by a later one, whose stale entry would otherwise stay until it is due.
    @inlinable public mutating func cancel(_ key: Key) {
        entries.removeAll { $0.key == key }
        for parent in stride(from: entries.count / 2 - 1, through: 0, by: -1) { siftDown(from: parent) }
    }

    /// Removes and returns every entry due at `now`, earliest first.
    @inlinable public mutating func popDue(now: UInt64) -> [(deadline: UInt64, key: Key)] {
        guard let first = entries.first, first.deadline <= now else { return [] }
        var due: [(deadline: UInt64, key: Key)] = []
        while let first = entries.first, first.deadline <= now {
            due.append(first)
            entries.swapAt(0, entries.count - 1)
            entries.removeLast()
            siftDown(from: 0)
        }
        return due
    }

    @inlinable mutating func siftDown(from start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < entries.count, entries[left].deadline < entries[smallest].deadline { smallest = left }
            if right < entries.count, entries[right].deadline < entries[smallest].deadline { smallest = right }
            guard smallest != parent else { return }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
