/// The release of the package, spelled once for every Swift program in it: `mrleased --version`,
/// `mrlease --version`, `mrleased-bench --version`, `hello`'s `daemon` ("mrleased 0.1"), and the
/// Debian package's upstream version (Scripts/package asks `mrleased --version`).
public enum Release {
    public static let version = "0.1"
}
