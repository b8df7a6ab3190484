import CLinux
import Foundation
import LinuxFile
import SystemPackage
import TestSupport
import XCTest

final class UnixSocketTests: XCTestCase {
    /// The packet from `socket`, failing the test on end of stream or an empty queue.
    func message(_ socket: UnixSocket, maxSize: Int = 1024, maxFDs: Int = 4,
                 file: StaticString = #filePath, line: UInt = #line) throws -> UnixSocket.Message {
        let received = try socket.receive(maxSize: maxSize, maxFDs: maxFDs)
        guard case .message(let message) = received else {
            throw TestFailure("expected a message, got \(received)")
        }
        return message
    }

    func isCloseOnExec(_ fd: FileDescriptor) -> Bool {
        mrl_fcntl_noarg(fd.rawValue, F_GETFD) & FD_CLOEXEC != 0
    }

    func testDescriptorSentWithAPacketReadsTheSameFileAtTheReceiver() throws {
        let scratch = try Scratch()
        let path = try scratch.file("data", contents: Array("through the fd\n".utf8))
        let before = try openDescriptorCount()
        do {
            let (client, daemon) = try UnixSocket.pair()
            let file = try FileDescriptor.open(FilePath(path), .readOnly)
            try client.send(Array("register".utf8), fds: [file])
            try file.close()

            let received = try message(daemon)
            XCTAssertEqual(received.bytes, Array("register".utf8))
            XCTAssertFalse(received.truncated)
            XCTAssertFalse(received.fdsDropped)
            XCTAssertEqual(received.fds.count, 1)
            let fd = try XCTUnwrap(received.fds.first)
            XCTAssertTrue(isCloseOnExec(fd), "MSG_CMSG_CLOEXEC")
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = try buffer.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }
            XCTAssertEqual(String(decoding: buffer.prefix(count), as: UTF8.self), "through the fd\n")
            try fd.close()
        }
        XCTAssertEqual(try openDescriptorCount(), before, "sockets and passed fds all closed")
    }

    func testPeerCredentialsAreThisProcess() throws {
        let (client, daemon) = try UnixSocket.pair()
        XCTAssertEqual(try daemon.peerCredentials(),
                       UnixSocket.Credentials(pid: getpid(), uid: getuid(), gid: getgid()))
        XCTAssertEqual(try client.peerCredentials().pid, getpid())
    }

    func testOversizedPacketArrivesTruncatedAndTheNextPacketIsIntact() throws {
        let (client, daemon) = try UnixSocket.pair()
        try client.send([UInt8](repeating: 0x41, count: 100))
        try client.send(Array("next".utf8))

        let big = try message(daemon, maxSize: 10)
        XCTAssertTrue(big.truncated)
        XCTAssertEqual(big.bytes, [UInt8](repeating: 0x41, count: 10))
        let next = try message(daemon, maxSize: 10)
        XCTAssertFalse(next.truncated, "the rest of the big packet was discarded, not queued")
        XCTAssertEqual(next.bytes, Array("next".utf8))

        try client.send([1])
        XCTAssertEqual(try daemon.receive(maxSize: 0), .message(.init(bytes: [], truncated: true)),
                       "an empty read of a cut packet is not the end of the stream")
    }

    func testTooManyDescriptorsAreReportedAndAllClosed() throws {
        let before = try openDescriptorCount()
        do {
            let (client, daemon) = try UnixSocket.pair()
            let pipe = try FileDescriptor.pipe()
            // 2 fds with room for 1 is the case CMSG_SPACE rounding lets the kernel deliver in full.
            for (sent, allowed) in [(3, 1), (2, 1), (1, 0), (5, 4)] {
                try client.send(Array("fds".utf8), fds: Array(repeating: pipe.readEnd, count: sent))
                let received = try message(daemon, maxFDs: allowed)
                XCTAssertTrue(received.fdsDropped, "\(sent) fds, \(allowed) allowed")
                XCTAssertEqual(received.fds, [])
                XCTAssertEqual(received.bytes, Array("fds".utf8), "the bytes still arrive")
            }
            try client.send([1], fds: [pipe.readEnd, pipe.writeEnd])
            let exact = try message(daemon, maxFDs: 2)
            XCTAssertFalse(exact.fdsDropped)
            XCTAssertEqual(exact.fds.count, 2)
            for fd in exact.fds { try fd.close() }
            try pipe.readEnd.close()
            try pipe.writeEnd.close()
        }
        XCTAssertEqual(try openDescriptorCount(), before, "no received descriptor leaked")
    }

    func testListenConnectAcceptUnderATemporaryDirectory() throws {
        let scratch = try Scratch()
        let path = scratch.directory.appendingPathComponent("mrleased.sock").path
        let listener = try UnixSocket.listen(path: path, mode: 0o600)
        var info = stat()
        XCTAssertEqual(lstat(path, &info), 0)
        XCTAssertEqual(info.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(info.st_mode & 0o777, 0o600)

        let client = try UnixSocket.connect(path: path)
        let connection = try XCTUnwrap(try listener.accept())
        XCTAssertTrue(isCloseOnExec(connection.descriptor))
        XCTAssertEqual(try connection.peerCredentials().uid, getuid())
        try client.send(Array("hello".utf8))
        XCTAssertEqual(try message(connection).bytes, Array("hello".utf8))
        try connection.send(Array("welcome".utf8))
        XCTAssertEqual(try message(client).bytes, Array("welcome".utf8))
    }

    func testListenReplacesAStaleSocketButNeverALiveOneOrAnotherFile() throws {
        let scratch = try Scratch()
        let path = scratch.directory.appendingPathComponent("s").path
        try UnixSocket.listen(path: path).close()
        XCTAssertTrue(FileManager.default.fileExists(atPath: path), "close leaves the file")
        let live = try UnixSocket.listen(path: path)
        XCTAssertErrno(.addressInUse, try UnixSocket.listen(path: path))
        _ = try UnixSocket.connect(path: path)
        XCTAssertNotNil(try live.accept(), "the live listener still owns the path")

        let regular = try scratch.file("regular")
        XCTAssertErrno(.addressInUse, try UnixSocket.listen(path: regular))
        XCTAssertEqual(try String(contentsOfFile: regular, encoding: .utf8), "hello lease\n")
    }

    func testPeerCloseReadsAsEndOfStreamAndSendingGetsEPIPE() throws {
        let (client, daemon) = try UnixSocket.pair()
        try client.send([7])
        try client.close()
        try client.close()
        XCTAssertEqual(try message(daemon).bytes, [7], "queued packets survive the close")
        XCTAssertEqual(try daemon.receive(maxSize: 16), .endOfStream)
        // MSG_NOSIGNAL: without it SIGPIPE would end the test process here.
        XCTAssertErrno(.brokenPipe, try daemon.send([1]))
    }

    func testNonblockingAcceptAndReceiveReturnInsteadOfWaiting() throws {
        let scratch = try Scratch()
        let listener = try UnixSocket.listen(path: scratch.directory.appendingPathComponent("s").path)
        try listener.setNonBlocking(true)
        XCTAssertNil(try listener.accept())

        let (client, daemon) = try UnixSocket.pair()
        try daemon.setNonBlocking(true)
        XCTAssertEqual(try daemon.receive(maxSize: 16), .wouldBlock)
        try client.send([1, 2])
        XCTAssertEqual(try daemon.receive(maxSize: 16), .message(.init(bytes: [1, 2])))
        try daemon.setNonBlocking(false)
        try client.send([3])
        XCTAssertEqual(try daemon.receive(maxSize: 16), .message(.init(bytes: [3])))
    }

    func testAdoptingAcceptsOnlyASequentialPacketSocketAndMakesItCloseOnExec() throws {
        let pipe = try FileDescriptor.pipe()
        defer { try? pipe.readEnd.close(); try? pipe.writeEnd.close() }
        XCTAssertErrno(.notSocket, try UnixSocket(adopting: pipe.readEnd))

        var fds: [CInt] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds), 0)
        XCTAssertErrno(.protocolWrongTypeForSocket, try UnixSocket(adopting: FileDescriptor(rawValue: fds[0])))
        _ = close(fds[0]); _ = close(fds[1])

        // As systemd passes it: inheritable.
        XCTAssertEqual(socketpair(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue), 0, &fds), 0)
        let adopted = try UnixSocket(adopting: FileDescriptor(rawValue: fds[0]))
        let peer = try UnixSocket(adopting: FileDescriptor(rawValue: fds[1]))
        XCTAssertTrue(isCloseOnExec(adopted.descriptor))
        try peer.send([9])
        XCTAssertEqual(try message(adopted).bytes, [9])
    }

    func testPathLongerThanSockaddrIsRefused() throws {
        let path = "/tmp/" + String(repeating: "x", count: UnixSocket.maxPathLength)
        XCTAssertErrno(.fileNameTooLong, try UnixSocket.connect(path: path))
        XCTAssertErrno(.fileNameTooLong, try UnixSocket.listen(path: path))
    }

    func testCloseIsIdempotentAndReleasesTheDescriptor() throws {
        let before = try openDescriptorCount()
        let (a, b) = try UnixSocket.pair()
        XCTAssertEqual(try openDescriptorCount(), before + 2)
        try a.close()
        try a.close()
        try b.close()
        XCTAssertEqual(try openDescriptorCount(), before)
    }
}
