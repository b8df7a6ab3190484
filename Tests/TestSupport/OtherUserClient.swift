import Foundation

/// A client running as another uid (`setpriv --reuid --regid --clear-groups`), for tests of
/// what the daemon lets one user do: the daemon sees its uid through SO_PEERCRED, and a file
/// it passes is one it opened itself, with its own permissions.
///
/// It is Python (the host and the guests have python3) so that nothing of the test process —
/// its uid, its fds — leaks into it. It sends each request (JSON, one packet), the `register`
/// ones with `file` opened `O_RDONLY` as that uid attached, writes every reply to `replies`
/// (one line each) as it arrives, then keeps the connection open `holdSeconds`.
public struct OtherUserClient {
    public var uid: UInt32
    public var gid: UInt32
    /// Supplementary groups; empty = none (`--clear-groups`).
    public var groups: [UInt32] = []

    public init(uid: UInt32 = 65534, gid: UInt32 = 65534, groups: [UInt32] = []) {
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    static let script = #"""
import json, os, socket, sys, time
path, requests, file, replies, hold = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(path)
out = open(replies, "w")
fd = os.open(file, os.O_RDONLY) if file else None
for request in requests:
    data = json.dumps(request, separators=(",", ":")).encode()
    if request.get("type") in ("register", "register-batch") and fd is not None:
        socket.send_fds(s, [data], [fd])
    else:
        s.send(data)
    reply = s.recv(65537)
    out.write((reply.decode() if reply else "EOF") + "\n")
    out.flush()
    if not reply:
        break
time.sleep(hold)
"""#

    /// Starts the client; `requests` are JSON objects. The replies land in `replies` (a path
    /// the test reads) while it runs.
    public func start(socket: String, requests: [String], file: String?, replies: String,
                      holdSeconds: Double = 0, in scratch: ScratchDirectory) throws -> Process {
        let script = scratch.path + "/other-user-client.py"
        if !FileManager.default.fileExists(atPath: script) {
            try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o644)
        }
        guard FileManager.default.createFile(atPath: replies, contents: nil) else { throw TestFailure("cannot create \(replies)") }
        chown(replies, uid, gid)
        let groupArguments = groups.isEmpty ? ["--clear-groups"] : ["--groups=" + groups.map(String.init).joined(separator: ",")]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = ["--reuid=\(uid)", "--regid=\(gid)"] + groupArguments
            + ["/usr/bin/python3", script, socket, "[" + requests.joined(separator: ",") + "]", file ?? "", replies, "\(holdSeconds)"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Runs the client to the end and returns its replies, one JSON text each.
    public func run(socket: String, requests: [String], file: String? = nil, in scratch: ScratchDirectory) throws -> [String] {
        let replies = scratch.path + "/replies-\(UUID().uuidString.prefix(8))"
        let process = try start(socket: socket, requests: requests, file: file, replies: replies, in: scratch)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestFailure("the client as uid \(uid) exited \(process.terminationStatus)")
        }
        return try Self.replies(replies)
    }

    public static func replies(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }
}
