import ArgumentParser
import Foundation
import MRLeaseEngine
import MRLeasePolicy

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Report RDMA devices, lease limits, and what mrleased would do with each file.",
        discussion: """
        For each PATH: filesystem, DAX, FIEMAP extents, whether a lease can be taken, trial \
        registrations (pinned writable, pinned read-only, ODP) with the errno of each failure, \
        and the strategy mrleased would use or the precise reason it would refuse.

        Exit status: 0 every file has a strategy; 1 a path is unusable (missing, not a regular \
        file, no FIEMAP); 3 a usable file would be refused a registration.
        """
    )

    @Argument(help: "Files to check. The doctor opens them itself (read-write when writable access is asked and allowed).")
    var paths: [String] = []

    @Option(help: "The access to try: a comma list of read, write, atomic.")
    var access: String = "read,write"

    @Option(help: "Bytes of each file the trial registrations cover (from offset 0).")
    var trialLength: Int = 1 << 20

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func validate() throws {
        guard RegionAccess(names: access) != nil else {
            throw ValidationError("--access takes a comma list of read, write, atomic (got '\(access)')")
        }
        guard trialLength > 0 else { throw ValidationError("--trial-length must be positive") }
    }

    func run() throws {
        let doctor = Doctor(access: RegionAccess(names: access)!, trialLength: trialLength)
        let report = doctor.run(paths: paths)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(DoctorText.render(report), terminator: "")
        }
        for file in report.files where file.error != nil {
            FileHandle.standardError.write(Data("mrlease doctor: \(file.error!)\n".utf8))
        }
        if report.exitCode != 0 { throw ExitCode(report.exitCode) }
    }
}
