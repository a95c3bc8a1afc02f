import CSystem
import Glibc

/// One running child process: its own process group, pipes for stdout and stderr, and a
/// pidfd that the reactor watches for its exit.
///
/// The result is reported once, after the process has exited and both pipes are closed (so
/// output written by background members of the group is not lost).
///
/// The pipes are watched only once the process has run for ``Reactor/shortDelay``. A
/// shorter one, the common case of many small commands, costs one wake-up at its exit: its
/// output is then read straight from the pipes (up to 64 KiB waits there meanwhile).
public final class ChildProcess {
    /// The process id (and process group id).
    public let pid: Int32
    public let spec: CommandSpec
    /// Why the group was terminated on purpose, if it was.
    public private(set) var terminationReason: String?
    public private(set) var exited = false
    public var running: Bool { !finished }
    /// Called after each read that adds to standard output (for readers that follow it as it
    /// comes: ``stdout(from:)``).
    public var onStdout: (() -> Void)?
    /// How many bytes of standard output have been read so far.
    public var stdoutCount: Int { result.stdout.count }
    /// The standard output read so far from byte `offset` on.
    public func stdout(from offset: Int) -> [UInt8] {
        offset < result.stdout.count ? Array(result.stdout[max(0, offset)...]) : []
    }

    private unowned let reactor: Reactor
    private var onExit: ((ProcessResult) -> Void)?
    private var result = ProcessResult()
    private let start: Double
    private var pidfd: Int32 = -1
    private var outFd: Int32, errFd: Int32, inFd: Int32
    /// The spawn, until the child no longer uses it (see ``releaseRequest()``).
    private var request: OpaquePointer?
    /// Why the child's exec failed (an errno), else 0.
    private var execError: Int32 = 0
    private var stdinData: [UInt8] = []
    private var stdinOffset = 0
    /// Whether more input may come (``write(_:)``), and whether the pipe is being watched.
    private var inputOpen = false
    private var inputWatched = false
    private var logFd: Int32 = -1
    private var timeoutTimer: Reactor.TimerID?
    private var killTimer: Reactor.TimerID?
    private var finished = false
    /// Whether the reactor watches the output pipes (else they are read at the exit).
    private var outputWatched = false
    private var groupSlot: Int32 = -1

    /// Starts `spec`. A command that cannot start is reported through `onExit` (code 127).
    ///
    /// - Returns: the process, or nil when it could not be started at all.
    @discardableResult
    public static func start(_ spec: CommandSpec, reactor: Reactor,
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
        let program: String
        switch reactor.resolveProgram(first) {
        case .path(let p): program = p
        case .failed(let e):
            onExit(.notStarted("cannot start \(first): \(errnoText(e))"))
            return nil
        }
        var out: [Int32] = [-1, -1], err: [Int32] = [-1, -1], inp: [Int32] = [-1, -1], logFd: Int32 = -1
        func closeAll() { for fd in out + err + inp + [logFd] where fd >= 0 { close(fd) } }
        // The read ends stay blocking: each epoll report is answered by exactly one read,
        // which saves a non-blocking switch and a final EAGAIN read per pipe.
        guard qw_pipe(&out, 0, 0) == 0, qw_pipe(&err, 0, 0) == 0,
              (spec.stdin == nil && !spec.stdinOpen) || qw_pipe(&inp, 0, 1) == 0
        else {
            let e = errno
            closeAll()
            onExit(.notStarted("cannot start \(first): \(errnoText(e))"))
            return nil
        }
        if let path = spec.logPath {
            logFd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            if logFd < 0 {
                let e = errno
                closeAll()
                onExit(.notStarted("cannot open log file '\(path)': \(errnoText(e))"))
                return nil
            }
        }
        // The request owns the child's ends of the pipes from here on.
        let cpuSeconds = spec.cpuTimeLimit.map { max(1, Int($0.rounded(.up))) } ?? 0
        let req = withCStrings(spec.argv) { argv in
            withEnvironment(spec) { envp in
                qw_spawn_req_new(program, program != first ? first : nil, argv, envp,
                                 spec.cwd, inp[0], out[1], err[1], cpuSeconds, reactor.spawnWithVfork ? 1 : 0)
            }
        }
        guard let req else {
            closeAll()
            onExit(.notStarted("cannot start \(first): out of memory"))
            return nil
        }
        let rc = qw_spawn_req_start(req)
        if rc != 0 {
            qw_spawn_req_free(req)
            for fd in [out[0], err[0], inp[1], logFd] where fd >= 0 { close(fd) }
            onExit(.notStarted("cannot start \(first): \(errnoText(rc))"))
            return nil
        }
        let child = ChildProcess(spec: spec, reactor: reactor, request: req, out: out[0], err: err[0], input: inp[1],
                                 log: logFd, onExit: onExit)
        child.started()
        return child
    }

    private init(spec: CommandSpec, reactor: Reactor, request: OpaquePointer, out: Int32, err: Int32, input: Int32,
                 log: Int32, onExit: @escaping (ProcessResult) -> Void) {
        self.spec = spec
        self.reactor = reactor
        self.start = monotonicSeconds()
        self.request = request
        self.pid = qw_spawn_req_pid(request)
        self.groupSlot = qw_spawn_req_slot(request)
        self.pidfd = qw_spawn_req_pidfd(request)
        self.outFd = out
        self.errFd = err
        self.inFd = input
        self.logFd = log
        self.onExit = onExit
        result.pid = pid
    }

    deinit {
        // a request still in use by its child is left to it (this cannot happen while the
        // reactor holds a running process)
        if let request, qw_spawn_req_done(request) != 0 { qw_spawn_req_free(request) }
    }

    private func started() {
        // The reactor's handlers hold the process strongly: a running process stays alive
        // until it has been reaped and its pipes are closed, whoever else keeps it.
        if pidfd >= 0 {
            reactor.watchOnce(pidfd, events: UInt32(QW_EPOLLIN)) { _ in
                self.reap()
                // under a tracer (strace -f, gdb) the exit is the tracer's to see first: the
                // pidfd is ready before wait4 has anything, and its one event is spent
                if !self.exited { self.pollExit() }
            }
        } else {
            // pidfd_open is unavailable (Linux before 5.3): poll for the exit instead.
            pollExit()
        }
        armTimeout()
        if inFd >= 0 { watchInput() }
        reactor.afterShortDelay { [weak self] in
            guard let self else { return }
            self.releaseRequest()
            self.watchOutput()
        }
    }

    /// Frees the spawn request once the child no longer uses it (it has exec'd or exited),
    /// noting what the child reported: a stale remembered path, a failed exec.
    private func releaseRequest() {
        guard let req = request, qw_spawn_req_done(req) != 0 else { return }
        if qw_spawn_req_used_fallback(req) != 0, let name = spec.argv.first { reactor.forgetProgram(name) }
        execError = qw_spawn_req_error(req)
        qw_spawn_req_free(req)
        request = nil
    }

    /// The timeout covers the whole group: members that outlive the leader and keep its
    /// output open are terminated too.
    private func armTimeout() { setTimeout(spec.timeout) }

    /// Terminates the group `seconds` from now, as the spec's timeout does (its result then
    /// says `timed_out`, code 124); nil: no timeout. Replaces the one set before.
    public func setTimeout(_ seconds: Double?) {
        if let t = timeoutTimer { reactor.cancel(t); timeoutTimer = nil }
        guard let t = seconds, !finished else { return }
        timeoutTimer = reactor.after(t) { [weak self] in
            guard let self else { return }
            self.timeoutTimer = nil
            if !self.finished {
                self.result.timedOut = true
                self.terminate(reason: "timed out after \(formatSeconds(t))")
            }
        }
    }

    private func watchInput() {
        stdinData = spec.stdin ?? []
        inputOpen = spec.stdinOpen
        if stdinData.isEmpty && !inputOpen {
            close(inFd)
            inFd = -1
        } else if !stdinData.isEmpty {
            watchInputPipe()
        }
    }

    private func watchInputPipe() {
        guard !inputWatched else { return }
        inputWatched = true
        reactor.watch(inFd, events: UInt32(QW_EPOLLOUT)) { _ in self.feed() }
    }

    /// Writes `bytes` to the standard input of a process started with `stdinOpen`, as the
    /// pipe takes them. False when its input is closed (or it has ended).
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        guard inFd >= 0, inputOpen, !finished else { return false }
        if bytes.isEmpty { return true }
        if stdinOffset > 0 { stdinData.removeFirst(stdinOffset); stdinOffset = 0 }
        stdinData.append(contentsOf: bytes)
        watchInputPipe()
        return true
    }

    /// Ends the standard input (the child reads end of file once what was written is read).
    public func closeInput() {
        guard inFd >= 0, inputOpen else { return }
        inputOpen = false
        if stdinOffset >= stdinData.count { endInput() }
    }

    private func endInput() {
        if inputWatched { reactor.unwatch(inFd); inputWatched = false }
        close(inFd)
        inFd = -1
        stdinData = []
        stdinOffset = 0
    }

    /// Watches the output pipes of a process that is still running.
    private func watchOutput() {
        guard !finished, !outputWatched else { return }
        outputWatched = true
        let IN = UInt32(QW_EPOLLIN), HUP = UInt32(QW_EPOLLHUP)
        if outFd >= 0 { reactor.watch(outFd, events: IN | HUP) { _ in self.drain(stdout: true) } }
        if errFd >= 0 { reactor.watch(errFd, events: IN | HUP) { _ in self.drain(stdout: false) } }
    }

    /// At the exit of a process whose pipes were not watched: reads what they hold and closes
    /// the ones no process writes to any more; the others (background members of the group
    /// still hold them) are watched until their end.
    private func collectOutputAtExit() {
        outputWatched = true
        var fds = [(fd: outFd, isOut: true), (fd: errFd, isOut: false)].filter { $0.fd >= 0 }
        var polls = fds.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        while !fds.isEmpty {
            var n: Int32
            repeat { n = poll(&polls, nfds_t(polls.count), 0) } while n < 0 && errno == EINTR
            var again: [(fd: Int32, isOut: Bool)] = []
            for (i, f) in fds.enumerated() {
                let re = Int32(polls[i].revents)
                if re & Int32(POLLIN) != 0 {
                    if read(into: f.isOut, from: f.fd) > 0 { again.append(f); continue }
                    endStream(stdout: f.isOut)  // end of file, or an error
                } else if n < 0 || re & Int32(POLLHUP | POLLERR | POLLNVAL) != 0 {
                    endStream(stdout: f.isOut)
                } else {
                    // still open for writing elsewhere: wait for its end
                    reactor.watch(f.fd, events: UInt32(QW_EPOLLIN) | UInt32(QW_EPOLLHUP)) { _ in self.drain(stdout: f.isOut) }
                }
            }
            fds = again
            polls = fds.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        }
    }

    /// Looks for the exit every 5 ms until it is there (the process stays alive meanwhile).
    private func pollExit() {
        reactor.after(0.005) {
            guard !self.exited else { return }
            self.reap()
            if !self.exited { self.pollExit() }
        }
    }

    private func feed() {
        while stdinOffset < stdinData.count {
            let n = stdinData.withUnsafeBytes { Glibc.write(inFd, $0.baseAddress! + stdinOffset, $0.count - stdinOffset) }
            if n > 0 { stdinOffset += n; continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { return }
            inputOpen = false  // EPIPE: the child does not read its input
            break
        }
        if inputOpen {
            // all written; more may come
            reactor.unwatch(inFd)
            inputWatched = false
            return
        }
        endInput()
    }

    private func drain(stdout isOut: Bool) {
        let fd = isOut ? outFd : errFd
        guard fd >= 0 else { return }
        // level-triggered: epoll reports again while more is waiting
        if read(into: isOut, from: fd) > 0 { return }
        endStream(stdout: isOut)  // end of file or an error
        finishIfDone()
    }

    /// One read from a readable pipe into the result (and the log); its count, 0 at the end.
    private func read(into isOut: Bool, from fd: Int32) -> Int {
        let buf = reactor.scratch
        var n: Int
        repeat { n = Glibc.read(fd, buf.baseAddress, buf.count) } while n < 0 && errno == EINTR
        if n > 0 {
            let chunk = UnsafeRawBufferPointer(rebasing: buf[0..<n])
            if isOut { result.stdout.append(contentsOf: chunk) } else { result.stderr.append(contentsOf: chunk) }
            if logFd >= 0 { _ = Glibc.write(logFd, chunk.baseAddress, n) }
            if isOut, let cb = onStdout { cb() }
        }
        return n
    }

    private func endStream(stdout isOut: Bool) {
        let fd = isOut ? outFd : errFd
        reactor.unwatch(fd)
        close(fd)
        if isOut { outFd = -1 } else { errFd = -1 }
    }

    private func reap() {
        var status: Int32 = 0
        var usage = rusage()
        let r = wait4(pid, &status, WNOHANG, &usage)
        guard r == pid else { return }
        exited = true
        if pidfd >= 0 {
            reactor.unwatch(pidfd)  // nothing to do when its one event came
            close(pidfd)
            pidfd = -1
        }
        releaseRequest()
        if execError != 0 { result.error = "cannot start \(spec.argv[0]): \(errnoText(execError))" }
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
        if !outputWatched { collectOutputAtExit() }
        finishIfDone()
    }

    private func finishIfDone() {
        guard exited, outFd < 0, errFd < 0, !finished else { return }
        finished = true
        if inFd >= 0 { inputOpen = false; endInput() }
        if logFd >= 0 { close(logFd); logFd = -1 }
        if let t = killTimer { reactor.cancel(t); killTimer = nil }
        if let t = timeoutTimer { reactor.cancel(t); timeoutTimer = nil }
        if result.timedOut { result.code = 124 }
        // Members of the group that outlived the leader stay tracked, so exit paths end them.
        if kill(-pid, 0) != 0 { qw_untrack_group(groupSlot, pid) }
        if result.error == nil {
            if let reason = terminationReason {
                result.error = reason
            } else if let s = result.signal, let limit = spec.cpuTimeLimit,
                      // RLIMIT_CPU sends SIGXCPU at the limit (the kernel's own clock, which
                      // rusage can read a little under), then SIGKILL a second later
                      s == SIGXCPU || (s == SIGKILL && result.cpuTime >= Double(max(1, Int(limit.rounded(.up)))) - 0.05) {
                result.error = "cpu time limit exceeded: used \(formatSeconds((result.cpuTime * 100).rounded() / 100)), limit \(formatSeconds(limit))"
            } else if let s = result.signal {
                result.error = "killed by signal \(s) (\(signalName(s)))"
            } else if result.code != 0 {
                result.error = "exited with code \(result.code)"
            }
        }
        onStdout = nil
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
        guard !finished else { return }
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
    // a variable given twice takes its last value
    var last: [String: Int] = [:]
    for (i, (k, _)) in spec.env.enumerated() { last[k] = i }
    for (i, (k, v)) in spec.env.enumerated() where last[k] == i { entries.append("\(k)=\(v)") }
    return withCStrings(entries) { body($0) }
}
