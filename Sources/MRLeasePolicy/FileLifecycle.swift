/// The life of one tracked file's regions, as a pure state machine: every transition is in
/// `handle(_:)`, and the engine carries out the actions it returns, in order.
///
///     leased ──break──▶ revoking(deadline, awaiting acks)
///      ▲  │                 │ all acked, deadline passed, or layout changed
///      │  │ layout changed  ▼
///      │  └──────────────▶ released(retry) ──unlinked / gone──▶ lost
///      └────restored───────────┘
///
/// Time is passed in (`now`, nanoseconds on a monotonic clock) so tests drive it exactly.
public struct FileLifecycle: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        /// MRs registered, lease held.
        case leased
        /// A break arrived: owners were told; waiting for their acks or the deadline.
        /// `awaiting` counts the regions whose acks are outstanding; which ones they are is the
        /// engine's to know (a flag on each region), so an ack of a whole file is a walk, not a
        /// set operation per region.
        case revoking(deadline: UInt64, awaiting: Int)
        /// MRs gone, lease released; re-leasing at `nextAttempt` or when the last other
        /// opener closes the file (inotify), whichever comes first.
        case released(attempt: Int, nextAttempt: UInt64)
        /// Nothing left to restore: the file was unlinked or every region lies past its end.
        case lost
    }

    public enum Event: Sendable, Equatable {
        case leaseBroken(now: UInt64)
        /// A registered range's size or extents changed without a lease break: through the
        /// open file description the lease is held on (the owner's own fd, or a copy of it),
        /// which the kernel does not count as a conflicting open.
        case layoutChanged(now: UInt64)
        /// Acks of `count` regions whose acks were outstanding (one region's, a list's, or a
        /// whole file's: one event either way). Late and repeated acks are not counted.
        case acknowledged(count: Int, now: UInt64)
        case timer(now: UInt64)
        /// inotify: someone closed the file; the lease may be free again.
        case closed(now: UInt64)
        /// Re-taking the lease failed with EAGAIN: someone still has the file open.
        case restoreBusy(now: UInt64)
        /// The lease is back; `lost` names the regions that could not come back, and why
        /// (`range-truncated` when the file now ends before them, `restore-failed`).
        case restored(lost: [RegionID: RegionLoss])
        /// The file is gone (nlink 0) or cannot be restored at all.
        case gone(reason: RegionLoss)
    }

    public enum Action: Sendable, Equatable {
        case notifyRevoking(Set<RegionID>, deadline: UInt64, cause: RevocationCause)
        /// Deregister every MR of the file, unmap it, and unlock the lease — in that order.
        case revoke
        case notifyRevoked(Set<RegionID>)
        case armTimer(at: UInt64)
        case watchCloses
        case attemptRestore
        case notifyRestored(Set<RegionID>)
        case notifyLost([RegionID: RegionLoss])
    }

    public struct Timing: Sendable, Equatable {
        /// How long owners get to quiesce after a break. Far below lease-break-time (45 s).
        public var quiesce: UInt64
        /// First retry of the lease after a release, doubled per busy attempt up to `maxBackoff`.
        public var initialBackoff: UInt64
        public var maxBackoff: UInt64

        /// `initialBackoff` is also the grace an opener that failed with EWOULDBLOCK gets to
        /// retry: coreutils `truncate` opens O_NONBLOCK, so its open fails at once while the
        /// lease is held but still starts the break; it never opened, so no close event comes,
        /// and re-leasing sooner than a human or a retry loop re-runs it would starve it.
        public init(quiesce: UInt64 = 100_000_000, initialBackoff: UInt64 = 500_000_000, maxBackoff: UInt64 = 2_000_000_000) {
            self.quiesce = quiesce
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
        }
    }

    public private(set) var phase: Phase = .leased
    public private(set) var regions: Set<RegionID>
    public let timing: Timing

    public init(regions: Set<RegionID>, timing: Timing = Timing()) {
        self.regions = regions
        self.timing = timing
    }

    /// Regions join and leave only while the file is leased (new registrations wait otherwise).
    public mutating func add(_ region: RegionID) { regions.insert(region) }
    /// A deregistered region no longer holds up a revocation: `awaited` says whether its ack
    /// was outstanding.
    public mutating func remove(_ region: RegionID, awaited: Bool, now: UInt64) -> [Action] {
        regions.remove(region)
        return awaited && stopAwaiting(1) ? revokeNow(now: now) : []
    }

    public mutating func handle(_ event: Event) -> [Action] {
        if case .acknowledged(let count, let now) = event {
            return count > 0 && stopAwaiting(count) ? revokeNow(now: now) : []
        }
        switch (phase, event) {
        case (.leased, .leaseBroken(let now)):
            let deadline = now + timing.quiesce
            guard !regions.isEmpty else { return revokeNow(now: now) }
            phase = .revoking(deadline: deadline, awaiting: regions.count)
            return [.notifyRevoking(regions, deadline: deadline, cause: .leaseBreak), .armTimer(at: deadline)]

        case (.leased, .layoutChanged(let now)):
            // No quiesce: the MRs already disagree with the file (a pinned MR keeps pages the
            // file dropped, and WRITEs to them complete into nothing), so waiting for acks
            // only widens the window in which data is lost. Nobody waits on a lease either,
            // so the restore is attempted at once; the close watch covers an EAGAIN there.
            let notify: [Action] = regions.isEmpty ? [] : [.notifyRevoking(regions, deadline: now, cause: .layoutChanged)]
            phase = .released(attempt: 0, nextAttempt: UInt64.max)
            return notify + [.watchCloses, .revoke, .notifyRevoked(regions), .attemptRestore]

        case (.revoking, .layoutChanged(let now)):
            // A layout change during a break's quiesce ends the quiesce: same reason as above.
            return revokeNow(now: now)

        case (.revoking(let deadline, _), .timer(let now)) where now >= deadline:
            // Owners that did not ack in time lose nothing but the wait: the break is answered.
            return revokeNow(now: now)

        case (.released(let attempt, let next), .timer(let now)) where now >= next:
            phase = .released(attempt: attempt, nextAttempt: UInt64.max)
            return [.attemptRestore]

        case (.released(let attempt, _), .closed):
            phase = .released(attempt: attempt, nextAttempt: UInt64.max)
            return [.attemptRestore]

        case (.released(let attempt, _), .restoreBusy(let now)):
            let next = now + backoff(attempt: attempt + 1)
            phase = .released(attempt: attempt + 1, nextAttempt: next)
            return [.armTimer(at: next)]

        case (.released, .restored(let lost)):
            let kept = regions.subtracting(lost.keys)
            regions = kept
            phase = kept.isEmpty ? .lost : .leased
            var actions: [Action] = []
            if !kept.isEmpty { actions.append(.notifyRestored(kept)) }
            if !lost.isEmpty { actions.append(.notifyLost(lost)) }
            return actions

        case (.released, .gone(let reason)):
            let all = regions
            regions = []
            phase = .lost
            return all.isEmpty ? [] : [.notifyLost(Dictionary(uniqueKeysWithValues: all.map { ($0, reason) }))]

        default:
            // Stale timers, duplicate breaks (one per signal) and late acks change nothing.
            return []
        }
    }

    /// Stops waiting for `count` acks while revoking; true when none is left to wait for
    /// (false outside revoking: late acks change nothing).
    private mutating func stopAwaiting(_ count: Int) -> Bool {
        guard case .revoking(let deadline, let awaiting) = phase else { return false }
        // The engine counts only flags it set at the break; more would be its bug, and must
        // not stop the count at a negative number that never reaches zero.
        let left = awaiting - Swift.min(count, awaiting)
        phase = .revoking(deadline: deadline, awaiting: left)
        return left == 0
    }

    private mutating func revokeNow(now: UInt64) -> [Action] {
        let next = now + timing.initialBackoff
        phase = .released(attempt: 0, nextAttempt: next)
        // Watch for closes before unlocking: the breaker may finish and close the file the
        // moment the lease is gone, and that close is the cue to restore.
        return [.watchCloses, .revoke, .notifyRevoked(regions), .armTimer(at: next)]
    }

    func backoff(attempt: Int) -> UInt64 {
        let shifted = timing.initialBackoff << UInt64(min(attempt, 20))
        return min(shifted, timing.maxBackoff)
    }
}

/// A region's stable identity: it survives re-registration, while its MR keys change.
public struct RegionID: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: RegionID, b: RegionID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "r\(rawValue)" }
}
