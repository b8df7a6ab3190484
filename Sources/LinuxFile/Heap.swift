import CLinux

/// The process's malloc heap.
public enum Heap {
    /// Gives freed heap memory back to the kernel (glibc releases the top of each arena and
    /// madvises the free pages inside it). Returns whether any was released. Costs a walk of the
    /// free lists: worth it after freeing a lot at once, not on every free.
    ///
    /// The corresponding C function is `malloc_trim`.
    @discardableResult
    public static func trim() -> Bool {
        mrl_malloc_trim(0) == 1
    }
}
