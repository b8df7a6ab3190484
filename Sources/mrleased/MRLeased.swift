import ArgumentParser
import Foundation
import Logging
import MRLeaseDaemon

/// `mrleased`: wires configuration, logging and the daemon together; the daemon does the rest.
@main
struct MRLeased: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mrleased",
        abstract: "Serve RDMA memory regions over files, guarded by file leases.",
        discussion: """
        Settings come from the defaults, then the config file, then MRLEASED_* environment \
        variables, then these flags. Under systemd it speaks sd_notify (Type=notify, watchdog) \
        and accepts a socket-activated listener (LISTEN_FDS). When stderr is the journal \
        ($JOURNAL_STREAM names stderr's device and inode) log lines carry no timestamp.
        """,
        version: Daemon.release   // Release.version (MRLeaseProtocol), as mrlease and mrleased-bench
    )

    @Option(help: "Config file (key = value lines; see Config/mrleased.conf).")
    var config: String = "/etc/mrleased/mrleased.conf"

    // Each flag's help is its row's in DaemonConfiguration.settings (the one table of keys).
    @Option(help: ArgumentHelp(DaemonConfiguration.flagHelp("socket"))) var socket: String?
    @Option(help: ArgumentHelp(DaemonConfiguration.flagHelp("device"))) var device: String?
    @Option(help: ArgumentHelp(DaemonConfiguration.flagHelp("quiesce-ms"))) var quiesceMs: String?
    @Option(help: ArgumentHelp(DaemonConfiguration.flagHelp("log-level"))) var logLevel: String?
    @Option(help: ArgumentHelp(DaemonConfiguration.flagHelp("listen"))) var listen: String?
    @Option(help: ArgumentHelp(DaemonConfiguration.flagHelp("metrics-file"))) var metricsFile: String?
    @Option(help: ArgumentHelp(DaemonConfiguration.flagHelp("metrics-interval-ms"))) var metricsIntervalMs: String?
    @Option(help: ArgumentHelp(DaemonConfiguration.flagHelp("layout-policy"))) var layoutPolicy: String?

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        var settings = DaemonConfiguration()
        do {
            if let handle = FileHandle(forReadingAtPath: config) {
                let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
                try settings.apply(file: text, name: config)
            } else if config != "/etc/mrleased/mrleased.conf" {
                // Only the default file may be missing: a named one that cannot be read is a mistake.
                throw DaemonConfiguration.Problem(description: "\(config): cannot read the config file")
            }
            try settings.apply(environment: environment)
            // Flags last, each read by its key's row like the file's and the environment's values.
            let flags: [(String, String?)] = [("socket", socket), ("device", device), ("quiesce-ms", quiesceMs), ("log-level", logLevel),
                                              ("listen", listen), ("metrics-file", metricsFile), ("metrics-interval-ms", metricsIntervalMs),
                                              ("layout-policy", layoutPolicy)]
            for case let (key, value?) in flags { try settings.set(key, value, source: "--" + key) }
        } catch {
            throw ValidationError("\(error)")
        }
        let level = Logger.Level(rawValue: settings.logLevel) ?? .info
        // $JOURNAL_STREAM alone is not enough: it is inherited by anything started from a service.
        let journald = JournalStream.isConnected(environment: environment)
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = journald ? PlainLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let daemon = try Daemon(configuration: settings, environment: environment, logger: Logger(label: "mrleased"))
        try daemon.run()
    }
}
