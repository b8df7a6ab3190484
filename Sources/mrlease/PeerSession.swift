import ArgumentParser
import Foundation
import LinuxFile
import MRLeasePeer

/// What `mrlease peer` does once connected: one method per action, printing `key=value` lines.
struct PeerSession {
    let peer: Peer
    let signals: SignalFD
    private var reportedReconnects = 0

    init(peer: Peer, signals: SignalFD) {
        self.peer = peer
        self.signals = signals
    }

    /// Prints a line for each reconnect since the last call.
    private mutating func reportReconnects() {
        let statistics = peer.statistics
        guard statistics.reconnects > reportedReconnects else { return }
        reportedReconnects = statistics.reconnects
        var line = "reconnected reconnects=\(statistics.reconnects) " + PeerCommand.terms(peer.terms)
        if let broke = statistics.lastBreak, let back = statistics.firstSuccessAfterReconnect, back >= broke {
            line += " waited_ms=\(Int(((back - broke) * 1000).rounded()))"
        }
        if let cause = statistics.lastBreakCause { line += " cause=\"\(cause)\"" }
        emit(line)
    }

    private func interrupted() -> Bool {
        do { return !(try signals.read()).isEmpty } catch {
            printError("mrlease peer: reading the signalfd: \(error); stopping")
            return true
        }
    }

    /// The pattern of loop iteration `k`.
    static func pattern(_ base: PeerPattern, iteration: Int) -> PeerPattern {
        switch base {
        case .byte(let value): .byte(value &+ UInt8(truncatingIfNeeded: iteration))
        case .seeded(let seed): .seeded(seed &+ UInt64(iteration))
        }
    }

    mutating func write(offset: UInt64, length: Int, pattern: PeerPattern, loop: Bool, seconds: Double) throws(PeerError) {
        let started = MonotonicClock.now()
        var iteration = 0
        // persist is an RDMA READ: a write-only grant cannot have it, and says so on every line.
        let canPersist = peer.terms.access.contains(.read)
        repeat {
            let current = loop ? Self.pattern(pattern, iteration: iteration) : pattern
            try peer.write(current.bytes(at: offset, count: length), at: offset)
            if canPersist { try peer.persist() }
            reportReconnects()
            let what = loop ? (canPersist ? "persisted" : "written") + " iteration=\(iteration) " : "wrote "
            emit(what + "offset=\(offset) length=\(length) pattern=\(current) generation=\(peer.terms.generation)"
                 + (canPersist ? "" : " persist=unavailable(write-only grant: persist is a READ)"))
            iteration += 1
        } while loop && MonotonicClock.now() - started < seconds && !interrupted()
    }

    mutating func read(offset: UInt64, length: Int, output: String?) throws(PeerError) {
        let bytes = try peer.read(count: length, at: offset)
        reportReconnects()
        if let output {
            guard FileManager.default.createFile(atPath: output, contents: Data(bytes)) else {
                printError("mrlease peer read: cannot write \(output) (\(String(cString: strerror(errno)))); choose a writable path")
                return
            }
            emit("read offset=\(offset) length=\(length) output=\(output) generation=\(peer.terms.generation)")
            return
        }
        for start in stride(from: 0, to: bytes.count, by: 16) {
            let line = bytes[start..<min(start + 16, bytes.count)].map { String(format: "%02x", $0) }.joined(separator: " ")
            emit(String(format: "%08llx: ", offset + UInt64(start)) + line)
        }
    }

    mutating func verify(offset: UInt64, length: Int, pattern: PeerPattern) throws {
        let bytes = try peer.read(count: length, at: offset)
        reportReconnects()
        for (index, byte) in bytes.enumerated() where byte != pattern.byte(at: offset + UInt64(index)) {
            let at = offset + UInt64(index)
            emit("mismatch offset=\(at) expected=0x\(String(pattern.byte(at: at), radix: 16)) got=0x\(String(byte, radix: 16)) pattern=\(pattern)")
            throw ExitCode(3)
        }
        emit("verified offset=\(offset) length=\(length) pattern=\(pattern) generation=\(peer.terms.generation)")
    }

    mutating func bench(op: PeerCommand.BenchOperation, size: Int, depth: Int, seconds: Double, copying: Bool) throws(PeerError) {
        let regionLength = Int(peer.terms.length)
        let slots = max(regionLength / size, 1)
        // Latency: one request at a time, round the region, from and into one buffer (what an
        // application's hot path does: no allocation per request), registered with the peer
        // unless `copying`.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 0xA5)
        defer { buffer.deallocate() }
        let registered = copying ? nil : try peer.register(buffer)
        defer { if let registered { releaseQuietly(registered) } }
        var latencies: [Double] = []
        var slot = 0
        var phaseEnd = MonotonicClock.now() + seconds / 2
        while MonotonicClock.now() < phaseEnd {
            let at = UInt64((slot % slots) * size)
            let start = MonotonicClock.now()
            switch (op, registered) {
            case (.write, let registered?): try peer.write(from: registered, at: at)
            case (.read, let registered?): try peer.read(into: registered, at: at)
            case (.write, nil): try peer.write(from: UnsafeRawBufferPointer(buffer), at: at)
            case (.read, nil): try peer.read(into: buffer, at: at)
            }
            latencies.append(MonotonicClock.now() - start)
            slot += 1
        }
        // Bandwidth: `depth` requests of `size` in flight. Through the staging buffer one call
        // moves what the staging buffer holds (at most depth × size) and waits for it all; from
        // a registered buffer one call moves the whole region, `depth` requests always in flight.
        let whole = (regionLength / size) * size
        let window = copying ? min(depth * size, whole, peer.options.stagingBytes / size * size) : min(whole, 64 << 20)
        let windows = max(regionLength / max(window, 1), 1)
        let big = UnsafeMutableRawBufferPointer.allocate(byteCount: max(window, 1), alignment: 4096)
        big.initializeMemory(as: UInt8.self, repeating: 0x5A)
        defer { big.deallocate() }
        let bigRegistered = copying ? nil : try peer.register(big)
        defer { if let bigRegistered { releaseQuietly(bigRegistered) } }
        var moved = 0
        let bandwidthStart = MonotonicClock.now()
        phaseEnd = bandwidthStart + seconds / 2
        var round = 0
        while MonotonicClock.now() < phaseEnd {
            let at = UInt64((round % windows) * window)
            switch (op, bigRegistered) {
            case (.write, let registered?): try peer.write(from: registered, count: window, at: at, workRequestBytes: size)
            case (.read, let registered?): try peer.read(into: registered, count: window, at: at, workRequestBytes: size)
            case (.write, nil): try peer.write(from: UnsafeRawBufferPointer(rebasing: big[0..<window]), at: at, workRequestBytes: size)
            case (.read, nil): try peer.read(into: UnsafeMutableRawBufferPointer(rebasing: big[0..<window]), at: at, workRequestBytes: size)
            }
            moved += window
            round += 1
        }
        let elapsed = MonotonicClock.now() - bandwidthStart
        reportReconnects()
        latencies.sort()
        let median = latencies.isEmpty ? 0 : latencies[latencies.count / 2]
        let p99 = latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, latencies.count * 99 / 100)]
        emit("bench op=\(op.rawValue) size=\(size) depth=\(depth) ops=\(latencies.count) median_us=\(Self.fixed(median * 1e6)) "
             + "p99_us=\(Self.fixed(p99 * 1e6)) bandwidth_MBps=\(Self.fixed(Double(moved) / elapsed / 1e6)) "
             + "generation=\(peer.terms.generation) reconnects=\(peer.statistics.reconnects) path=\(copying ? "staging" : "registered")")
    }

    /// Releases a bench buffer on the way out; a failure (the peer already closed or its
    /// connection gone) leaves nothing registered that outlives the peer.
    private func releaseQuietly(_ buffer: PeerBuffer) {
        do throws(PeerError) { try peer.release(buffer) } catch { printError("mrlease peer bench: releasing a buffer: \(error)") }
    }

    static func fixed(_ value: Double) -> String { String(format: "%.1f", value) }
}
