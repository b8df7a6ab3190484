import Foundation
import Logging

/// One event per line, `level message key=value…`, for journald (which stamps time and unit
/// itself). Chosen when stderr is the journal: `JournalStream.isConnected`, which checks that
/// `$JOURNAL_STREAM` names stderr's own device and inode, not merely that it is set.
public struct PlainLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let fields = merged.sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
        FileHandle.standardError.write(Data("\(event.level) \(event.message)\(fields)\n".utf8))
    }
}
