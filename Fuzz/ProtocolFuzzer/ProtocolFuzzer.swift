import FuzzSupport
import MRLeaseProtocol

// libFuzzer's entry (built with -sanitize=fuzzer; libFuzzer supplies main). Each input is one
// packet, read both as the daemon reads a request and as a client reads a daemon's message.
// Beyond "never traps", three properties are checked, each a promise of docs/protocol.md:
// what decodes re-encodes to a packet that decodes to the same thing; every packet the codec
// encodes fits in maxMessageBytes; the error reply to any input fits and decodes.

@_cdecl("LLVMFuzzerTestOneInput")
public func protocolFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []

    do {
        let (id, request) = try Codec.decodeRequest(bytes)
        let packet = Codec.encode(request, id: id)
        guard let again = try? Codec.decodeRequest(packet) else { fatalError("re-encoded request does not decode: \(request)") }
        precondition(again.id == id && again.request == request, "request round trip changed \(request) into \(again.request)")
    } catch {
        let reply = Codec.encode(Codec.errorReply(to: bytes, error))
        checkServerPacket(reply, "error reply to a request")
    }

    if let message = try? Codec.decodeServerMessage(bytes) {
        let packet = switch message {
        case .reply(let reply): Codec.encode(reply)
        case .event(let event): Codec.encode(event)
        }
        checkServerPacket(packet, "re-encoded server message")
        // A packet near the limit may be cut to fit when re-encoded (escapes differ); only
        // one that fits as it is must come back the same.
        if packet.count < Codec.maxMessageBytes - 1024 {
            precondition((try? Codec.decodeServerMessage(packet)) == message, "server message round trip changed \(message)")
        }
    }
    return 0
}


@_cdecl("ProtocolFuzzer_main")
public func protocolFuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, protocolFuzzerTestOneInput)
}
