import LinuxFile
import MRLeaseProtocol
import SystemPackage

/// One region registered again by `reconnect()`: its id on the old connection, and the new
/// region (new id, keys and address, as a `restored` event gives them) or why it failed.
public struct Reregistration: Sendable, Equatable {
    public var previousRegion: UInt64
    public var outcome: Result<Registration, ClientError>

    public init(previousRegion: UInt64, outcome: Result<Registration, ClientError>) {
        self.previousRegion = previousRegion
        self.outcome = outcome
    }
}

extension MRLeaseClient {
    /// After the daemon's connection ended (`connectionEnd` set), connects to `socketPath`
    /// again — a restarted daemon, or the same socket unit — and registers each region this
    /// client still keeps an fd for again, through that fd (the same open file description:
    /// a fresh open of the path would be refused a write lease while the kept one is open).
    /// Each region gets a new id, keys and address; one whose registration fails is dropped
    /// (its fd closed when no other region uses it), with the error in its entry. Events,
    /// pending revocations and `daemon` start afresh.
    ///
    /// Throws `connect` when nothing accepts on the socket (yet): call it again later.
    public func reconnect() throws(ClientError) -> [Reregistration] {
        guard connectionEnd != nil else {
            throw .system(op: "reconnect: the connection to mrleased has not ended", .socketIsConnected)
        }
        let fresh: UnixSocket
        do { fresh = try UnixSocket.connect(path: socketPath) } catch { throw .connect(path: socketPath, error) }
        // The old socket's peer is gone; nothing to report when closing our end.
        try? socket.close()
        socket = fresh
        connectionEnd = nil
        shutdownAnnounced = false
        events = []
        automaticAcks = []
        pendingRevocations = []
        pendingFiles = [:]
        daemon = nil
        // The new connection gets what the old one asked for (its revocations per file).
        if let asked = helloAsked { _ = try hello(clientName: asked.clientName, revokingPerFile: asked.revokingPerFile) }
        let files = heldFiles, ranges = heldRanges
        heldFiles = [:]
        heldRanges = [:]
        var results: [Reregistration] = []
        for region in files.keys.sorted() {
            guard let fd = files[region], let range = ranges[region] else { continue }
            do throws(ClientError) {
                guard case .register(let made) = try callSendingFD(.register(range), fd: fd) else { throw unexpected(.register) }
                heldFiles[made.region] = fd
                heldRanges[made.region] = range
                results.append(Reregistration(previousRegion: region, outcome: .success(made)))
            } catch {
                results.append(Reregistration(previousRegion: region, outcome: .failure(error)))
            }
        }
        // Files none of whose regions came back: ours (a path we opened, or our duplicate).
        let kept = Set(heldFiles.values.map(\.rawValue))
        for raw in Set(files.values.map(\.rawValue)) where !kept.contains(raw) { try? FileDescriptor(rawValue: raw).close() }
        return results
    }
}
