/// Durations of one benchmark case, in nanoseconds, and the order statistics we print.
struct Samples: Sendable {
    private(set) var nanoseconds: [UInt64] = []

    mutating func append(_ value: UInt64) { nanoseconds.append(value) }

    var count: Int { nanoseconds.count }

    /// Nearest-rank quantile (q in 0...1) in milliseconds; nan when empty.
    func quantileMS(_ q: Double) -> Double {
        guard !nanoseconds.isEmpty else { return .nan }
        let sorted = nanoseconds.sorted()
        if q == 0.5 && sorted.count % 2 == 0 {
            // The median of an even count is the mean of the middle two.
            let a = sorted[sorted.count / 2 - 1], b = sorted[sorted.count / 2]
            return (Double(a) + Double(b)) / 2 / 1e6
        }
        let rank = max(1, Int((Double(sorted.count) * q).rounded(.up)))
        return Double(sorted[min(rank, sorted.count) - 1]) / 1e6
    }

    var medianMS: Double { quantileMS(0.5) }
    var p90MS: Double { quantileMS(0.9) }
    var maxMS: Double { quantileMS(1) }
}

/// "0.42": milliseconds with two decimals, or three below 0.1 ms.
func ms(_ value: Double) -> String {
    value.isNaN ? "n/a" : String(format: value < 0.1 ? "%.3f" : "%.2f", value)
}

func ratio(_ a: Double, _ b: Double) -> String {
    (a.isNaN || b.isNaN || b == 0) ? "n/a" : String(format: "%.2f", a / b)
}
