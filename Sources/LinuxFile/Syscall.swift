import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The swift-system pattern: every wrapper's core returns `Result<_, Errno>` built here, and
// EINTR is handled in this one place. swift-system keeps its own helpers internal, so these
// are the same few lines for this module.

extension Errno {
    /// The calling thread's errno, read right after a failed call.
    static var current: Errno { Errno(rawValue: errno) }
}

/// `f()`'s value, or the errno when it returns -1; retries on EINTR when `retryOnInterrupt`.
func valueOrErrno<I: FixedWidthInteger>(
    retryOnInterrupt: Bool, _ f: () -> I
) -> Result<I, Errno> {
    while true {
        let value = f()
        if value != -1 { return .success(value) }
        let error = Errno.current
        if retryOnInterrupt && error == .interrupted { continue }
        return .failure(error)
    }
}

/// Nothing, or the errno when `f()` returns -1; retries on EINTR when `retryOnInterrupt`.
func nothingOrErrno<I: FixedWidthInteger>(
    retryOnInterrupt: Bool, _ f: () -> I
) -> Result<Void, Errno> {
    valueOrErrno(retryOnInterrupt: retryOnInterrupt, f).map { _ in () }
}
