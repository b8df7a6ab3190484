// swift-tools-version: 6.0
import PackageDescription

// Modules are split by what they depend on (the swift-nio way):
// - CRDMA / CLinux: C headers only (libibverbs + librdmacm; Linux uapi shims).
// - LinuxFile: leases, FIEMAP, statx/DAX, mmap, inotify, signalfd, SEQPACKET sockets. No verbs.
// - Verbs: Swift owners of verbs resources (LinuxFile only for errno names).
// - MRLeasePolicy: the pure rules (registration plan, strategy, file lifecycle, timers). No
//   verbs and no syscalls of its own: it builds and is tested without libibverbs.
// - MRLeaseProtocol: the wire protocol's messages and codec (docs/protocol.md), the release and
//   the default socket path. Pure Swift.
// - MRLeaseGrant: the byte formats of remote access (descriptor, rdma_cm private data), shared
//   by the daemon, MRLeasePeer and C peers. Pure; only CLinux (for getrandom).
// - MRLeaseEngine: registration, revocation and restoration on real fds and verbs. No sockets.
// - MRLeaseDaemon: the service (epoll loop, sessions, requests, grants and their peers' RC QPs,
//   systemd integration); `mrleased` is its main.
// - MRLeaseClient: what applications link to talk to mrleased. No verbs.
// - MRLeasePeer: a remote peer of a grant (rdma_cm, one-sided verbs, reconnects).
// - DaemonLauncher: starts mrleased and waits until it is ready (tests and the benchmark).
// - mrlease: the CLI; mrleased: the daemon; mrleased-bench: the benchmarks.
let package = Package(
    name: "mrleased",
    products: [
        .library(name: "LinuxFile", targets: ["LinuxFile"]),
        .library(name: "Verbs", targets: ["Verbs"]),
        .library(name: "MRLeasePolicy", targets: ["MRLeasePolicy"]),
        .library(name: "MRLeaseEngine", targets: ["MRLeaseEngine"]),
        .library(name: "MRLeaseProtocol", targets: ["MRLeaseProtocol"]),
        .library(name: "MRLeaseClient", targets: ["MRLeaseClient"]),
        .library(name: "MRLeaseGrant", targets: ["MRLeaseGrant"]),
        .library(name: "MRLeasePeer", targets: ["MRLeasePeer"]),
        .executable(name: "mrlease", targets: ["mrlease"]),
        .executable(name: "mrleased", targets: ["mrleased"]),
        .executable(name: "mrleased-bench", targets: ["mrleased-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CRDMA",
            pkgConfig: "libibverbs",
            providers: [.apt(["libibverbs-dev", "librdmacm-dev"])]
        ),
        .target(name: "CLinux"),
        .target(
            name: "LinuxFile",
            dependencies: [
                "CLinux",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .target(
            name: "Verbs",
            dependencies: [
                "CRDMA", "LinuxFile",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .target(
            name: "MRLeasePolicy",
            dependencies: [
                "LinuxFile",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .target(
            name: "MRLeaseEngine",
            dependencies: [
                "MRLeasePolicy", "LinuxFile", "Verbs", "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "mrlease",
            dependencies: [
                "MRLeaseEngine", "MRLeasePolicy", "MRLeaseClient", "LinuxFile", "Verbs", "MRLeasePeer", "MRLeaseGrant",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The revocation and registration benchmark (Scripts/bench-revoke); not a test.
        .executableTarget(
            name: "mrleased-bench",
            dependencies: [
                "MRLeaseEngine", "MRLeasePolicy", "MRLeaseProtocol", "MRLeaseClient", "MRLeasePeer", "MRLeaseGrant",
                "LinuxFile", "Verbs", "DaemonLauncher", "CLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // Only to quiet the engine's per-break info log, which would otherwise be timed.
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The service: epoll loop, sessions, requests, systemd integration. No main.
        .target(
            name: "MRLeaseDaemon",
            dependencies: [
                "MRLeaseEngine", "MRLeasePolicy", "MRLeaseProtocol", "MRLeaseGrant", "CLinux", "LinuxFile", "Verbs",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "mrleased",
            dependencies: [
                "MRLeaseDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The wire protocol's messages and codec: pure Swift, so clients need no libibverbs.
        .target(name: "MRLeaseProtocol"),
        // What applications link to talk to mrleased: the socket, requests, events. No verbs.
        .target(
            name: "MRLeaseClient",
            dependencies: [
                "MRLeaseProtocol", "LinuxFile", "CLinux",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The byte-exact formats remote access shares between the daemon (which issues grants and
        // answers connect requests), the Swift peer library and C peers: the grant descriptor, the
        // rdma_cm connect/accept/reject private data, and the grant secret. One definition, no
        // verbs, no sockets, no Foundation; CLinux only for getrandom(2). docs/remote-access.md.
        .target(name: "MRLeaseGrant", dependencies: ["CLinux"]),
        // A remote peer of a grant (issue 10 item 5): rdma_cm connect with a descriptor, one-sided
        // WRITE/READ/atomics under the accept's terms, reconnect after revocation. Verbs and the
        // grant formats only, never the daemon's modules. docs/peer-library.md.
        .target(name: "MRLeasePeer", dependencies: ["Verbs", "MRLeaseGrant"]),
        // Starts `mrleased` and waits until it is ready, the one way every test target and the
        // benchmark do it; a library of its own because the benchmark must not link XCTest.
        .target(
            name: "DaemonLauncher",
            dependencies: [
                "LinuxFile",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // DaemonChild with /bin/sh in the daemon's place: what "not ready" says, no child left behind.
        .testTarget(name: "DaemonLauncherTests", dependencies: ["DaemonLauncher", "TestSupport"]),
        // The grant formats alone (round trips, malformed input, known-answer vectors); host only.
        .testTarget(name: "MRLeaseGrantTests", dependencies: ["MRLeaseGrant"]),
        // The peer library: its pure rules on the host, and in the guests against a responder
        // written in the test (rxe1 on 192.0.2.1).
        .testTarget(name: "MRLeasePeerTests", dependencies: ["MRLeasePeer", "MRLeaseGrant", "Verbs", "TestSupport"]),
        // The C peer of docs/protocol.md, extracted from the document, compiled with cc and run:
        // refusals on the host, transfers against a responder on the guest's rdma_cm address.
        .testTarget(name: "CPeerTests", dependencies: ["MRLeaseGrant", "MRLeaseClient", "MRLeaseProtocol", "Verbs", "TestSupport"]),
        // libmrlease (clib/, built with make): its C tests under ASan/UBSan against the built
        // `mrleased` (every request and error code on the host; a truncate's events in the
        // guests), its install layout, pkg-config file, exported symbols and man page.
        .testTarget(name: "CClientTests", dependencies: ["TestSupport", "MRLeaseProtocol"]),
        .testTarget(name: "MRLeaseProtocolTests", dependencies: ["MRLeaseProtocol", "TestSupport"]),
        .testTarget(name: "LinuxFileTests", dependencies: ["LinuxFile", "TestSupport"]),
        .testTarget(name: "VerbsTests", dependencies: ["Verbs", "TestSupport"]),
        // The pure policy alone: no TestSupport (it links Verbs), so no libibverbs.
        .testTarget(name: "MRLeasePolicyTests", dependencies: ["MRLeasePolicy"]),
        .testTarget(name: "MRLeaseEngineTests", dependencies: ["MRLeaseEngine", "MRLeasePolicy", "TestSupport"]),
        // The daemon binary on the guest's RDMA device, driven over its socket.
        .testTarget(name: "DaemonVMTests", dependencies: ["MRLeaseProtocol", "MRLeaseClient", "MRLeaseGrant", "Verbs", "LinuxFile", "TestSupport"]),
        // Two guests on one virtual wire (Scripts/vm-test --pair): rdma_cm and a remote peer of
        // the daemon across real kernels; each test skips unless MRLEASED_PAIR_ROLE is set.
        .testTarget(name: "PairVMTests", dependencies: [
            "Verbs", "MRLeaseClient", "MRLeaseProtocol", "MRLeasePeer", "LinuxFile", "TestSupport",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // The built `mrleased` as systemd runs it (notify, socket activation, SIGTERM, config, logs)
        // and Config/'s units under systemd-analyze verify. Host-only: no RDMA device needed.
        .testTarget(name: "MRLeaseDaemonTests", dependencies: ["MRLeaseDaemon", "MRLeaseEngine", "MRLeasePolicy", "MRLeaseProtocol", "MRLeaseGrant", "Verbs", "LinuxFile", "DaemonLauncher", "TestSupport"]),
        // The client library against the real `mrleased` binary on the host (no RDMA device).
        .testTarget(name: "MRLeaseClientTests", dependencies: ["MRLeaseClient", "MRLeaseProtocol", "LinuxFile", "TestSupport"]),
        // Drives the built `mrlease` executable as a user would.
        .testTarget(name: "mrleaseTests", dependencies: ["MRLeaseProtocol", "TestSupport"]),
        // Shared by the test targets: facility checks that skip with the missing facility's name,
        // RunningDaemon (DaemonLauncher's child on a scratch socket), the recording registrar
        // the engine and daemon host tests check ordering with, and the recording rdma_cm
        // the peer service runs on without a device.
        .target(name: "TestSupport", dependencies: ["CLinux", "LinuxFile", "Verbs", "MRLeaseEngine", "MRLeaseDaemon", "MRLeaseGrant", "DaemonLauncher"],
                path: "Tests/TestSupport"),
    ],
    swiftLanguageModes: [.v6]
)

// Coverage-guided fuzzers (libFuzzer supplies their main), only when Scripts/fuzz builds them
// with MRLEASED_FUZZ=1, -sanitize=fuzzer and -enable-testing, in its own scratch path: the
// normal build and test never see them.
if Context.environment["MRLEASED_FUZZ"] == "1" {
    package.targets += [
        // libFuzzer's driver behind SwiftPM's renamed main, and the checks both fuzzers make.
        .target(name: "FuzzSupport", dependencies: ["MRLeaseProtocol"], path: "Fuzz/FuzzSupport"),
        // Codec.decodeRequest / decodeServerMessage: round trips and the reply size bound.
        .executableTarget(name: "ProtocolFuzzer", dependencies: ["FuzzSupport", "MRLeaseProtocol"], path: "Fuzz/ProtocolFuzzer",
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
        // Daemon.answer(_:from:) with a recording registrar: the daemon's request path, no device.
        .executableTarget(name: "RequestFuzzer",
                          dependencies: ["FuzzSupport", "MRLeaseDaemon", "MRLeaseEngine", "MRLeaseProtocol", "LinuxFile", "TestSupport",
                                         .product(name: "Logging", package: "swift-log"),
                                         .product(name: "SystemPackage", package: "swift-system")],
                          path: "Fuzz/RequestFuzzer",
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
        // Sequences of requests, lease breaks, closes, timer expiries and disconnects against
        // one in-process Daemon with a recording registrar.
        .executableTarget(name: "SequenceFuzzer",
                          dependencies: ["FuzzSupport", "MRLeaseDaemon", "MRLeaseEngine", "MRLeaseProtocol", "LinuxFile", "TestSupport",
                                         .product(name: "Logging", package: "swift-log"),
                                         .product(name: "SystemPackage", package: "swift-system")],
                          path: "Fuzz/SequenceFuzzer",
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ]
}
