import CLinux
import Glibc

/// getrandom(2) failed: the kernel could not give random bytes.
public struct KernelRandomError: Error, Equatable, Sendable, CustomStringConvertible {
    public let errno: Int32

    public var description: String {
        let name = mrl_strerrorname(errno).map { String(cString: $0) } ?? "errno \(errno)"
        return "getrandom failed (\(name)); the kernel's random number generator is unavailable (seccomp filter, or a kernel older than 3.17), so no grant secret can be made"
    }
}

/// The kernel's CSPRNG through getrandom(2) with no flags: blocks only until the pool is first
/// initialised at boot, then never; never reads a file (works in a chroot and with every fd in use,
/// unlike /dev/urandom). The corresponding C function is `getrandom`.
public enum KernelRandom {
    /// A random 64-bit number (grant ids: docs/remote-access.md says why they are random).
    public static func uint64() throws(KernelRandomError) -> UInt64 {
        var value: UInt64 = 0
        try withUnsafeMutableBytes(of: &value) { fill($0) }.get()
        return value
    }

    static func fill(_ buffer: UnsafeMutableRawBufferPointer) -> Result<Void, KernelRandomError> {
        var filled = 0
        while filled < buffer.count {
            let got = mrl_getrandom(buffer.baseAddress! + filled, buffer.count - filled, 0)
            if got < 0 {
                // A signal before any byte was written; requests ≤ 256 bytes are otherwise never short.
                if Glibc.errno == EINTR { continue }
                return .failure(KernelRandomError(errno: Glibc.errno))
            }
            filled += got
        }
        return .success(())
    }
}
