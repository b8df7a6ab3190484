/// Requests built from the input, valid enough to get past the codec: the numbers come from
/// short tables (the fuzzer's files' sizes and page boundaries, and the bounds around 2^53 and
/// 2^64 the protocol fuzzer tries on the codec alone), region and grant ids from the replies
/// seen so far (any client's: another client's id must be refused), and the raw packet is left
/// to libFuzzer's mutations.
enum FuzzRequests {
    static let offsets: [UInt64] = [0, 4096, 8192, 100, 1 << 19, (1 << 20) - 4096, 3 * 4096, 1 << 20, 1 << 63, .max]
    static let lengths: [UInt64] = [4096, 1, 100, 8192, 3 * 4096 + 100, 1 << 20, 0, 1 << 21, 1 << 63, .max]
    static let strategies: [String?] = [nil, "any", "odp", "pinned", "ram"]
    static let layoutPolicies: [String?] = [nil, "follow", "revoke", "pause"]
    /// nil: no expiry; 18 446 744 073 709 551 615 trapped a daemon with a listener (issue 17).
    static let expiries: [UInt64?] = [nil, 0, 1, 100, 3_600_000, 18_000_000_000_000, 1 << 53, .max]
    static let peerLimits: [UInt64?] = [nil, 1, 2, 4, 0, 1025]
    /// Ids nobody was given.
    static let strangers: [UInt64] = [0, 1, 2, 1 << 53, .max]

    /// `"access":[...]` from the low bits: read, write, atomic, and an unknown right.
    static func access(_ bits: UInt8) -> String {
        let names = ["read", "write", "atomic", "remote"].enumerated().filter { bits & (1 << $0.offset) != 0 }.map { "\"\($0.element)\"" }
        return "\"access\":[\(names.joined(separator: ","))]"
    }

    /// A region or grant id: mostly one that a reply named, sometimes one nobody was given.
    static func id(_ input: inout FuzzInput, known: [UInt64]) -> UInt64 {
        let byte = input.byte()
        return byte < 0xf8 && !known.isEmpty ? known[Int(byte) % known.count] : strangers[Int(byte) % strangers.count]
    }

    /// One range of `register` or `register-batch`, as JSON members.
    static func range(_ input: inout FuzzInput) -> String {
        let offset = input.pick(offsets), length = input.pick(lengths), rights = input.byte()
        var members = "\"offset\":\(offset),\"length\":\(length),\(access(rights & 0x0f))"
        if let strategy = input.pick(strategies) { members += ",\"strategy\":\"\(strategy)\"" }
        if rights & 0x80 != 0 {
            members += ",\"tag\":\"t\(rights & 0x70)\""
        } else if let policy = layoutPolicies[Int(rights >> 4) & 3] {
            // Untagged ranges use the tag's bits for the layout policy (the daemon's default,
            // follow, when absent), so inputs made before the field read as they did.
            members += ",\"layoutPolicy\":\"\(policy)\""
        }
        return members
    }

    /// `grant`: region, rights, expiry and peer limit from the input.
    static func grant(_ input: inout FuzzInput, regions: [UInt64]) -> String {
        var members = "\"region\":\(id(&input, known: regions))"
        let rights = input.byte()
        if rights & 0x10 == 0 { members += "," + access(rights & 0x0f) }
        if let expiry = input.pick(expiries) { members += ",\"expiresInMillis\":\(expiry)" }
        if let limit = input.pick(peerLimits) { members += ",\"maxPeers\":\(limit)" }
        return members
    }

    /// A request packet: the envelope and `members`.
    static func packet(_ type: String, id: UInt64, _ members: String) -> [UInt8] {
        Array("{\"v\":1,\"type\":\"\(type)\",\"id\":\(id)\(members.isEmpty ? "" : ",")\(members)}".utf8)
    }
}
