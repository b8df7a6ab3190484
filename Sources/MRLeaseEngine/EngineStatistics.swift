import MRLeasePolicy

/// Counters and the break-to-unlock latency histogram, as `stats` reports them.
public struct EngineStatistics: Sendable, Equatable {
    public init() {}
    public var files = 0
    public var regions = 0
    public var leasesHeld = 0
    /// The bytes of live MRs (a revoked region's count again once restored).
    public var bytesByStrategy = BytesByStrategy()
    public var registrations = 0
    public var breaksHandled = 0
    /// Revocations for a layout change made without a lease break (through the leased open
    /// file description), and the synced comparisons made to find them.
    public var layoutChangesHandled = 0
    public var layoutChecks = 0
    /// Layout changes reported to the owners of following regions (`layout` events).
    public var layoutChangesFollowed = 0
    public var restorations = 0
    public var regionsLost = 0
    public var breakToUnlock = LatencyHistogram()
}

/// A count of bytes for each strategy: a field per strategy, so a new strategy is a compile
/// error wherever bytes are counted or reported.
public struct BytesByStrategy: Sendable, Equatable, CustomStringConvertible {
    public private(set) var odp: UInt64
    public private(set) var pinned: UInt64

    public init(odp: UInt64 = 0, pinned: UInt64 = 0) {
        self.odp = odp
        self.pinned = pinned
    }

    public subscript(strategy: Strategy) -> UInt64 {
        get { switch strategy { case .odp: odp; case .pinned: pinned } }
        set { switch strategy { case .odp: odp = newValue; case .pinned: pinned = newValue } }
    }

    public var description: String { "odp \(odp), pinned \(pinned)" }
}

/// Latencies in power-of-two microsecond buckets (bucket i holds [2^i, 2^(i+1)) µs; bucket 0
/// also holds < 1 µs), plus the exact maximum and sum: enough for p50/p99 to within a factor
/// of two, and for a Prometheus histogram (`le` = 2^(i+1) µs), in constant space.
public struct LatencyHistogram: Sendable, Equatable {
    public private(set) var buckets = [UInt64](repeating: 0, count: 40)
    public private(set) var count: UInt64 = 0
    public private(set) var maxMicros: UInt64 = 0
    /// Every recorded latency added up, in nanoseconds (saturates rather than wraps: 584 years).
    public private(set) var sumNanoseconds: UInt64 = 0

    public init() {}

    public mutating func record(nanoseconds: UInt64) {
        let micros = nanoseconds / 1000
        let bucket = micros == 0 ? 0 : min(buckets.count - 1, 63 - micros.leadingZeroBitCount)
        buckets[bucket] += 1
        count += 1
        maxMicros = max(maxMicros, micros)
        let (sum, overflow) = sumNanoseconds.addingReportingOverflow(nanoseconds)
        sumNanoseconds = overflow ? .max : sum
    }

    /// The upper bound (µs) of the bucket holding quantile `q` (0...1); nil when empty.
    public func quantileMicros(_ q: Double) -> UInt64? {
        guard count > 0 else { return nil }
        let rank = UInt64((Double(count) * q).rounded(.up))
        var seen: UInt64 = 0
        for (index, n) in buckets.enumerated() {
            seen += n
            if seen >= max(rank, 1) { return min(UInt64(1) << UInt64(index + 1), max(maxMicros, 1)) }
        }
        return maxMicros
    }
}
