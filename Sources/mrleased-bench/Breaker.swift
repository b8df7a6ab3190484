import Glibc

/// A child process that calls truncate(2) on a path and reports how long the call took,
/// timed by the child itself on CLOCK_MONOTONIC, so process start-up is not counted.
///
/// perl rather than coreutils `truncate`: that tool opens the file O_NONBLOCK, and the open
/// fails at once with EAGAIN against a lease, so it never blocks and cannot measure blocking.
/// perl's `truncate` on a path is truncate(2) itself, which waits for the lease to go.
final class Breaker {
    static let perl = "/usr/bin/perl"
    static let script = """
        use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);
        my $s = clock_gettime(CLOCK_MONOTONIC);
        truncate($ARGV[0], $ARGV[1]) or die "truncate: $!\\n";
        my $e = clock_gettime(CLOCK_MONOTONIC);
        printf("%.9f %.9f\\n", $s, $e);
        """

    let pid: pid_t
    private var output: Int32
    private var status: Int32?

    /// Starts `perl -e SCRIPT path size` with its stdout on a pipe and no signals blocked
    /// (the engine's thread blocks the lease-break signal, and posix_spawn would pass that on).
    ///
    /// The corresponding C function is `posix_spawn`.
    init(truncating path: String, to size: UInt64) throws(BenchError) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw BenchError("pipe: \(String(cString: strerror(errno)))") }
        // Close-on-exec for both ends: the child gets its stdout through dup2 alone.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))

        let argv: [String] = [Self.perl, "-e", Self.script, path, String(size)]
        let envp: [String] = ["PATH=/usr/bin:/bin", "LC_ALL=C"]
        let arguments = argv.map { strdup($0) } + [nil]
        let environment = envp.map { strdup($0) } + [nil]
        defer { for pointer in arguments + environment { free(pointer) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, Self.perl, &actions, &attributes, arguments, environment)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw BenchError("posix_spawn \(Self.perl): \(String(cString: strerror(rc)))")
        }
        pid = child
        output = fds[0]
    }

    deinit {
        if status == nil {
            kill(pid, SIGKILL)
            var raw: Int32 = 0
            _ = waitpid(pid, &raw, 0)
        }
        if output >= 0 { close(output) }
    }

    /// Whether the child has exited; never blocks.
    ///
    /// The corresponding C function is `waitpid` (`WNOHANG`).
    var hasExited: Bool {
        if status != nil { return true }
        var raw: Int32 = 0
        if waitpid(pid, &raw, WNOHANG) == pid { status = raw }
        return status != nil
    }

    /// Waits for the child and returns the blocked time of its truncate(2), in nanoseconds.
    func blockedNanoseconds() throws(BenchError) -> UInt64 {
        if status == nil {
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
            status = raw
        }
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let n = read(output, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        let raw = status ?? -1
        guard raw & 0x7f == 0, (raw >> 8) & 0xff == 0 else {
            throw BenchError("the truncate(2) child failed (wait status \(raw)); its stderr is above")
        }
        let fields = text.split(whereSeparator: \.isWhitespace).compactMap { Double($0) }
        guard fields.count == 2, fields[1] >= fields[0] else { throw BenchError("unexpected child output: \(text)") }
        return UInt64(((fields[1] - fields[0]) * 1e9).rounded())
    }
}
