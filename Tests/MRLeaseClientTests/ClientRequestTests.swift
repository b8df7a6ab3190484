import Foundation
import LinuxFile
import MRLeaseClient
import SystemPackage
import TestSupport
import XCTest

/// The client library against the real `mrleased` on a host without an RDMA device: every
/// request and every refusal a registration can meet before the device is asked.
final class ClientRequestTests: XCTestCase {
    var daemon: RunningDaemon!
    var client: MRLeaseClient!
    var scratch: ScratchDirectory!

    override func setUpWithError() throws {
        daemon = try RunningDaemon()
        client = try MRLeaseClient.connect(path: daemon.socketPath)
        scratch = try ScratchDirectory()
    }

    override func tearDown() {
        client?.close()
        client = nil
        daemon = nil
    }

    /// The file opened as asked, closed when the test ends.
    func open(_ path: String, _ mode: FileDescriptor.AccessMode, _ options: FileDescriptor.OpenOptions = []) throws -> FileDescriptor {
        let fd = try FileDescriptor.open(path, mode, options: options.union(.closeOnExec))
        addTeardownBlock { try? fd.close() }
        return fd
    }

    func testHelloOnAHostWithoutDevicesOffersNoStrategies() throws {
        try Facility.requireNoRDMADevice()
        let hello = try client.hello(clientName: "client-tests")
        XCTAssertEqual(hello.version, Codec.version)
        XCTAssertEqual(hello.daemon, "mrleased \(Release.version)", "hello names the release --version prints")
        XCTAssertEqual(hello.devices, [])
        XCTAssertEqual(hello.strategies, [])
        XCTAssertEqual(hello.limits.maxMessageBytes, UInt64(Codec.maxMessageBytes))
        XCTAssertEqual(client.daemon, hello)
    }

    func testStatsOfAnIdleDaemonCountOnlyThisClient() throws {
        let stats = try client.stats()
        XCTAssertEqual(stats.clients, 1)
        XCTAssertEqual(stats.regions, 0)
        XCTAssertEqual(stats.files, 0)
        XCTAssertEqual(stats.leasesHeld, 0)
    }

    func testListOfANewConnectionIsEmpty() throws {
        XCTAssertEqual(try client.list(), [])
        XCTAssertEqual(try client.list(allConnections: true), [])
    }

    func testRegisteringARegularFileWithoutADeviceIsStrategyUnavailableWithENODEV() throws {
        try Facility.requireNoRDMADevice()
        let path = try scratch.file("data", size: 8192)
        let error = assertRefused(.strategyUnavailable) {
            _ = try client.register(fd: try open(path, .readWrite), offset: 0, length: 8192, access: [.read, .write])
        }
        XCTAssertEqual(error?.errnoName, "ENODEV")
        XCTAssertEqual(error?.errnoValue, ENODEV)
        XCTAssertTrue(error?.message.contains("no RDMA device") == true, "\(String(describing: error))")
    }

    func testRegisterByPathOpensTheFileAndReportsTheDaemonsRefusal() throws {
        try Facility.requireNoRDMADevice()
        let path = try scratch.file("data", size: 4096)
        _ = assertRefused(.strategyUnavailable) { _ = try client.register(path: path, offset: 0, length: 4096, access: [.read]) }
        XCTAssertNil(client.file(region: 1), "a refused registration keeps no fd")
    }

    func testRegisterByAMissingPathFailsAtOpenNamingThePathAndENOENT() throws {
        do {
            _ = try client.register(path: scratch.path + "/missing", offset: 0, length: 4096, access: [.read, .write])
            XCTFail("registered a missing file")
        } catch {
            XCTAssertEqual(error.errno, .noSuchFileOrDirectory)
            XCTAssertTrue("\(error)".contains("open \(scratch.path)/missing O_RDWR: ENOENT"), "\(error)")
        }
    }

    func testDirectoryFIFOAndProcfsFdsAreNotRegularFiles() throws {
        let fifo = scratch.path + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let fds = [
            ("directory", try open(scratch.path, .readOnly, .directory)),
            // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
            ("fifo", try open(fifo, .readOnly, .nonBlocking)),
            ("proc", try open("/proc/self/status", .readOnly)),
        ]
        for (what, fd) in fds {
            let error = assertRefused(.notRegularFile) {
                _ = try client.register(fd: fd, offset: 0, length: 4096, access: [.read])
            }
            XCTAssertTrue(error?.message.contains(what) == true, "\(what): \(String(describing: error))")
        }
    }

    func testReadOnlyFdAskingForWriteOrAtomicIsAccessDenied() throws {
        let fd = try open(try scratch.file("data", size: 8192), .readOnly)
        for access: Set<Access> in [[.write], [.read, .atomic]] {
            let error = assertRefused(.accessDenied) { _ = try client.register(fd: fd, offset: 0, length: 4096, access: access) }
            XCTAssertTrue(error?.message.contains("O_RDWR") == true, "\(String(describing: error))")
        }
    }

    func testWriteOnlyAndPathFdsAreAccessDeniedEvenForRead() throws {
        let path = try scratch.file("data", size: 8192)
        let writeOnly = try open(path, .writeOnly)
        let error = assertRefused(.accessDenied) { _ = try client.register(fd: writeOnly, offset: 0, length: 4096, access: [.read]) }
        XCTAssertTrue(error?.message.contains("O_WRONLY") == true, "\(String(describing: error))")
        let raw = Glibc.open(path, O_RDONLY | O_CLOEXEC | 0o10000000)  // O_PATH (x86-64, arm64)
        XCTAssertGreaterThanOrEqual(raw, 0)
        let pathFD = FileDescriptor(rawValue: raw)
        defer { try? pathFD.close() }
        let pathError = assertRefused(.accessDenied) { _ = try client.register(fd: pathFD, offset: 0, length: 4096, access: [.read]) }
        XCTAssertTrue(pathError?.message.contains("O_PATH") == true, "\(String(describing: pathError))")
    }

    func testOffsetOffThePageIsBadAlignment() throws {
        let fd = try open(try scratch.file("data", size: 16384), .readWrite)
        let error = assertRefused(.badAlignment) { _ = try client.register(fd: fd, offset: 512, length: 4096, access: [.read]) }
        XCTAssertTrue(error?.message.contains("offset 512") == true, "\(String(describing: error))")
    }

    func testRangeBeyondTheFilesEndIsRangeOutOfFile() throws {
        let fd = try open(try scratch.file("data", size: 8192), .readWrite)
        for (offset, length): (UInt64, UInt64) in [(0, 8193), (8192, 1), (4096, 8192)] {
            let error = assertRefused(.rangeOutOfFile) { _ = try client.register(fd: fd, offset: offset, length: length, access: [.read]) }
            XCTAssertTrue(error?.message.contains("size 8192") == true, "\(String(describing: error))")
        }
    }

    func testRegisterBatchChecksEveryRangeFirstAndNamesTheBadOne() throws {
        XCTAssertEqual(try client.hello().limits.maxBatchRanges, UInt64(Codec.maxBatchRanges))
        let readWrite = try open(try scratch.file("data", size: 16384), .readWrite)
        let good = Request.Register(offset: 0, length: 4096, access: [.read, .write])
        let cases: [(Request.Register, ErrorCode, String)] = [
            (.init(offset: 8192, length: 16384, access: [.read]), .rangeOutOfFile, "size 16384"),
            (.init(offset: 100, length: 4096, access: [.read]), .badAlignment, "offset 100"),
        ]
        for (bad, code, words) in cases {
            let error = assertRefused(code) { _ = try client.registerBatch(fd: readWrite, ranges: [good, good, bad, good]) }
            XCTAssertEqual(error?.index, 2, "\(String(describing: error))")
            XCTAssertTrue(error?.message.contains(words) == true, "\(String(describing: error))")
        }
        let readOnly = try open(scratch.path + "/data", .readOnly)
        let denied = assertRefused(.accessDenied) {
            _ = try client.registerBatch(fd: readOnly, ranges: [.init(offset: 0, length: 4096, access: [.read]), good])
        }
        XCTAssertEqual(denied?.index, 1)
        // Not about one range: no index.
        let directory = try open(scratch.path, .readOnly, .directory)
        XCTAssertNil(assertRefused(.notRegularFile) { _ = try client.registerBatch(fd: directory, ranges: [good]) }?.index)
        XCTAssertEqual(try client.stats().regions, 0)
    }

    func testRegisterBatchWithoutADeviceIsStrategyUnavailableAtTheFirstRange() throws {
        try Facility.requireNoRDMADevice()
        let fd = try open(try scratch.file("data", size: 8192), .readWrite)
        let error = assertRefused(.strategyUnavailable) {
            _ = try client.registerBatch(fd: fd, ranges: [.init(offset: 0, length: 4096, access: [.read]),
                                                          .init(offset: 4096, length: 4096, access: [.read])])
        }
        XCTAssertEqual(error?.index, 0)
        XCTAssertEqual(error?.errnoName, "ENODEV")
    }

    func testDeregisterAckAndVerifyOfARegionThisConnectionDoesNotOwnAreUnknownRegion() throws {
        _ = assertRefused(.unknownRegion) { try client.deregister(region: 5) }
        _ = assertRefused(.unknownRegion) { try client.ack(region: 5) }
        _ = assertRefused(.unknownRegion) { _ = try client.verify(region: 5) }
        XCTAssertEqual(try client.stats().clients, 1, "refusals leave the connection usable")
    }

    func testAcknowledgeRevocationsWithNothingPendingAcknowledgesNothing() throws {
        XCTAssertEqual(try client.acknowledgeRevocations(), [])
        XCTAssertNil(try client.nextEvent(timeout: .milliseconds(20)))
    }
}

/// `stats`' `requestMicros`: the daemon's own time per request type.
final class RequestTimeTests: XCTestCase {
    func testStatsReportsTheDaemonsTimePerRequestTypeCountingEveryAnsweredRequest() throws {
        let daemon = try RunningDaemon()
        let client = try MRLeaseClient.connect(path: daemon.socketPath)
        defer { client.close() }
        XCTAssertNil(try client.stats().requestMicros[.hello], "no hello yet")
        _ = try client.hello()
        for _ in 0..<3 { _ = try client.list() }
        _ = try? client.deregister(region: 77)   // refused: refusals are timed too
        let stats = try client.stats()
        XCTAssertEqual(stats.requestMicros[.hello]?.count, 1)
        XCTAssertEqual(stats.requestMicros[.list]?.count, 3)
        XCTAssertEqual(stats.requestMicros[.deregister]?.count, 1)
        XCTAssertEqual(stats.requestMicros[.stats]?.count, 1, "the first stats; this one is counted after its reply")
        XCTAssertNil(stats.requestMicros[.register])
        for (type, latency) in stats.requestMicros {
            XCTAssertLessThanOrEqual(latency.p50, latency.p99, "\(type)")
            XCTAssertLessThanOrEqual(latency.p99, max(latency.max, 1), "\(type)")
        }
    }
}
