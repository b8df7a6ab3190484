import LinuxFile
import Logging
import MRLeaseEngine
import MRLeaseProtocol

extension Daemon {
    /// Writes the metrics file (Prometheus text 0.0.4, what node_exporter's textfile collector
    /// parses) and schedules the next write on the loop's timer heap. A failure is logged once
    /// per distinct cause (then again when it clears) and never stops the daemon.
    func writeMetricsFile(now: UInt64) {
        guard let metricsFile else { return }
        timers.schedule(.metricsFile, at: now + configuration.metricsIntervalMillis * 1_000_000)
        do {
            try metricsFile.replace(with: statistics().metricsText(.prometheus))
            if metricsFailure != nil {
                logger.notice("metrics file written again", metadata: ["path": "\(metricsFile.path)"])
                metricsFailure = nil
            }
        } catch {
            guard error != metricsFailure else { return }
            metricsFailure = error
            logger.error("\(error); mrleased keeps serving and retries every \(configuration.metricsIntervalMillis) ms", metadata: ["op": "\(error.op)", "errno": "\(error.errno.symbolicName)", "path": "\(error.path)"])
        }
    }

    /// At shutdown: the file goes with the daemon, so node_exporter stops exporting its gauges.
    func removeMetricsFile() {
        do { try metricsFile?.remove() } catch {
            logger.warning("\(error)", metadata: ["op": "\(error.op)", "errno": "\(error.errno.symbolicName)", "path": "\(error.path)"])
        }
    }
}
