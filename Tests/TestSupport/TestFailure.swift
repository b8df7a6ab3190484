/// Thrown by a test helper when what it waited for did not happen: the test fails with this
/// message. (A skip is only for a facility the machine lacks, never for a failure.)
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }
}
