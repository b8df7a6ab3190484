import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeasePolicy
import SystemPackage
import Verbs

/// One grant's PD and MR to make over one generation of its region's registration, and the
/// connect requests waiting for them. The loop makes it and reads `made` and `waiting`; the
/// maker's thread fills in `made`. It crosses between them only inside the maker's lock, and
/// no thread touches it while the other has it: hence `@unchecked Sendable`.
final class ExposureJob: @unchecked Sendable {
    let grant: UInt64
    let region: RegionID
    let generation: UInt64
    let address: UnsafeMutableRawPointer
    let length: Int
    let flags: AccessFlags
    /// The connect requests admitted for the grant while the job runs (loop only).
    var waiting: [PeerCMEvent] = []
    /// The PD and MR, or why not; nil until the job ran.
    var made: Result<(domain: any PeerPD, memory: any PeerMR), VerbsError>?
    /// How long `ibv_alloc_pd` + `ibv_reg_mr` took (ns).
    var nanos: UInt64 = 0
    /// Closing the PD after its MR was refused failed too (the loop logs it).
    var closeFailure: VerbsError?

    init(grant: UInt64, region: RegionID, generation: UInt64, address: UnsafeMutableRawPointer, length: Int, flags: AccessFlags) {
        self.grant = grant
        self.region = region
        self.generation = generation
        self.address = address
        self.length = length
        self.flags = flags
    }

    /// Makes the PD and registers the grant's MR in it (on whichever thread runs the job).
    func run(on verbs: any PeerVerbs) {
        let start = Engine.now()
        do throws(VerbsError) {
            let domain = try verbs.makePD()
            do {
                made = .success((domain, try domain.register(address: address, length: length, access: flags)))
            } catch {
                do { try domain.close() } catch { closeFailure = error }
                throw error
            }
        } catch {
            made = .failure(error)
        }
        nanos = Engine.now() - start
    }
}

/// Where grants' exposures are made: registering a region again (pinning its pages, for a
/// pinned region) costs what the region's size costs, 25-100 ms per GB on hardware, and a
/// peer's connect must not hold the loop, and every other client, for that long
/// (docs/remote-access.md, "Admission off the loop"). A device's run on a `ThreadRunner`.
typealias ExposureMaker = any JobRunner<ExposureJob>
