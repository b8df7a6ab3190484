/// A benchmark step that failed: which step, and what the kernel or the engine said.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
