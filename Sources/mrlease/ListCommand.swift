import ArgumentParser
import MRLeaseClient

/// `mrlease list`: the regions mrleased holds for this user's connections.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the regions mrleased holds for your connections (every connection's, as root).",
        discussion: """
        Regions belong to the connection that registered them (an application, or a running \
        `mrlease register`); PID names that process. Exit status: 0 ok; 1 the daemon is not \
        reachable or refused.
        """
    )

    @OptionGroup var daemon: DaemonOptions
    @Flag(help: "Print one JSON object: {\"regions\": [...]} with the protocol's region objects.")
    var json = false

    func run() throws {
        let (client, _) = try daemon.connect("list")
        let regions = try daemonCall("list") { () throws(ClientError) in try client.list(allConnections: true) }
        if json {
            return emit(WireJSON.line(WireJSON.object(.list(RegionList(regions: regions)))))
        }
        guard !regions.isEmpty else { return emit("no regions") }
        emit(Format.table(
            ["REGION", "PID", "FILE", "OFFSET", "LENGTH", "ACCESS", "STRATEGY", "LAYOUT", "STATE", "RKEY", "GRANTS", "TAG"],
            regions.map { r in
                ["\(r.region)", r.pid.map { "\($0)" } ?? "-", r.file, "\(r.offset)", "\(r.length)", Format.access(r.access),
                 r.strategy.rawValue, r.layoutPolicy?.rawValue ?? "-", r.state.rawValue, Format.hex(r.rkey), Self.grants(r.grants), r.tag ?? ""]
            }))
    }

    /// "7:2/4 9:0/1": each grant's id, its connected peers and its maximum; "-" without any.
    static func grants(_ grants: [RegionList.Grant]?) -> String {
        guard let grants, !grants.isEmpty else { return "-" }
        return grants.map { "\($0.grant):\($0.peers.count)/\($0.maxPeers)" }.joined(separator: " ")
    }
}
