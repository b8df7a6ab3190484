import CRDMA
import Glibc
import SystemPackage

/// An open RDMA device: the root of the verbs object tree (context → PD → MR/QP, context → CQ).
///
/// Either owns its `ibv_context` (opened with `ibv_open_device`) or borrows one of librdmacm's
/// (`rdma_get_devices`), which librdmacm keeps open for as long as it is loaded and closes
/// itself. Protection domains, completion channels and completion queues keep their context
/// alive, so the context is released only after every child is gone.
public final class Context {
    /// Who opened the `ibv_context`, and so who closes it.
    public enum Origin: Sendable, Equatable {
        /// One of `rdma_get_devices()`'s contexts: the one every `rdma_cm_id` bound to this
        /// device uses, so `rdma_create_qp` accepts PDs allocated on it.
        case librdmacm
        /// Opened by us with `ibv_open_device`: `rdma_create_qp` refuses PDs on it (EINVAL,
        /// librdmacm checks `id->verbs == pd->context`).
        case ibvOpenDevice
    }

    public let device: Device
    public let origin: Origin
    let pointer: UnsafeMutablePointer<ibv_context>
    /// The array `rdma_get_devices` returned, freed with `rdma_free_devices` when we go.
    private let librdmacmList: UnsafeMutablePointer<UnsafeMutablePointer<ibv_context>?>?

    init(deviceNamed name: String) throws(VerbsError) {
        var count: Int32 = 0
        guard let list = ibv_get_device_list(&count) else {
            throw VerbsError(op: "ibv_get_device_list", errno: currentErrno())
        }
        defer { ibv_free_device_list(list) }
        for index in 0..<Int(count) {
            guard let candidate = list[index], String(cString: ibv_get_device_name(candidate)) == name else {
                continue
            }
            // rdma-core counts references on devices: the open context stays valid after the
            // list is freed.
            guard let context = ibv_open_device(candidate) else {
                throw VerbsError(op: "ibv_open_device", errno: currentErrno(), detail: name)
            }
            self.pointer = context
            self.device = Device(candidate)
            self.origin = .ibvOpenDevice
            self.librdmacmList = nil
            return
        }
        throw VerbsError(op: "ibv_open_device", errno: .operationNotSupportedByDevice, detail: "no RDMA device named \(name)")
    }

    private init(librdmacm context: UnsafeMutablePointer<ibv_context>,
                 list: UnsafeMutablePointer<UnsafeMutablePointer<ibv_context>?>) {
        pointer = context
        device = Device(context.pointee.device)
        origin = .librdmacm
        librdmacmList = list
    }

    /// librdmacm's context for the named device, or nil when librdmacm lists no such device.
    /// Throws when librdmacm cannot start at all (no `/dev/infiniband/rdma_cm`: the `rdma_ucm`
    /// module is not loaded), naming the call and errno.
    ///
    /// The corresponding C function is `rdma_get_devices`.
    public static func librdmacm(deviceNamed name: String) throws(VerbsError) -> Context? {
        var count: Int32 = 0
        guard let list = rdma_get_devices(&count) else {
            throw VerbsError(op: "rdma_get_devices", errno: currentErrno(), detail: name)
        }
        for index in 0..<Int(count) {
            if let context = list[index], String(cString: ibv_get_device_name(context.pointee.device)) == name {
                return Context(librdmacm: context, list: list)
            }
        }
        rdma_free_devices(list)
        return nil
    }

    deinit {
        if let librdmacmList {
            // librdmacm owns its contexts and closes them when it unloads; only the array is ours.
            rdma_free_devices(librdmacmList)
        } else {
            ibv_close_device(pointer)
        }
    }

    /// The device's attributes, including On-Demand Paging capabilities.
    ///
    /// The corresponding C function is `ibv_query_device_ex`.
    public func query() throws(VerbsError) -> DeviceAttributes {
        var attributes = ibv_device_attr_ex()
        try check("ibv_query_device_ex", mrl_query_device_ex(pointer, &attributes), detail: device.name)
        return DeviceAttributes(attributes)
    }

    /// One port's state and addressing.
    ///
    /// The corresponding C functions are `ibv_query_port` and `ibv_query_gid`.
    public func queryPort(_ port: UInt8) throws(VerbsError) -> PortAttributes {
        var attributes = ibv_port_attr()
        try check("ibv_query_port", mrl_query_port(pointer, port, &attributes), detail: "\(device.name) port \(port)")
        var gids: [GID] = []
        for index in 0..<max(0, Int(attributes.gid_tbl_len)) {
            var raw = ibv_gid()
            guard ibv_query_gid(pointer, port, Int32(index), &raw) == 0 else { break }
            let gid = GID(raw)
            if !gid.isZero { gids.append(gid.withIndex(index)) }
        }
        return PortAttributes(port: port, attributes, gids: gids)
    }

    /// Allocates a protection domain on this device.
    ///
    /// The corresponding C function is `ibv_alloc_pd`.
    public func allocateProtectionDomain() throws(VerbsError) -> ProtectionDomain {
        guard let pd = ibv_alloc_pd(pointer) else {
            throw VerbsError(op: "ibv_alloc_pd", errno: currentErrno(), detail: device.name)
        }
        return ProtectionDomain(context: self, pointer: pd)
    }

    /// Creates a completion channel, whose fd becomes readable when a CQ armed on it completes.
    /// Its fd is non-blocking.
    ///
    /// The corresponding C function is `ibv_create_comp_channel`.
    public func createCompletionChannel() throws(VerbsError) -> CompletionChannel {
        guard let channel = ibv_create_comp_channel(pointer) else {
            throw VerbsError(op: "ibv_create_comp_channel", errno: currentErrno(), detail: device.name)
        }
        let owner = CompletionChannel(context: self, pointer: channel)
        let flags = fcntl(channel.pointee.fd, F_GETFL)
        guard flags >= 0, fcntl(channel.pointee.fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw VerbsError(op: "fcntl", errno: currentErrno(), detail: "O_NONBLOCK on the completion channel")
        }
        return owner
    }

    /// Creates a completion queue with room for at least `entries` completions.
    ///
    /// The corresponding C function is `ibv_create_cq`.
    public func createCompletionQueue(entries: Int32, channel: CompletionChannel? = nil) throws(VerbsError) -> CompletionQueue {
        guard let cq = ibv_create_cq(pointer, entries, nil, channel?.pointer, 0) else {
            throw VerbsError(op: "ibv_create_cq", errno: currentErrno(), detail: device.name)
        }
        return CompletionQueue(context: self, channel: channel, pointer: cq)
    }
}
