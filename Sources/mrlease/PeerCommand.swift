import ArgumentParser
import Foundation
import LinuxFile
import MRLeaseGrant
import MRLeasePeer

/// `mrlease peer DESCRIPTOR write|read|verify|bench`: a remote peer of a grant, on top of
/// MRLeasePeer. Output is `key=value` lines a script can split.
struct PeerCommand: ParsableCommand {
    enum Action: String, ExpressibleByArgument, CaseIterable {
        case write, read, verify, bench
    }

    enum BenchOperation: String, ExpressibleByArgument, CaseIterable {
        case write, read
    }

    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "Reach a granted region over RDMA with a descriptor: write, read, verify, bench.",
        discussion: """
        Connects over rdma_cm to the descriptor's endpoint (from `mrlease register --grant`) and \
        prints `connected grant=… generation=… rkey=… length=… alignment=… access=…`.
        write: writes --length bytes of --pattern at --offset and persists (an RDMA READ after \
        the writes); with --loop, writes and persists again and again for --seconds (or until \
        SIGINT/SIGTERM), iteration K using pattern seed:S+K (or byte B+K), and prints after each \
        persist `persisted iteration=K … pattern=P`: the last such line is what the region holds.
        read: prints the bytes as hex, or writes them raw to --output.
        verify: reads and compares with --pattern; prints the first mismatch.
        bench: --op write|read of --size bytes for --seconds: half one request at a time \
        (latency: median_us, p99_us), half --depth requests in flight (bandwidth: MBps), from \
        and into buffers registered once (no copy; --copy: through the staging buffer instead).
        A revocation shows as a delay and a `reconnected generation=…` line, not an error.
        Exit status: 0 ok; 1 refused (bounds, access, alignment), rejected, or unreachable \
        (stderr says why); 2 usage; 3 verify found a mismatch.
        """
    )

    @Argument(help: "The grant descriptor (mrlg…).") var descriptor: String
    @Argument(help: "write, read, verify or bench.") var action: Action
    @Option(help: ArgumentHelp("Offset in the region (K, M, G suffixes).", valueName: "bytes")) var offset: String = "0"
    @Option(help: ArgumentHelp("Bytes to write, read or verify (default: to the region's end).", valueName: "bytes")) var length: String?
    @Option(help: ArgumentHelp("A byte (0xAB, 171) or seed:N (bytes depend on the seed and their offset).", valueName: "pattern"))
    var pattern: String = "seed:1"
    @Flag(help: "write: repeat write + persist until --seconds pass or SIGINT/SIGTERM.") var loop = false
    @Option(help: "write --loop and bench: how long to run.") var seconds: Double = 5
    @Option(help: "read: write the bytes raw to this file instead of printing hex.") var output: String?
    @Option(help: "bench: the operation.") var op: BenchOperation = .write
    @Option(help: ArgumentHelp("bench: bytes per request.", valueName: "bytes")) var size: String = "4096"
    @Option(help: "bench: requests in flight in the bandwidth half.") var depth: Int = 16
    @Flag(help: "bench: move the bytes through the staging buffer (one copy per transfer), as unregistered memory goes.") var copy = false
    @Option(help: ArgumentHelp("Local staging buffer, registered once per connection.", valueName: "bytes")) var staging: String = "1M"
    @Option(help: "Seconds to keep reconnecting after a revocation before giving up.") var reconnectTimeout: Double = 30

    func validate() throws {
        guard (try? GrantDescriptor(text: descriptor)) != nil else {
            throw ValidationError("not a grant descriptor: \(describeDescriptorError())")
        }
        guard RegisterCommand.bytes(offset) != nil else { throw ValidationError("--offset \(offset): not a byte count") }
        if let length, RegisterCommand.bytes(length) == nil { throw ValidationError("--length \(length): not a byte count") }
        guard PeerPattern(pattern) != nil else { throw ValidationError("--pattern \(pattern): use a byte (0xAB, 171) or seed:N") }
        guard let size = RegisterCommand.bytes(size), size > 0 else { throw ValidationError("--size \(size): not a byte count") }
        guard RegisterCommand.bytes(staging) != nil else { throw ValidationError("--staging \(staging): not a byte count") }
        if loop && action != .write { throw ValidationError("--loop goes with write") }
        if seconds <= 0 { throw ValidationError("--seconds must be positive") }
        if depth < 1 { throw ValidationError("--depth must be at least 1") }
    }

    private func describeDescriptorError() -> String {
        do { _ = try GrantDescriptor(text: descriptor); return "" } catch { return "\(error)" }
    }

    func run() throws {
        // Blocked before the peer exists; read between loop iterations, so a loop stops after
        // a persist, never between a write and its persist.
        let signals: SignalFD
        do { signals = try SignalFD(signals: [SIGINT, SIGTERM]) } catch {
            printError("mrlease peer: signalfd: \(error)")
            throw ExitCode(1)
        }
        let grant = try! GrantDescriptor(text: descriptor)  // validate() parsed it
        var options = PeerOptions()
        options.stagingBytes = Int(RegisterCommand.bytes(staging)!)
        options.workRequestBytes = min(options.workRequestBytes, options.stagingBytes)
        options.reconnectTimeout = reconnectTimeout
        options.queueDepth = max(depth, 1)
        do {
            let peer = try Peer(descriptor: grant, options: options)
            emit("connected grant=\(grant.grantID) endpoint=\(grant.endpoint) " + Self.terms(peer.terms)
                 + " persist=\(Peer.persistMethod.rawValue)")
            var session = PeerSession(peer: peer, signals: signals)
            switch action {
            case .write: try session.write(offset: offsetBytes, length: length(peer), pattern: PeerPattern(pattern)!, loop: loop, seconds: seconds)
            case .read: try session.read(offset: offsetBytes, length: length(peer), output: output)
            case .verify: try session.verify(offset: offsetBytes, length: length(peer), pattern: PeerPattern(pattern)!)
            case .bench: try session.bench(op: op, size: Int(RegisterCommand.bytes(size)!), depth: depth, seconds: seconds, copying: copy)
            }
            peer.close()
        } catch let error as PeerError {
            printError("mrlease peer \(action.rawValue): \(error)")
            throw ExitCode(1)
        }
    }

    private var offsetBytes: UInt64 { RegisterCommand.bytes(offset)! }

    private func length(_ peer: Peer) -> Int {
        if let length { return Int(RegisterCommand.bytes(length)!) }
        return Int(peer.terms.length - min(offsetBytes, peer.terms.length))
    }

    static func terms(_ terms: GrantTerms) -> String {
        "generation=\(terms.generation) rkey=0x\(String(terms.rkey, radix: 16)) length=\(terms.length) "
            + "alignment=\(terms.transferAlignment) access=\(terms.access.names)"
    }
}
