import ArgumentParser
import Foundation
import MRLeaseClient

@main
struct MRLease: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mrlease",
        abstract: "Inspect and use mrleased: RDMA memory regions over files, guarded by leases.",
        discussion: "Exit status: 0 ok; 1 the daemon is unreachable or refused (stderr says why); 2 usage; doctor: 3 a file would be refused.",
        version: Release.version,
        subcommands: [StatusCommand.self, ListCommand.self, RegisterCommand.self, DeregisterCommand.self,
                      StatsCommand.self, DoctorCommand.self, PeerCommand.self, GrantCommand.self, RevokeGrantCommand.self]
    )

    /// ArgumentParser's own main, except that usage errors exit 2 (as the shells' builtins and
    /// most tools do) instead of EX_USAGE (64).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
