import CLinux
import SystemPackage

extension Errno {
    /// The errno macro name (`EOPNOTSUPP`), which is what operators search for.
    ///
    /// The corresponding C function is `strerrorname_np`.
    public var symbolicName: String {
        guard let name = mrl_strerrorname(rawValue) else { return "errno \(rawValue)" }
        return String(cString: name)
    }
}
