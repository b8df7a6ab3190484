import LinuxFile

/// `RegistrationPlan.make` for many ranges: the last plans made are kept with everything they
/// were made from but the range, and a range whose other inputs match one of them is only
/// checked (`moved`), not planned again: its strategies, and their reasons' strings, would be
/// the same. `make` is pure, so nothing goes stale; a plan is reused only for equal inputs.
/// A few entries, scanned; the oldest makes room.
///
/// Planning built each attempt's reason per range, and cost more instructions than all the
/// engine's own work for a registration (callgrind, docs/benchmarks.md).
public struct PlanCache: Sendable {
    /// What a plan is made from but its range and what the cache was made for.
    struct Inputs: Equatable {
        var file: PlannedFile
        var mode: OpenMode
        var access: RegionAccess
        var preference: Strategy?
        var layoutPolicy: LayoutPolicy
        var lessee: Lessee
    }

    /// The device every plan is for (one registrar's), and the page size: fixed per cache,
    /// so not compared per range.
    public let device: DeviceCapabilities?
    public let noDeviceReason: String?
    public let pageSize: UInt64
    private var entries: [(inputs: Inputs, plan: RegistrationPlan)] = []
    private var next = 0
    let capacity: Int

    public init(device: DeviceCapabilities?, noDeviceReason: String? = nil, pageSize: UInt64, capacity: Int = 4) {
        precondition(capacity > 0, "a plan cache of no entry")
        self.device = device
        self.noDeviceReason = noDeviceReason
        self.pageSize = pageSize
        self.capacity = capacity
    }

    /// What `RegistrationPlan.make` answers for these inputs and the cache's device and page
    /// size.
    public mutating func plan(
        file: PlannedFile, mode: OpenMode, offset: UInt64, length: UInt64, access: RegionAccess,
        preference: Strategy? = nil, layoutPolicy: LayoutPolicy = .follow, lessee: Lessee
    ) -> Result<RegistrationPlan, PlanRefusal> {
        let inputs = Inputs(file: file, mode: mode, access: access, preference: preference, layoutPolicy: layoutPolicy,
                            lessee: lessee)
        if let known = entries.first(where: { $0.inputs == inputs }) {
            return known.plan.moved(offset: offset, length: length, fileSize: file.size, pageSize: pageSize)
        }
        let made = RegistrationPlan.make(file: file, mode: mode, offset: offset, length: length, access: access,
                                         preference: preference, layoutPolicy: layoutPolicy, device: device,
                                         noDeviceReason: noDeviceReason, lessee: lessee, pageSize: pageSize)
        // Only a plan is kept: a refusal may be about the range, and says so each time.
        if case .success(let plan) = made {
            if entries.count < capacity {
                entries.append((inputs, plan))
            } else {
                entries[next] = (inputs, plan)
                next = (next + 1) % capacity
            }
        }
        return made
    }
}
