import ArgumentParser
import Foundation
import MRLeaseClient

/// The options every subcommand that talks to mrleased takes.
struct DaemonOptions: ParsableArguments {
    @Option(help: ArgumentHelp("mrleased's socket (default: $MRLEASED_SOCKET, else /run/mrleased/mrleased.sock).", valueName: "path"))
    var socket: String?

    var socketPath: String { socket ?? MRLeaseClient.configuredSocketPath }

    /// Connects and says hello; on failure reports it and exits 1.
    func connect(_ command: String, acknowledgingRevocations: Bool = false) throws -> (MRLeaseClient, HelloResult) {
        try daemonCall(command) { () throws(ClientError) in
            let client = try MRLeaseClient.connect(path: socketPath, acknowledgingRevocations: acknowledgingRevocations)
            return (client, try client.hello(clientName: "mrlease \(command)"))
        }
    }
}

/// Runs `body`; a `ClientError` is printed to stderr as "mrlease COMMAND: …" and becomes exit 1.
func daemonCall<T>(_ command: String, _ body: () throws(ClientError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        printError("mrlease \(command): \(error)")
        throw ExitCode(1)
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Prints one line and flushes, so a pipe reader sees each line as it happens.
func emit(_ line: String) {
    print(line)
    fflush(nil)  // all streams: `stdout` is not concurrency-safe to name in Swift 6
}
