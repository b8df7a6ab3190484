import MRLeaseEngine
import MRLeasePolicy
import Verbs

/// For a host without RDMA: hands out fake keys so the engine's lease and revocation path can
/// be timed. Its numbers say nothing about RDMA; every line they appear on says "stub".
final class StubRegistrar: Registrar {
    final class FakeMR: RegisteredMemory {
        let lkey: UInt32, rkey: UInt32, address: UInt64
        init(key: UInt32, address: UInt64) {
            lkey = key
            rkey = key | 0x8000_0000
            self.address = address
        }
        func deregister() throws(VerbsError) {}
        /// No device to advise: what a device without the verb answers.
        func prefetch(forWriting: Bool, synchronous: Bool) throws(VerbsError) {
            throw VerbsError(op: "ibv_advise_mr", errno: .notSupported, detail: "stub registrar")
        }
    }

    var deviceName: String { "stub" }
    /// Claims RC ODP for everything, so the engine takes its ODP path (no pinning to fake).
    let odp = ODPCaps(supported: true, implicit: false, rc: [.read, .write, .atomic])
    private var nextKey: UInt32 = 1

    func register(address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) throws(VerbsError) -> any RegisteredMemory {
        defer { nextKey &+= 1 }
        return FakeMR(key: nextKey, address: UInt64(UInt(bitPattern: address)))
    }
}
