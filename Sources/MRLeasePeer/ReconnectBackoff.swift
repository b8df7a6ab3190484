/// How long to wait between connection attempts after a revocation: 10 ms, doubling, at most
/// 1 s, at least what the daemon's reject asked for (retry-after), and no attempt after the
/// reconnect timeout. A value: the caller owns the clock.
public struct ReconnectBackoff: Sendable, Hashable {
    public var initial: Double
    public var cap: Double
    /// Seconds from the first failed attempt after which the peer gives up.
    public var timeout: Double
    /// Failed attempts so far.
    public private(set) var attempts = 0

    public init(initial: Double = 0.010, cap: Double = 1.0, timeout: Double = 30) {
        self.initial = initial
        self.cap = cap
        self.timeout = timeout
    }

    /// The delay before the next attempt, after one more failure `elapsed` seconds into the
    /// reconnect, with the reject's retry-after hint (0: none); nil when that attempt would start
    /// after the timeout: give up.
    public mutating func delayAfterFailure(elapsed: Double, retryAfterMillis: UInt32 = 0) -> Double? {
        let exponent = min(attempts, 30)
        attempts += 1
        let delay = max(min(initial * Double(1 << exponent), cap), Double(retryAfterMillis) / 1000)
        return elapsed + delay > timeout ? nil : delay
    }
}
