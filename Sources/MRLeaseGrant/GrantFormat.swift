/// Constants shared by every layout in this module; docs/protocol.md §8 writes them out.
public enum GrantFormat {
    /// The one version this build reads and writes, of the descriptor and of all private data.
    public static let version: UInt8 = 1
}
