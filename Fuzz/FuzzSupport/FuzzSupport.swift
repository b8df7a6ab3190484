import MRLeaseProtocol

/// A packet the daemon's codec made: within `maxMessageBytes`, and readable by a client.
/// Traps (the fuzzer's "crash") otherwise, saying which packet.
public func checkServerPacket(_ packet: [UInt8], _ what: @autoclosure () -> String) {
    _ = checkedServerMessage(packet, what())
}

/// `checkServerPacket`, returning what the packet says (for a harness that acts on replies).
@discardableResult
public func checkedServerMessage(_ packet: [UInt8], _ what: @autoclosure () -> String) -> ServerMessage {
    precondition(packet.count <= Codec.maxMessageBytes, "\(what()) of \(packet.count) bytes exceeds maxMessageBytes")
    guard let message = try? Codec.decodeServerMessage(packet) else {
        fatalError("\(what()) does not decode: \(String(decoding: packet.prefix(200), as: UTF8.self))")
    }
    return message
}

public typealias FuzzTarget = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: FuzzTarget) -> CInt

/// libFuzzer's driver on `target`. SwiftPM links an executable with `main` aliased to
/// `<Module>_main` (so that tests can link the module), so libFuzzer's own `main` is never
/// the entry: each fuzzer defines `<Module>_main` and hands over here.
public func runFuzzer(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ target: FuzzTarget) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, target)
}
