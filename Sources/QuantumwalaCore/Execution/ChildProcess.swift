import CSystem
import Glibc

/// One running child process: its own process group, pipes for stdout and stderr, and a
/// pidfd that the reactor watches for its exit.
///
/// The result is reported once, after the process has exited and both pipes are closed (so
/// output written by background members of the group is not lost).
public final class ChildProcess {
    /// The process id (and process group id); 0 while a spawner thread is still starting it.
    public private(set) var pid: Int32 = 0
    public let spec: CommandSpec
    /// Why the group was terminated on purpose, if it was.
    public private(set) var terminationReason: String?
    public private(set) var exited = false
    public var running: Bool { !finished }

    private unowned let reactor: Reactor
    private var onExit: ((ProcessResult) -> Void)?
    private var result = ProcessResult()
    private let start: Double
    private var pidfd: Int32 = -1
    private var outFd: Int32, errFd: Int32, inFd: Int32
    /// The child's ends of the pipes, open until the spawn is done.
    private var childFds: [Int32]
    private var stdinData: [UInt8] = []
    private var stdinOffset = 0
    private var logFd: Int32 = -1
    private var timeoutTimer: Reactor.TimerID?
    private var killTimer: Reactor.TimerID?
    private var finished = false

    /// Starts `spec`. A command that cannot start is reported through `onExit` (code 127).
    ///
    /// - Parameter background: start it from a spawner thread, so the calling thread does
    ///   not wait for the child's `execve` (for batches; `pid` is 0 until then).
    /// - Returns: the process, or nil when it could not be started at all.
    @discardableResult
    public static func start(_ spec: CommandSpec, reactor: Reactor, background: Bool = false,
                             onExit: @escaping (ProcessResult) -> Void) -> ChildProcess? {
        guard let first = spec.argv.first, !first.isEmpty else {
            onExit(.notStarted("empty command"))
            return nil
        }
        if let cwd = spec.cwd {
            var st = stat()
            if stat(cwd, &st) != 0 || (st.st_mode & S_IFMT) != S_IFDIR {
                onExit(.notStarted("cannot start \(first): working directory '\(cwd)' does not exist"))
                return nil
            }
        }
        var out: [Int32] = [-1, -1], err: [Int32] = [-1, -1], inp: [Int32] = [-1, -1]
        func closeAll() { for fd in out + err + inp where fd >= 0 { close(fd) } }
        // The read ends stay blocking: each epoll report is answered by exactly one read,
        // which saves a non-blocking switch and a final EAGAIN read per pipe.
        guard qw_pipe(&out, 0, 0) == 0, qw_pipe(&err, 0, 0) == 0,
              spec.stdin == nil || qw_pipe(&inp, 0, 1) == 0
        else {
            let e = errno
            closeAll()
            onExit(.notStarted("cannot start \(first): \(errnoText(e))"))
            return nil
        }
        var logFd: Int32 = -1
        if let path = spec.logPath {
            logFd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            if logFd < 0 {
                let e = errno
                closeAll()
                onExit(.notStarted("cannot open log file '\(path)': \(errnoText(e))"))
                return nil
            }
        }
        let child = ChildProcess(spec: spec, reactor: reactor, out: out, err: err, input: inp, log: logFd, onExit: onExit)
        let resolved = reactor.resolveProgram(first)
        child.launch(resolved ?? first, fallback: resolved != nil && resolved != first ? first : nil, background: background)
        return child.finished ? nil : child
    }

    private init(spec: CommandSpec, reactor: Reactor, out: [Int32], err: [Int32], input: [Int32], log: Int32,
                 onExit: @escaping (ProcessResult) -> Void) {
        self.spec = spec
        self.reactor = reactor
        self.start = monotonicSeconds()
        self.outFd = out[0]
        self.errFd = err[0]
        self.inFd = input[1]
        self.childFds = [out[1], err[1], input[0]]
        self.logFd = log
        self.onExit = onExit
    }

    /// Spawns `file`; `fallback` is the name as given, tried when the remembered path failed.
    private func launch(_ file: String, fallback: String?, background: Bool) {
        let fds = childFds
        let cpuSeconds = spec.cpuTimeLimit.map { max(1, Int($0.rounded(.up))) } ?? 0
        let done: (Int32, Int32) -> Void = { [self] pid, rc in
            if rc == ENOENT, let name = fallback {
                reactor.forgetProgram(name)  // moved or removed since: look it up again
                launch(name, fallback: nil, background: background)
            } else {
                spawned(pid: pid, error: rc)
            }
        }
        withCStrings(spec.argv) { argv in
            withEnvironment(spec) { envp in
                let req = background ? qw_spawn_req_new(file, argv, envp, spec.cwd, fds[2], fds[0], fds[1], cpuSeconds, 0) : nil
                if let req, reactor.submitSpawn(req, { req in done(req.pointee.pid, req.pointee.error) }) {
                    return
                } else {
                    if let req { qw_spawn_req_free(req) }
                    var pid: pid_t = 0
                    let rc = qw_spawn(file, argv, envp, spec.cwd, fds[2], fds[0], fds[1], cpuSeconds, &pid)
                    if rc == 0 { qw_track_group(pid) }
                    done(pid, rc)
                }
            }
        }
    }

    private func spawned(pid: Int32, error rc: Int32) {
        for fd in childFds where fd >= 0 { close(fd) }
        childFds = []
        if rc != 0 {
            for fd in [outFd, errFd, inFd, logFd] where fd >= 0 { close(fd) }
            outFd = -1; errFd = -1; inFd = -1; logFd = -1
            finished = true
            let cb = onExit
            onExit = nil
            cb?(.notStarted("cannot start \(spec.argv[0]): \(errnoText(rc))"))
            return
        }
        self.pid = pid
        result.pid = pid
        pidfd = qw_pidfd_open(pid)
        arm()
        if let reason = terminationReason {
            terminationReason = nil
            terminate(reason: reason)
        }
    }

    // The reactor's handlers hold the process strongly: a running process stays alive
    // until it has been reaped and its pipes are closed, whoever else keeps it.
    private func arm() {
        let IN = UInt32(QW_EPOLLIN), HUP = UInt32(QW_EPOLLHUP)
        reactor.watch(outFd, events: IN | HUP) { _ in self.drain(stdout: true) }
        reactor.watch(errFd, events: IN | HUP) { _ in self.drain(stdout: false) }
        if inFd >= 0 {
            stdinData = spec.stdin ?? []
            if stdinData.isEmpty {
                close(inFd)
                inFd = -1
            } else {
                reactor.watch(inFd, events: UInt32(QW_EPOLLOUT)) { _ in self.feed() }
            }
        }
        if pidfd >= 0 {
            reactor.watch(pidfd, events: IN) { _ in self.reap() }
        } else {
            // pidfd_open is unavailable (Linux before 5.3): poll for the exit instead.
            pollExit()
        }
        if let t = spec.timeout {
            // The timeout covers the whole group: members that outlive the leader and keep
            // its output open are terminated too.
            timeoutTimer = reactor.after(t) { [weak self] in
                guard let self else { return }
                self.timeoutTimer = nil
                if !self.finished {
                    self.result.timedOut = true
                    self.terminate(reason: "timed out after \(formatSeconds(t))")
                }
            }
        }
    }

    private func pollExit() {
        reactor.after(0.005) { [weak self] in
            guard let self, !self.exited else { return }
            self.reap()
            if !self.exited { self.pollExit() }
        }
    }

    private func feed() {
        while stdinOffset < stdinData.count {
            let n = stdinData.withUnsafeBytes { write(inFd, $0.baseAddress! + stdinOffset, $0.count - stdinOffset) }
            if n > 0 { stdinOffset += n; continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { return }
            break  // EPIPE: the child does not read its input
        }
        reactor.unwatch(inFd)
        close(inFd)
        inFd = -1
        stdinData = []
    }

    private func drain(stdout isOut: Bool) {
        let fd = isOut ? outFd : errFd
        guard fd >= 0 else { return }
        let buf = reactor.scratch
        var n: Int
        repeat { n = read(fd, buf.baseAddress, buf.count) } while n < 0 && errno == EINTR
        if n > 0 {
            let chunk = UnsafeRawBufferPointer(rebasing: buf[0..<n])
            if isOut { result.stdout.append(contentsOf: chunk) } else { result.stderr.append(contentsOf: chunk) }
            if logFd >= 0 { _ = write(logFd, chunk.baseAddress, n) }
            return  // level-triggered: epoll reports again while more is waiting
        }
        // EOF or an error: this stream is done
        reactor.unwatch(fd)
        close(fd)
        if isOut { outFd = -1 } else { errFd = -1 }
        finishIfDone()
    }

    private func reap() {
        var status: Int32 = 0
        var usage = rusage()
        let r = wait4(pid, &status, WNOHANG, &usage)
        guard r == pid else { return }
        exited = true
        if pidfd >= 0 {
            reactor.unwatch(pidfd)
            close(pidfd)
            pidfd = -1
        }
        result.duration = monotonicSeconds() - start
        result.maxRSS = Int(usage.ru_maxrss) * 1024
        result.cpuTime = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        let sig = status & 0x7f
        if sig == 0 {
            result.code = (status >> 8) & 0xff
        } else {
            result.signal = sig
            result.code = 128 + sig
        }
        finishIfDone()
    }

    private func finishIfDone() {
        guard exited, outFd < 0, errFd < 0, !finished else { return }
        finished = true
        if inFd >= 0 { reactor.unwatch(inFd); close(inFd); inFd = -1 }
        if logFd >= 0 { close(logFd); logFd = -1 }
        if let t = killTimer { reactor.cancel(t); killTimer = nil }
        if let t = timeoutTimer { reactor.cancel(t); timeoutTimer = nil }
        if result.timedOut { result.code = 124 }
        // Members of the group that outlived the leader stay tracked, so exit paths end them.
        if kill(-pid, 0) != 0 { qw_untrack_group(pid) }
        if result.error == nil {
            if let reason = terminationReason {
                result.error = reason
            } else if let s = result.signal, s == SIGXCPU || s == SIGKILL, let limit = spec.cpuTimeLimit,
                      result.cpuTime >= Double(max(1, Int(limit.rounded(.up)))) - 0.05 {
                result.error = "cpu time limit exceeded: used \(formatSeconds((result.cpuTime * 100).rounded() / 100)), limit \(formatSeconds(limit))"
            } else if let s = result.signal {
                result.error = "killed by signal \(s) (\(signalName(s)))"
            } else if result.code != 0 {
                result.error = "exited with code \(result.code)"
            }
        }
        let cb = onExit
        onExit = nil
        cb?(result)
    }

    /// Terminates the whole process group: SIGTERM now, SIGKILL after the grace period.
    ///
    /// - Parameter reason: becomes the result's `error`.
    public func terminate(reason: String) {
        guard !finished else { return }
        if terminationReason == nil { terminationReason = reason }
        guard pid > 0 else { return }  // still being spawned: done once it has started
        kill(-pid, SIGTERM)
        kill(-pid, SIGCONT)
        if killTimer == nil {
            killTimer = reactor.after(spec.killGrace) { [weak self] in
                guard let self else { return }
                self.killTimer = nil
                kill(-self.pid, SIGKILL)
            }
        }
    }

    /// Sends `signal` to the process group.
    public func send(_ signal: Int32) {
        guard !finished, pid > 0 else { return }
        kill(-pid, signal)
    }
}

/// `1.5s`, `30s`, `0.25s`.
func formatSeconds(_ s: Double) -> String {
    if s == s.rounded() { return "\(Int(s))s" }
    return "\(s)s"
}

/// SIGTERM, SIGKILL... for a signal number.
public func signalName(_ s: Int32) -> String {
    let names: [Int32: String] = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 8: "SIGFPE",
                                  9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
                                  10: "SIGUSR1", 12: "SIGUSR2", 24: "SIGXCPU", 25: "SIGXFSZ"]
    return names[s] ?? "signal \(s)"
}

/// Calls `body` with a NULL-terminated C array of the strings.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var ptrs: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    ptrs.append(nil)
    defer { for p in ptrs { free(p) } }
    return ptrs.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// Calls `body` with the child's environment, or nil to inherit qw's own unchanged.
func withEnvironment<R>(_ spec: CommandSpec, _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>?) -> R) -> R {
    if spec.env.isEmpty && !spec.clearEnv { return body(nil) }
    var entries: [String] = []
    var overridden = Set<String>()
    for (k, _) in spec.env { overridden.insert(k) }
    if !spec.clearEnv, var p = qw_environ() {
        while let entry = p.pointee {
            let s = String(cString: entry)
            let key = s.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? s
            if !overridden.contains(key) { entries.append(s) }
            p += 1
        }
    }
    for (k, v) in spec.env { entries.append("\(k)=\(v)") }
    return withCStrings(entries) { body($0) }
}
