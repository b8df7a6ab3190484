import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import Verbs

/// The parts of `Daemon.init` that decide what the daemon runs with: the device, the peer
/// service, the listener. Each is a pure function of the configuration and what the host has.
extension Daemon {
    /// What opening the configured device gave.
    struct DeviceSetup {
        var registrar: (any Registrar)?
        /// Why there is no registrar, for every refused registration.
        var noDeviceReason: String?
        var integrity: ODPIntegrity?
        var context: Context?
    }

    /// The injected registrar, or the configured device's (told to listen but not which device:
    /// the listener's, since its PDs must be the ones peers' QPs are made in), with its ODP
    /// self-test; a host without one gets the reason registrations are refused.
    static func openDevice(_ configuration: DaemonConfiguration, injected: (any Registrar)?, logger: Logger) -> DeviceSetup {
        if let injected { return DeviceSetup(registrar: injected) }
        do {
            let device = try configuration.device ?? configuration.listen.first.map(PeerService.device(of:))
            let verbs = try VerbsRegistrar(deviceNamed: device, logger: logger)
            return DeviceSetup(registrar: verbs, integrity: checkODPIntegrity(on: verbs.context, logger: logger), context: verbs.context)
        } catch {
            return DeviceSetup(noDeviceReason: "no RDMA device: \(error). Registrations are refused until mrleased is restarted on a host with one")
        }
    }

    /// The peer service when `listen` is set and there is rdma_cm to serve it with; else nil and
    /// why (nil reason: not asked to listen). A listener that cannot be set up as configured
    /// throws, stopping the daemon: peers would otherwise be told of endpoints nobody serves.
    static func makePeerService(_ configuration: DaemonConfiguration, device: DeviceSetup, injected: (any PeerVerbs)?,
                                registrarInjected: Bool, logger: Logger) throws -> (PeerService?, String?) {
        guard !configuration.listen.isEmpty else { return (nil, nil) }
        guard let verbs = try injected ?? device.context.map(DevicePeerVerbs.init(context:)) else {
            let reason = registrarInjected ? "the daemon runs with an injected registrar (no verbs context)" : "no RDMA device to listen on"
            logger.warning("listen is set but remote access is off: \(reason)")
            return (nil, reason)
        }
        // A device's grant MRs are registered on a worker thread; a stand-in's inline, so
        // fuzzers and host tests stay deterministic (they swap in their own maker to test
        // the waiting).
        let maker: ExposureMaker = injected == nil
            ? try ThreadRunner<ExposureJob>(name: "mrleased-exposures", logger: logger) { $0.run(on: verbs) }
            : InlineRunner<ExposureJob> { $0.run(on: verbs) }
        let service = try PeerService(verbs: verbs, maker: maker, endpoints: configuration.listen,
                                      odpAlignment: UInt32(device.integrity?.transferAlignment ?? 1),
                                      revokingRetryMillis: UInt32(min(configuration.quiesceMillis + configuration.restoreBackoffMillis / 10, 10_000)),
                                      limits: PeerLimits(grantsPerRegion: configuration.maxGrantsPerRegion,
                                                         grantsPerUID: configuration.maxGrantsPerUID,
                                                         handshakeNanos: configuration.peerHandshakeMillis * 1_000_000),
                                      logger: logger)
        return (service, nil)
    }

    /// systemd's socket when activated (its path is the unit's, not ours), else a new one bound
    /// at `socket`; and whether we own the path (and so remove it on exit).
    static func makeListener(_ configuration: DaemonConfiguration, environment: [String: String],
                             logger: Logger) throws -> (UnixSocket, Bool) {
        if let activated = SocketActivation.listenDescriptors(environment: environment).first {
            logger.info("socket activation", metadata: ["fd": "\(activated.rawValue)"])
            return (try UnixSocket(adopting: activated), false)
        }
        return (try UnixSocket.listen(path: configuration.socketPath, mode: mode_t(configuration.socketMode),
                                      group: try groupID(configuration.socketGroup)), true)
    }
}
