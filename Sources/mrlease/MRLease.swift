import ArgumentParser

@main
struct MRLease: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mrlease",
        abstract: "Inspect and use mrleased: RDMA memory regions over files, guarded by leases.",
        subcommands: [DoctorCommand.self]
    )
}
