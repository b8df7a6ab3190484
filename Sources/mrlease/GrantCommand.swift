import ArgumentParser
import Foundation
import MRLeaseClient

/// `mrlease grant REGION`: a grant on a region held by a `mrlease register` process of this
/// user, made through that process (ControlSocket): grants belong to the daemon connection that
/// made the region, and this process has a connection of its own.
struct GrantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grant",
        abstract: "Grant remote peers access to a region held by a `mrlease register` process of this user.",
        discussion: """
        Grants belong to the daemon connection that made the region (docs/protocol.md), so this \
        command asks the `mrlease register` process holding REGION to make the grant on its own \
        connection, over that process's control socket ($XDG_RUNTIME_DIR/mrlease, else \
        ${TMPDIR:-/tmp}/mrlease-UID). It prints `descriptor REGION GRANT mrlg…`: the credential a \
        peer connects with (`mrlease peer DESCRIPTOR …`); give it only to the peer. The grant \
        lasts until `mrlease revoke-grant GRANT`, its expiry, or the end of the holder. A region \
        of a program using the client library directly can be granted only by that program.
        Exit status: 0 granted; 1 no holder of REGION, or refused (stderr says why); 2 usage.
        """
    )

    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "The region id, as `mrlease register` or `mrlease list` shows it.")
    var region: UInt64
    @Option(help: ArgumentHelp("What peers may do, a comma list of read, write, atomic (default: the region's access).", valueName: "access"))
    var access: String?
    @Option(help: ArgumentHelp("Peers connected at once (default 1).", valueName: "count"))
    var maxPeers: UInt64?
    @Option(help: ArgumentHelp("The grant ends after this many milliseconds.", valueName: "ms"))
    var expiresMs: UInt64?

    func validate() throws {
        if let access, RegisterCommand.accessSet(access) == nil { throw ValidationError("--access takes a comma list of read, write, atomic (got '\(access)')") }
    }

    func run() throws {
        let request = Request.grant(.init(region: region, access: access.flatMap(RegisterCommand.accessSet),
                                          expiresInMillis: expiresMs, maxPeers: maxPeers))
        guard let reply = ControlSocket.ask(request, daemonSocket: daemon.socketPath) else {
            printError("mrlease grant: no `mrlease register` process of this user holds region \(region) on \(daemon.socketPath). "
                       + "Grants belong to the connection that made the region: start the holder with "
                       + "`mrlease register … --grant`, or grant from the program that registered it")
            throw ExitCode(1)
        }
        switch reply.outcome {
        case .success(.grant(let made)):
            RegisterCommand.printGrant(made)
        case .success(let other):
            printError("mrlease grant: the holder answered \(other.type.rawValue), not grant")
            throw ExitCode(1)
        case .failure(let error):
            printError("mrlease grant: refused: \(error.code.rawValue): \(error.message)")
            throw ExitCode(1)
        }
    }
}

/// `mrlease revoke-grant GRANT`: ends a grant made by a `mrlease register` process of this user
/// (with --grant or through `mrlease grant`), through that process; the region stays.
struct RevokeGrantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke-grant",
        abstract: "End a grant held by a `mrlease register` process of this user; its peers are disconnected.",
        discussion: """
        Asks the `mrlease register` process whose connection made GRANT (with --grant, or through \
        `mrlease grant`) to revoke it: its peers are disconnected and its descriptor is refused \
        from then on, while the region stays registered. This is how one leaked descriptor is \
        withdrawn without dropping the region.
        Exit status: 0 revoked; 1 no holder of GRANT, or refused (stderr says why); 2 usage.
        """
    )

    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "The grant id, as `mrlease grant`, `mrlease register --grant` or `mrlease list` shows it.")
    var grant: UInt64

    func run() throws {
        guard let reply = ControlSocket.ask(.revokeGrant(grant: grant), daemonSocket: daemon.socketPath) else {
            printError("mrlease revoke-grant: no `mrlease register` process of this user holds grant \(grant) on \(daemon.socketPath) "
                       + "(a grant ends with the connection that made it: a program using the client library revokes its own)")
            throw ExitCode(1)
        }
        if case .failure(let error) = reply.outcome {
            printError("mrlease revoke-grant: refused: \(error.code.rawValue): \(error.message)")
            throw ExitCode(1)
        }
        emit("revoked grant \(grant)")
    }
}
