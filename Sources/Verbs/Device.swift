import CRDMA
import SystemPackage

/// An RDMA device as `ibv_get_device_list` reports it. A plain value: opening it gives a `Context`.
public struct Device: Sendable, Equatable, Hashable {
    public var name: String
    /// The node GUID in host order.
    public var guid: UInt64
    /// The sysfs path of the device (`/sys/class/infiniband/NAME`).
    public var deviceNode: String

    /// The devices present now. An empty list is not an error: it is what a host without RDMA
    /// (no `CONFIG_INFINIBAND`, or no provider loaded) looks like.
    ///
    /// The corresponding C function is `ibv_get_device_list`.
    public static func list() throws(VerbsError) -> [Device] {
        var count: Int32 = 0
        guard let list = ibv_get_device_list(&count) else {
            let code = currentErrno()
            // ENOSYS: the kernel has no uverbs at all. That is "no devices", not a failure.
            if code == .noFunction || code == .noSuchFileOrDirectory { return [] }
            throw VerbsError(op: "ibv_get_device_list", errno: code)
        }
        defer { ibv_free_device_list(list) }
        return (0..<Int(count)).compactMap { index in
            list[index].map(Device.init)
        }
    }

    init(_ device: UnsafeMutablePointer<ibv_device>) {
        name = String(cString: ibv_get_device_name(device))
        guid = UInt64(bigEndian: ibv_get_device_guid(device))
        deviceNode = withUnsafeBytes(of: device.pointee.ibdev_path) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// Opens the device by name.
    ///
    /// The corresponding C function is `ibv_open_device`.
    public func open() throws(VerbsError) -> Context {
        try Context(deviceNamed: name)
    }
}
