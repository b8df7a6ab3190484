import Foundation
import XCTest

/// The facilities a test may need, and the one place that decides whether a test can run.
///
/// Inside `Scripts/vm-test` the guest sets `MRLEASED_VM=1` and the paths of its filesystems;
/// on the build host none of them exist, and a test that needs one skips naming it.
public enum Facility: String, CaseIterable, Sendable {
    case rdmaDevice = "an RDMA device (MRLEASED_RDMA_DEVICE, set by Scripts/vm-test)"
    case ext4DAX = "an ext4 FS-DAX mount (MRLEASED_FS_EXT4_DAX, set by Scripts/vm-test)"
    case xfsDAX = "an xfs FS-DAX mount (MRLEASED_FS_XFS_DAX, set by Scripts/vm-test)"
    case ext4 = "an ext4 page-cache mount (MRLEASED_FS_EXT4, set by Scripts/vm-test)"
    case xfs = "an xfs page-cache mount with reflink (MRLEASED_FS_XFS, set by Scripts/vm-test)"
    case tmpfs = "a tmpfs mount (MRLEASED_FS_TMPFS, set by Scripts/vm-test)"
    /// rdma_cm cannot resolve routes over `lo`, so the guest puts rxe1 on dummy0 with this address.
    case rdmaCMAddress = "an rdma_cm address on an RDMA device (MRLEASED_RDMA_CM_ADDRESS, set by Scripts/vm-test)"

    var variable: String {
        switch self {
        case .rdmaDevice: "MRLEASED_RDMA_DEVICE"
        case .ext4DAX: "MRLEASED_FS_EXT4_DAX"
        case .xfsDAX: "MRLEASED_FS_XFS_DAX"
        case .ext4: "MRLEASED_FS_EXT4"
        case .xfs: "MRLEASED_FS_XFS"
        case .tmpfs: "MRLEASED_FS_TMPFS"
        case .rdmaCMAddress: "MRLEASED_RDMA_CM_ADDRESS"
        }
    }

    /// The environment's value for this facility, or nil when it is absent here.
    public var value: String? {
        let value = ProcessInfo.processInfo.environment[variable]
        return (value?.isEmpty ?? true) ? nil : value
    }

    /// The value, or an `XCTSkip` naming the missing facility.
    public func require() throws -> String {
        guard let value else { throw XCTSkip("needs \(rawValue)") }
        return value
    }
}

/// Facts about the guest kernel the VM harness booted, for tests that assert the kernel matrix.
public enum TestKernel {
    /// "6.1", "6.12", "7" … as exported by Scripts/vm-test (`MRLEASED_KERNEL`), or nil on the host.
    public static var series: String? { ProcessInfo.processInfo.environment["MRLEASED_KERNEL"] }

    /// The running kernel's major.minor, from uname.
    public static var release: (major: Int, minor: Int) {
        var name = utsname()
        uname(&name)
        let text = withUnsafeBytes(of: &name.release) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let parts = text.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        return (parts.first ?? 0, parts.dropFirst().first ?? 0)
    }

    /// Kernels from 6.5 on refuse writable long-term pins of file-backed pages (KERNEL-FACTS).
    public static var refusesWritableFilePins: Bool {
        let r = release
        return r.major > 6 || (r.major == 6 && r.minor >= 5)
    }

    /// rxe has ODP from ~6.14 (Daisuke Matsuda's series): 7.x reports it, 6.1 and 6.12 do not.
    public static var rxeHasODP: Bool {
        let r = release
        return r.major > 6 || (r.major == 6 && r.minor >= 14)
    }

    /// The errno `ibv_reg_mr` with `IBV_ACCESS_ON_DEMAND` gets from an rxe without ODP:
    /// EINVAL on 6.1, EOPNOTSUPP on 6.12 (both measured; kernels between are not).
    public static var odpRefusalErrno: String {
        let r = release
        return r.major == 6 && r.minor < 12 ? "EINVAL" : "EOPNOTSUPP"
    }

    /// Whether a read+write region on `facility` has a strategy with the guests' rxe: FS-DAX
    /// only through ODP, the page cache through ODP or (before 6.5) a writable pin, tmpfs
    /// always (shmem pins). On 6.12 only tmpfs has one.
    public static func hasWritableStrategy(on facility: Facility) -> Bool {
        switch facility {
        case .ext4DAX, .xfsDAX: rxeHasODP
        case .ext4, .xfs: rxeHasODP || !refusesWritableFilePins
        case .tmpfs: true
        case .rdmaDevice, .rdmaCMAddress: preconditionFailure("\(facility) is not a file system")
        }
    }
}

extension Facility {
    /// `preferred` where a read+write region on it has a strategy on this kernel, else tmpfs:
    /// for tests of the daemon that need a writable region and not a particular backing. On
    /// 6.5 to ~6.14 with rxe (6.12 measured) the page cache has none: no writable pin, no ODP.
    public static func writable(_ preferred: Facility = .ext4) -> Facility {
        TestKernel.hasWritableStrategy(on: preferred) ? preferred : .tmpfs
    }

    /// For tests of what a host *without* RDMA answers: skips where a device exists (the
    /// vm-test guests), since there the same request succeeds instead.
    public static func requireNoRDMADevice() throws {
        if let device = Facility.rdmaDevice.value {
            throw XCTSkip("this machine has an RDMA device (\(device)); the test checks the no-device answers")
        }
    }
}
