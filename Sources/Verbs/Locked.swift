import Glibc

/// A value behind a pthread mutex: for the few records that two threads touch (a PD's records
/// of its children, when a worker registers in a PD the loop uses too). Its users keep
/// non-Sendable objects in it and hand them across threads on purpose, which the standard
/// library's `Mutex` would refuse; what crosses is documented where it is used.
final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
