import Foundation
import TestSupport
import Verbs
import XCTest

/// What the VerbsTests need from the guest (Scripts/vm-test), each skipping with the missing
/// facility's name, and what the kernel says this process holds (`rdma resource show`).
enum GuestRDMA {
    /// The guest's device on `lo` (rxe0), opened with `ibv_open_device`.
    static func openDevice() throws -> Context {
        let name = try Facility.rdmaDevice.require()
        let device = try XCTUnwrap(try Device.list().first { $0.name == name }, "\(name) not in ibv_get_device_list")
        return try device.open()
    }

    /// The guest's rdma_cm address (rxe1 on dummy0): rdma_cm cannot resolve over `lo`.
    static func requireRDMACMAddress() throws -> String {
        try Facility.rdmaCMAddress.require()
    }

    /// This process's entries of `rdma -j resource show KIND` (qp, pd, mr, cq, cm_id).
    static func resources(_ kind: String) throws -> [[String: Any]] {
        try RDMAResources.entries(kind)
    }

    /// The numbers of the QPs this process holds, per the kernel.
    static func queuePairNumbers() throws -> Set<UInt32> {
        Set(try resources("qp").compactMap { ($0["lqpn"] as? Int).map(UInt32.init) })
    }

    /// How many PDs this process holds, per the kernel.
    static func protectionDomainCount() throws -> Int { try resources("pd").count }
}
