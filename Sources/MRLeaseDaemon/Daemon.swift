import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

/// The service: one epoll loop owns the listener, every client, the engine's signalfd and
/// inotify fd, SIGTERM/SIGINT and the timers. Nothing else mutates state, so nothing locks.
///
/// Who calls whom: the loop asks `sources` what a ready fd is and calls its handler; a handler
/// calls the engine, which returns the events it produced; the loop `route`s them to sessions
/// after the engine call has returned (a session that cannot take them is disconnected, which
/// releases its regions: another engine call, never a nested one).
///
/// Create and run it on one thread: the engine aims lease-break signals at the creating thread.
public final class Daemon {
    /// The release: what `mrleased --version` prints and Scripts/package versions the .deb by.
    public static let release = Release.version
    public static let version = "mrleased \(release)"

    /// What a watched fd is: each one the loop waits on has exactly one.
    enum Source {
        case listener
        case terminate
        case session(ClientSession)
        /// The engine's signalfd (lease breaks).
        case leaseSignals
        /// The engine's inotify fd (closes of released files).
        case fileCloses
        /// The rdma_cm event channel of the peer listener (connect requests, disconnects).
        case peers
        /// The exposure worker's eventfd: grants' MRs made off the loop (`ExposureMaker`).
        case exposures
        /// The pin worker's eventfd: large pinned registrations made off the loop (`PinJob`).
        case pins

        /// Served before any client request, in every turn and between clients' requests:
        /// a lease break waits for no client (docs/reliability.md, "Breaks first").
        var isUrgent: Bool {
            switch self {
            case .terminate, .leaseSignals, .fileCloses, .peers, .exposures: true
            case .listener, .session, .pins: false
            }
        }
    }

    /// The daemon's own timers; the engine keeps its files' timers itself (`nextDeadline`).
    enum Timer: Hashable, Sendable {
        case watchdog
        /// Accepting was paused after EMFILE/ENFILE (see `acceptClients`).
        case acceptResume
        /// A grant's expiry: the ones due then end (a grant revoked before finds nothing).
        case grantExpiry
        /// A peer's handshake runs out of time (`peer-handshake-ms`).
        case peerHandshake
        /// A client's socket may have stayed full for `client-stall-ms`.
        case clientStall
        /// The next write of the metrics file (`metrics-file`).
        case metricsFile
    }

    /// Pins of a GiB and more on the worker are made as `pin-slices` MRs of slices, in
    /// parallel: bare, two slices pin 1 GiB in 0.52-0.59 of one MR's time on the guests' two
    /// vCPUs, but with both taken the loop starves (another client's `stats` p99 18x idle), so
    /// by default one CPU is left to the loop (docs/benchmarks.md, "Large registrations off the
    /// loop").
    static let parallelPinBytes: UInt64 = 1 << 30
    static var automaticPinSlices: Int { max(1, min(4, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) - 1)) }

    /// How long accepting pauses when the process or system is out of fds (swift-nio's
    /// AcceptBackoffHandler waits one second too): long enough not to spin, short enough that a
    /// freed fd is used soon.
    static let acceptBackoffNanos: UInt64 = 1_000_000_000

    let configuration: DaemonConfiguration
    let logger: Logger
    let notifier: SystemdNotifier
    /// Clients and the listener, plus `urgent`'s own fd (readable when an urgent fd is).
    let epoll: Epoll
    /// The urgent sources (`Source.isUrgent`): polled at the start of every turn and, while
    /// clients are being served, again every `urgentPollNanos`.
    let urgent: Epoll
    let listener: UnixSocket
    let terminate: SignalFD
    /// nil on a host without an RDMA device: every registration is then refused, saying so.
    let engine: Engine?
    let deviceName: String?
    let odp: ODPCaps
    let noDeviceReason: String?
    /// What the start-up ODP integrity self-test found on the device; nil when the daemon did
    /// not open the device itself (an injected registrar) or has none.
    let odpIntegrity: ODPIntegrity?
    /// Remote access: the rdma_cm listener, grants and peers; nil unless `listen` is set and
    /// the device is open.
    let peers: PeerService?
    /// Where registrations' pins of at least `offload-pin-bytes` run: a thread for a device, at
    /// once for a stand-in registrar (tests swap in their own to hold a pin); nil without an engine.
    var pins: (any JobRunner<PinJob>)?
    /// Why there is no listener although `listen` is set (no device, say).
    let noPeersReason: String?
    /// What each watched fd is; a session's socket maps to its session.
    var sources: [Int32: Source] = [:]
    /// The connected clients, by the owner id their regions carry in the engine.
    var sessions: [OwnerID: ClientSession] = [:]
    /// The daemon's time per request, by type (`stats`' `requestMicros`).
    var requestTimes: [RequestType: LatencyHistogram] = [:]
    var nextOwner: UInt64 = 1
    /// The last registration plans made, for every client: a range with the same file facts,
    /// fd mode, access, preference, layout policy and lessee as one of them is only checked.
    lazy var planCache = PlanCache(device: engine?.device, noDeviceReason: noDeviceReason, pageSize: UInt64(SharedMapping.pageSize))
    var stopping = false
    /// Whether we bound the socket path ourselves (and so remove it on exit).
    let ownsSocketPath: Bool
    var timers = DeadlineHeap<Timer>()
    var nextWatchdog: UInt64?
    /// When the stall clocks are next looked at (one timer entry for all of them).
    var nextStallCheck: UInt64?
    /// The latest time timers were fired for (see `currentTime`).
    var latestTimerPass: UInt64 = 0
    /// Set while accepting is paused: when it resumes.
    var acceptResumesAt: UInt64?
    /// Connections accepted when no fd was left to set them up with (their /proc files):
    /// admitted first when accepting resumes, before the backlog.
    var awaitingAdmission: [UnixSocket] = []
    /// Engine events waiting to be delivered, and whether a `route` is delivering them.
    var pendingNotices: [EngineNotice] = []
    var routing = false
    /// Where the metrics are written for node_exporter (nil: `metrics-file` unset), and the
    /// last write's failure, logged once until it changes or clears.
    let metricsFile: MetricsFile?
    var metricsFailure: MetricsFile.Failure?

    /// Sets everything up on the calling thread: blocks SIGTERM/SIGINT (read through a
    /// signalfd), opens the device, creates the engine, and binds or adopts the listener.
    /// `registrar`: the verbs side to use instead of opening the configured device (tests drive
    /// the daemon in-process with a stand-in, which checks ordering, never that RDMA works);
    /// `peerVerbs`: rdma_cm and verbs for the peer service (with `listen` set) instead of the
    /// device's (fuzzers and tests play peers through a recording stand-in);
    /// `extentReader`: how the engine reads extents (tests make it fail).
    public init(configuration: DaemonConfiguration, environment: [String: String], logger: Logger,
                registrar injected: (any Registrar)? = nil, peerVerbs injectedPeerVerbs: (any PeerVerbs)? = nil,
                extentReader: ExtentReader = .fiemap) throws {
        self.configuration = configuration
        self.logger = logger
        notifier = SystemdNotifier(environment: environment)
        terminate = try SignalFD(signals: [SIGTERM, SIGINT])
        // A client that vanishes mid-send must not kill us: sends use MSG_NOSIGNAL, and this
        // covers anything that does not.
        signal(SIGPIPE, SIG_IGN)
        epoll = try Epoll()
        urgent = try Epoll()
        if let fd = urgent.readiness { try epoll.watch(fd, for: .readable) }

        let device = Self.openDevice(configuration, injected: injected, logger: logger)
        let registrar = device.registrar, reason = device.noDeviceReason, integrity = device.integrity
        (peers, noPeersReason) = try Self.makePeerService(configuration, device: device, injected: injectedPeerVerbs,
                                                          registrarInjected: injected != nil, logger: logger)
        noDeviceReason = reason
        odpIntegrity = integrity
        metricsFile = configuration.metricsFile.map(MetricsFile.init(path:))
        deviceName = registrar?.deviceName
        odp = registrar?.odp ?? .none
        let timing = FileLifecycle.Timing(quiesce: configuration.quiesceMillis * 1_000_000,
                                          initialBackoff: configuration.restoreBackoffMillis * 1_000_000)
        engine = try registrar.map { registrar in
            try Engine(registrar: registrar, configuration: .init(timing: timing, extentReader: extentReader, odpPrefetch: configuration.odpPrefetch,
                                                                  offloadPinBytes: configuration.offloadPinBytes == 0 ? nil : configuration.offloadPinBytes,
                                                                  parallelPinBytes: Self.parallelPinBytes,
                                                                  pinSlices: configuration.pinSlices == 0 ? Self.automaticPinSlices : configuration.pinSlices),
                       logger: logger)
        }
        // A device's pins run on a thread of their own (its PD takes registrations from two
        // threads); a stand-in's at once, so fuzzers and host tests stay deterministic.
        if engine != nil {
            pins = injected == nil ? try ThreadRunner<PinJob>(name: "mrleased-pins", logger: logger) { $0.run() }
                                   : InlineRunner<PinJob> { $0.run() }
        }

        (listener, ownsSocketPath) = try Self.makeListener(configuration, environment: environment, logger: logger)
        raiseOpenFilesLimit()
        try listener.setNonBlocking(true)

        try watch(listener.descriptor, as: .listener)
        try watch(terminate.descriptor, as: .terminate)
        if let engine {
            try watch(engine.descriptors[0], as: .leaseSignals)
            try watch(engine.descriptors[1], as: .fileCloses)
        }
        if let peers {
            try watch(peers.verbs.descriptor, as: .peers)
            if let made = peers.maker.descriptor { try watch(made, as: .exposures) }
        }
        if let done = pins?.descriptor { try watch(done, as: .pins) }
        if let reason { logger.warning("\(reason)") }
        // The first write at once, so the file exists as soon as the daemon serves.
        if metricsFile != nil { timers.schedule(.metricsFile, at: Engine.now()) }
    }

    /// Runs the ODP integrity self-test once (a loopback WRITE and READ on an ODP MR at an
    /// unaligned offset; it cleans up every verbs object) and logs what it found: rxe's ODP
    /// corrupts unaligned transfers while reporting success (docs/kernel-matrix.md), so peers
    /// must be told the alignment that lands intact.
    static func checkODPIntegrity(on context: Context, logger: Logger) -> ODPIntegrity {
        let result = ODPIntegrityCheck().run(on: context)
        let metadata: Logger.Metadata = ["device": "\(context.device.name)", "odpIntegrity": "\(result.code)",
                                         "transferAlignment": "\(result.transferAlignment)"]
        switch result {
        case .intact, .notApplicable:
            logger.info("ODP integrity self-test: \(result)", metadata: metadata)
        case .corrupts, .failed:
            logger.warning("ODP integrity self-test: \(result)", metadata: metadata)
        }
        return result
    }

    /// The gid of `socket-group` (a name or a number); nil when unset. An unknown group stops
    /// the daemon, as it stops systemd's socket unit: a socket nobody may reach is no default.
    static func groupID(_ group: String?) throws -> gid_t? {
        guard let group else { return nil }
        if let number = gid_t(group) { return number }
        guard let entry = getgrnam(group) else {
            throw DaemonConfiguration.Problem(description: "socket-group: no group named '\(group)' (create it, or set socket-group to one that exists)")
        }
        return entry.pointee.gr_gid
    }

    /// Raises the soft RLIMIT_NOFILE to the hard limit: the soft default (often 1024) is short
    /// of max-connections plus one fd per leased file, and out of fds the daemon can neither
    /// accept nor receive a client's fd. Logs both limits.
    func raiseOpenFilesLimit() {
        func text(_ value: UInt64?) -> String { value.map(String.init) ?? "unlimited" }
        do {
            let before = try SystemFacts.raiseOpenFilesLimit()
            let what = before.soft == before.hard ? "RLIMIT_NOFILE: soft limit already at the hard limit" : "RLIMIT_NOFILE: soft limit raised to the hard limit"
            logger.info("\(what)", metadata: ["op": "setrlimit", "soft": "\(text(before.soft))", "hard": "\(text(before.hard))"])
        } catch {
            logger.warning("RLIMIT_NOFILE not raised: the soft limit stays", metadata: ["op": "setrlimit", "errno": "\(error.symbolicName)"])
        }
    }

    func watch(_ fd: FileDescriptor, as source: Source) throws(Errno) {
        try (source.isUrgent ? urgent : epoll).watch(fd, for: .readable)
        sources[fd.rawValue] = source
    }

    func unwatch(_ fd: FileDescriptor) {
        if sources[fd.rawValue]?.isUrgent == true { urgent.unwatch(fd) } else { epoll.unwatch(fd) }
        sources[fd.rawValue] = nil
    }
}
