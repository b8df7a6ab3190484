import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol

/// `--codec`: what the protocol's JSON costs per message, with no socket and no daemon: the
/// daemon's side (decode a request, encode its reply) and the client's (encode the request,
/// decode the reply), for `stats`, `register` and a `register-batch` of `batchSize` ranges.
/// Reported per message and, for the batch, per range: the part of a registration through the
/// daemon that the codec alone costs.
struct CodecBenchmark {
    let batchSize: Int
    let iterations: Int

    struct Row {
        var name: String
        var bytes: Int
        var perMessageNS: Double
    }

    static let registration = Registration(region: 123_456, lkey: 0x1_2345, rkey: 0x1_2346, address: 0x7f3a_5c40_0000,
                                           length: 2 << 20, strategy: .odp,
                                           strategyReason: "rxe0 RC ODP covers WRITE, READ and the ODP registration succeeded",
                                           device: "rxe0", backing: .fsDAX)

    func run() throws(BenchError) -> [Row] {
        let range = Request.Register(offset: 1 << 30, length: 2 << 20, access: [.read, .write])
        let cases: [(String, Request, ReplyResult)] = [
            ("stats", .stats, .stats(Statistics(files: 3, regions: 200, bytesODP: 400 << 20, bytesPinned: 0, leasesHeld: 3,
                                                breaksHandled: 17, breakToUnlockMicros: .init(p50: 812, p99: 2100, max: 2300, count: 17),
                                                clients: 4))),
            ("register", .register(range), .register(Self.registration)),
            ("register-batch of \(batchSize)", .registerBatch(Array(repeating: range, count: batchSize)),
             .registerBatch(Array(repeating: Self.registration, count: batchSize))),
        ]
        var rows: [Row] = []
        for (name, request, result) in cases {
            let requestBytes = Codec.encode(request, id: 7)
            let replyBytes = Codec.encode(Reply(id: 7, result))
            rows.append(try time("\(name): client encodes the request", bytes: requestBytes.count) { _ = Codec.encode(request, id: 7) })
            rows.append(try time("\(name): daemon decodes the request", bytes: requestBytes.count) { () throws(ProtocolError) in _ = try Codec.decodeRequest(requestBytes) })
            rows.append(try time("\(name): daemon encodes the reply", bytes: replyBytes.count) { _ = Codec.encode(Reply(id: 7, result)) })
            rows.append(try time("\(name): client decodes the reply", bytes: replyBytes.count) { () throws(ProtocolError) in _ = try Codec.decodeServerMessage(replyBytes) })
        }
        return rows
    }

    /// The median of 9 runs of `iterations` calls, per call.
    func time(_ name: String, bytes: Int, _ body: () throws(ProtocolError) -> Void) throws(BenchError) -> Row {
        var runs: [Double] = []
        do {
            for _ in 0..<iterations / 10 { try body() }
            for _ in 0..<9 {
                let start = Engine.now()
                for _ in 0..<iterations { try body() }
                runs.append(Double(Engine.now() - start) / Double(iterations))
            }
        } catch {
            throw BenchError("\(name): \(error)")
        }
        return Row(name: name, bytes: bytes, perMessageNS: runs.sorted()[4])
    }
}
