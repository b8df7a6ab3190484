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

    @Option(help: "Listening socket path.") var socket: String?
    @Option(help: "RDMA device name (default: the first).") var device: String?
    @Option(help: "Milliseconds owners get to quiesce after a lease break.") var quiesceMs: UInt64?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String?
    @Option(help: "rdma_cm listener(s) for remote peers: ADDR:PORT[,ADDR:PORT] (port 0: the kernel picks).") var listen: String?
    @Option(help: "Write metrics for node_exporter's textfile collector (Prometheus text format) to this .prom file.") var metricsFile: String?
    @Option(help: "Milliseconds between writes of the metrics file.") var metricsIntervalMs: UInt64?

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
            if let socket { try settings.set("socket", socket, source: "--socket") }
            if let device { try settings.set("device", device, source: "--device") }
            if let quiesceMs { try settings.set("quiesce-ms", "\(quiesceMs)", source: "--quiesce-ms") }
            if let logLevel { try settings.set("log-level", logLevel, source: "--log-level") }
            if let listen { try settings.set("listen", listen, source: "--listen") }
            if let metricsFile { try settings.set("metrics-file", metricsFile, source: "--metrics-file") }
            if let metricsIntervalMs { try settings.set("metrics-interval-ms", "\(metricsIntervalMs)", source: "--metrics-interval-ms") }
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
