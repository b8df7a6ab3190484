import ArgumentParser
import MRLeaseClient

/// `mrlease deregister`: asks the daemon to drop a region, which only works for the
/// connection that made it — so from this separate process it always reports why not.
struct DeregisterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deregister",
        abstract: "Ask mrleased to deregister a region (only the connection that registered it may).",
        discussion: """
        Regions belong to the connection that registered them: mrleased deregisters a region \
        when its owner asks or disconnects. This command runs on a new connection, so for any \
        region it did not make the daemon answers unknown-region. To release a region held by \
        `mrlease register`, interrupt that process (Ctrl-C, or kill -TERM PID from `mrlease list`).
        Exit status: 0 deregistered; 1 refused or unreachable.
        """
    )

    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "The region id, as `mrlease list` shows it.")
    var region: UInt64

    func run() throws {
        let (client, _) = try daemon.connect("deregister")
        do {
            try client.deregister(region: region)
            emit("deregistered region \(region)")
        } catch .refused(_, let error) where error.code == .unknownRegion {
            printError("mrlease deregister: mrleased refused: unknown-region: region \(region) is not this connection's. "
                       + "Regions belong to the connection that registered them; stop its owner instead "
                       + "(`mrlease list` shows its PID; a `mrlease register` releases its region on Ctrl-C or SIGTERM)")
            throw ExitCode(1)
        } catch {
            printError("mrlease deregister: \(error)")
            throw ExitCode(1)
        }
    }
}
