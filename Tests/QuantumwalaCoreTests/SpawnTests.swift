import CSystem
import Glibc
import Testing

@testable import QuantumwalaCore

/// The two ways a child is started (clone sharing qw's memory until exec, and vfork), each
/// through the same checks: what the child starts with, and how a failed exec is reported.
@Suite(.serialized)
struct SpawnTests {
    static let modes: [Bool] = [false, true]  // spawnWithVfork

    func reactor(vfork: Bool) -> Reactor {
        let r = Reactor()
        r.spawnWithVfork = vfork
        return r
    }

    @Test(arguments: modes) func outputInputEnvironmentAndDirectory(vfork: Bool) throws {
        var spec = CommandSpec.shell("read line; echo \"$line $QW_SPAWN_TEST $(pwd)\"; echo err >&2; exit 3")
        spec.stdin = Array("from-stdin\n".utf8)
        spec.env = [("QW_SPAWN_TEST", "from-env")]
        spec.cwd = "/tmp"
        let r = try run(spec, reactor: reactor(vfork: vfork))
        #expect(r.code == 3)
        #expect(text(r.stdout) == "from-stdin from-env /tmp\n")
        #expect(text(r.stderr) == "err\n")
        #expect(r.pid > 0)
    }

    @Test(arguments: modes) func signalsAreAtTheirDefaultsAndUnblocked(vfork: Bool) throws {
        _ = ignoreSIGPIPE  // this process ignores SIGPIPE, as qw does: the child must not
        let r = try run(CommandSpec(argv: ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]), reactor: reactor(vfork: vfork))
        #expect(r.ok)
        var masks: [String: UInt64] = [:]
        for line in text(r.stdout).split(separator: "\n") {
            let parts = line.split(separator: ":")
            if parts.count == 2 { masks[String(parts[0])] = UInt64(parts[1].filter { $0 != " " && $0 != "\t" }, radix: 16) }
        }
        #expect(masks["SigBlk"] == 0)
        let ignored = try #require(masks["SigIgn"])
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE] {
            #expect(ignored & (1 << UInt64(sig - 1)) == 0, "signal \(sig) is ignored in the child")
        }
    }

    @Test(arguments: modes) func childIsTheLeaderOfItsOwnGroup(vfork: Bool) throws {
        let r = try run(CommandSpec.shell("ps -o pgid= -p $$"), reactor: reactor(vfork: vfork))
        #expect(r.ok)
        #expect(Int32(text(r.stdout).filter { $0 != " " && $0 != "\n" }) == r.pid)
    }

    @Test(arguments: modes) func scriptWithoutAnInterpreterLineRunsWithSh(vfork: Bool) throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let script = dir + "/plain-script"
        try writeFile(script, "echo \"plain script got $1\"\n", mode: 0o755)
        let r = try run(CommandSpec(argv: [script, "an-argument"]), reactor: reactor(vfork: vfork))
        #expect(r.ok)
        #expect(text(r.stdout) == "plain script got an-argument\n")
    }

    /// A program whose file another process still holds open for writing (as a child started
    /// while the file was being written does, until its own exec): the exec is tried again
    /// until the writer lets go, instead of failing with "Text file busy".
    @Test(arguments: modes) func programBusyBeingWrittenStartsOnceTheWriterLetsGo(vfork: Bool) throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let script = dir + "/busy-script", fifo = dir + "/ready"
        try writeFile(script, "#!/bin/sh\necho started\n", mode: 0o755)
        #expect(mkfifo(fifo, 0o600) == 0)
        let reactor = reactor(vfork: vfork)
        let holderDone = Box<ProcessResult>()
        // holds the script open for writing, says so through the fifo, then lets go 0.3 s later
        let holder = ChildProcess.start(CommandSpec(argv: ["sh", "-c", "exec 3>>\"$0\"; echo held > \"$1\"; sleep 0.3", script, fifo]),
                                        reactor: reactor) { holderDone.value = $0 }
        let rd = open(fifo, O_RDONLY | O_CLOEXEC)  // returns once the holder has opened its end
        #expect(rd >= 0)
        var buf = [UInt8](repeating: 0, count: 16)
        #expect(read(rd, &buf, buf.count) > 0)
        close(rd)
        #expect(!qwCanExec(script), "the script should be busy while the holder has it open")
        let r = try run(CommandSpec(argv: [script]), reactor: reactor)
        #expect(r.ok, "\(r.error ?? "")")
        #expect(text(r.stdout) == "started\n")
        while holderDone.value == nil { reactor.runOnce(maxWait: 0.5) }
        withExtendedLifetime(holder) {}
    }

    @Test(arguments: modes) func failedExecIsReportedWithTheReason(vfork: Bool) throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let notExecutable = dir + "/not-executable"
        try writeFile(notExecutable, "echo never\n", mode: 0o644)
        let r = try run(CommandSpec(argv: [notExecutable]), reactor: reactor(vfork: vfork))
        #expect(r.code == 127)
        #expect(!r.ok)
        #expect(r.stdout.isEmpty)
        #expect(r.error == "cannot start \(notExecutable): \(errnoText(EACCES))")

        let missing = try run(CommandSpec(argv: [dir + "/missing"]), reactor: reactor(vfork: vfork))
        #expect(missing.code == 127)
        #expect(missing.error == "cannot start \(dir)/missing: \(errnoText(ENOENT))")
    }

    @Test func programThatIsNotRunnableFromPathIsRefusedAtOnce() throws {
        let r = Reactor()
        #expect(r.resolveProgram("qw-no-such-program-xyz") == .failed(errno: ENOENT))
        #expect(r.resolveProgram("sh") != .failed(errno: ENOENT))
        #expect(r.resolveProgram("./relative/path") == .path("./relative/path"))
    }

    /// A remembered path that has gone stale: the child looks the name up in PATH again.
    @Test(arguments: modes) func staleProgramPathFallsBackToAPathSearch(vfork: Bool) throws {
        var out: [Int32] = [-1, -1]
        #expect(qw_pipe(&out, 0, 0) == 0)
        defer { close(out[0]) }
        let argv = ["echo", "found", "again"]
        let req = try #require(withCStrings(argv) { a in
            qw_spawn_req_new("/nonexistent/qw-stale/echo", "echo", a, nil, nil, -1, out[1], -1, 0, vfork ? 1 : 0)
        })
        #expect(qw_spawn_req_start(req) == 0)
        let pid = qw_spawn_req_pid(req)
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        #expect(qw_spawn_req_done(req) != 0)
        #expect(qw_spawn_req_error(req) == 0)
        #expect(qw_spawn_req_used_fallback(req) != 0)
        let slot = qw_spawn_req_slot(req)
        if qw_spawn_req_pidfd(req) >= 0 { close(qw_spawn_req_pidfd(req)) }
        qw_spawn_req_free(req)
        qw_untrack_group(slot, pid)
        var buf = [UInt8](repeating: 0, count: 64)
        let n = buf.withUnsafeMutableBytes { read(out[0], $0.baseAddress, $0.count) }
        #expect(n > 0 && text(Array(buf[0..<max(n, 0)])) == "found again\n")
        #expect(status == 0)
    }

    /// Many children whose exec fails, started together: each reports its failure and
    /// nothing is left over.
    @Test(arguments: modes) func manyFailedExecsAtOnce(vfork: Bool) throws {
        let reactor = reactor(vfork: vfork)
        var results: [Int: ProcessResult] = [:]
        var children: [ChildProcess] = []
        for i in 0..<64 {
            let spec = CommandSpec(argv: i % 2 == 0 ? ["/etc/passwd"] : ["/nonexistent/\(i)"])
            if let c = ChildProcess.start(spec, reactor: reactor, onExit: { results[i] = $0 }) { children.append(c) }
        }
        let deadline = monotonicSeconds() + 15
        while results.count < 64 && monotonicSeconds() < deadline { reactor.runOnce(maxWait: 0.5) }
        #expect(results.count == 64)
        #expect(results.values.allSatisfy { $0.code == 127 && $0.error?.hasPrefix("cannot start /") == true })
        #expect(!reactor.hasWork)
        withExtendedLifetime(children) {}
    }
}

func writeFile(_ path: String, _ content: String, mode: mode_t) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    try #require(fd >= 0, "cannot create \(path)")
    defer { close(fd) }
    let bytes = Array(content.utf8)
    #expect(write(fd, bytes, bytes.count) == bytes.count)
}

/// Whether `path` can be exec'd right now: posix_spawn reports a failed exec, and tries once.
func qwCanExec(_ path: String) -> Bool {
    var pid: pid_t = 0
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    var argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
    defer { free(argv[0]) }
    let rc = posix_spawn(&pid, path, &actions, nil, &argv, environ)
    if rc == 0 { waitpid(pid, nil, 0) }
    return rc != ETXTBSY
}
