import Glibc
import LinuxFile
import Logging
import MRLeaseEngine
import MRLeasePolicy
import MRLeaseProtocol
import SystemPackage
import Verbs

/// Admission: accepting clients, setting up their sessions, refusing the ones past a limit.
extension Daemon {
    /// Accepts until the backlog is empty. Out of fds (EMFILE/ENFILE) or kernel memory, it
    /// stops watching the listener for `acceptBackoffNanos`: the listener is level-triggered,
    /// so going on would spin a CPU while the condition lasts.
    func acceptClients() {
        while true {
            let accepted: UnixSocket?
            do {
                accepted = try listener.accept(nonBlocking: true)
            } catch {
                switch error {
                case .connectionAbort:
                    continue  // the client gave up while queued
                case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
                    logger.warning("accept failed: out of resources; pausing accepts for 1 s",
                                   metadata: ["op": "accept4", "errno": "\(error.symbolicName)"])
                    return pauseAccepting(now: currentTime())
                default:
                    logger.error("accept failed", metadata: ["op": "accept4", "errno": "\(error.symbolicName)"])
                    return
                }
            }
            guard let socket = accepted else { return }
            if let error = admit(socket) {
                // Accepted, but out of fds to read /proc/PID with: the connection waits, like
                // the ones still in the backlog, and is admitted first when accepting resumes.
                awaitingAdmission.append(socket)
                logger.warning("connection waits: out of fds to read its /proc files; pausing accepts for 1 s",
                               metadata: ["op": "open", "errno": "\(error.symbolicName)"])
                return pauseAccepting(now: currentTime())
            }
        }
    }

    func pauseAccepting(now: UInt64) {
        unwatch(listener.descriptor)
        let resume = now + Self.acceptBackoffNanos
        acceptResumesAt = resume
        timers.schedule(.acceptResume, at: resume)
    }

    /// Serves a new connection, or refuses it with a reply that says why. Returns the errno
    /// (EMFILE, ENFILE) when the daemon is out of fds to set it up with: the caller keeps it
    /// waiting (neither served nor closed).
    func admit(_ socket: UnixSocket) -> Errno? {
        let credentials: UnixSocket.Credentials
        do { credentials = try socket.peerCredentials() } catch {
            logger.warning("connection dropped: SO_PEERCRED failed", metadata: ["errno": "\(error.symbolicName)"])
            close(socket)
            return nil
        }
        guard sessions.count < configuration.maxConnections else {
            refuse(socket, credentials, ProtocolError(.tooManyRequests, "mrleased serves at most \(configuration.maxConnections) connections (max-connections); close one and retry"), why: "limit")
            return nil
        }
        let ofUID = sessions.values.count { $0.credentials.uid == credentials.uid }
        guard ofUID < configuration.maxConnectionsPerUID else {
            refuse(socket, credentials, ProtocolError(.tooManyRequests, "uid \(credentials.uid) has \(ofUID) connections, the most one uid may hold (max-connections-per-uid \(configuration.maxConnectionsPerUID)); close one and retry"), why: "per-uid limit")
            return nil
        }
        // What the client may do is fixed now, from /proc/PID. A file that cannot be read (out
        // of fds, or the process already gone) refuses the connection: going on would serve
        // the client without its byte quota.
        let limit: UInt64?
        let mayLeaseOthers: Bool
        do {
            limit = try configuration.maxBytesPerUID ?? ProcessFacts.memlockLimit(of: credentials.pid)
            let rule = configuration.leaseOthers
            // Supplementary groups are read only when a group could make the difference.
            let groups: Set<UInt32> = rule.groups.isEmpty ? [credentials.gid] : try ProcessFacts.groups(of: credentials.pid).union([credentials.gid])
            mayLeaseOthers = rule.allows(uid: credentials.uid, groups: groups)
        } catch {
            let errno = error as? Errno
            if let errno, errno == .tooManyOpenFiles || errno == .tooManyOpenFilesInSystem { return errno }
            // Otherwise the process is gone (ENOENT, ESRCH) or /proc is not ours to read.
            let name = errno?.symbolicName ?? "\(error)"
            refuse(socket, credentials, ProtocolError(.internal, "mrleased could not read /proc/\(credentials.pid) to set up this connection (\(name))", errnoName: errno?.symbolicName, errnoValue: errno?.rawValue), why: "/proc/\(credentials.pid) unreadable: \(name)")
            return nil
        }
        let owner = OwnerID(nextOwner)
        nextOwner += 1
        let session = ClientSession(owner: owner, socket: socket, credentials: credentials, byteLimit: limit, mayLeaseOthers: mayLeaseOthers)
        do {
            try watch(socket.descriptor, as: .session(session))
        } catch {
            refuse(socket, credentials, ProtocolError(.internal, "mrleased could not watch this connection (epoll_ctl: \(error.symbolicName)); retry later", errnoName: error.symbolicName, errnoValue: error.rawValue), why: "epoll_ctl failed: \(error.symbolicName)")
            return nil
        }
        sessions[owner] = session
        logger.debug("client connected", metadata: ["client": "\(owner)", "pid": "\(credentials.pid)", "uid": "\(credentials.uid)"])
        return nil
    }

    /// Tells a connection it will not be served, and why (a reply without an id), then closes
    /// it: a client past a limit hears a refusal, never silence.
    func refuse(_ socket: UnixSocket, _ credentials: UnixSocket.Credentials, _ error: ProtocolError, why: String) {
        do { try socket.send(Codec.encode(Reply(id: nil, type: nil, error: error))) } catch {
            logger.debug("refusal not sent", metadata: ["errno": "\(error.symbolicName)"])
        }
        close(socket)
        logger.warning("connection refused: \(why)", metadata: ["pid": "\(credentials.pid)", "uid": "\(credentials.uid)"])
    }

    /// Closes a client socket; close(2) fails only with EBADF (a bug) or EINTR, and Linux
    /// releases the fd either way.
    func close(_ socket: UnixSocket) {
        do { try socket.close() } catch {
            logger.debug("close failed", metadata: ["errno": "\(error.symbolicName)"])
        }
    }
}
