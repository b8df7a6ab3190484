/// A benchmark step that failed: which step, and what the kernel or the engine said.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    /// The kernel refused the registration itself (FS-DAX without ODP on 6.1): nothing to
    /// time, which the run reports as skipped rather than failed.
    var refused = false
    init(_ description: String, refused: Bool = false) {
        self.description = description
        self.refused = refused
    }
}
