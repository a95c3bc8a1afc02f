import Glibc
import Testing

@testable import QuantumwalaCore

@Suite(.serialized)
struct ChildProcessTests {
    // MARK: Exit status

    @Test func exitZeroIsOk() throws {
        let r = try sh("exit 0")
        #expect(r.code == 0)
        #expect(r.ok)
        #expect(r.signal == nil)
        #expect(!r.timedOut)
        #expect(r.error == nil)
        #expect(r.pid > 0)
    }

    @Test func exitCodeThree() throws {
        let r = try sh("exit 3")
        #expect(r.code == 3)
        #expect(!r.ok)
        #expect(r.signal == nil)
        #expect(!r.timedOut)
        #expect(r.error == "exited with code 3")
    }

    @Test func highExitCode() throws {
        let r = try sh("exit 255")
        #expect(r.code == 255)
        #expect(!r.ok)
    }

    @Test func resultPidIsTheChildsPid() throws {
        let reactor = Reactor()
        let box = Box<ProcessResult>()
        let child = try #require(ChildProcess.start(.shell("exit 0"), reactor: reactor) { box.value = $0 })
        #expect(child.running)
        while box.value == nil { reactor.runOnce(maxWait: 1) }
        #expect(box.value?.pid == child.pid)
        #expect(child.exited)
        #expect(!child.running)
    }

    @Test func killedBySignal() throws {
        let r = try sh("kill -TERM $$")
        #expect(r.signal == 15)
        #expect(r.code == 143)
        #expect(!r.ok)
        #expect(!r.timedOut)
        let error = try #require(r.error)
        #expect(error.contains("SIGTERM"))
        #expect(error.contains("15"))
    }

    @Test func sendDeliversASignalToTheGroup() throws {
        let reactor = Reactor()
        let box = Box<ProcessResult>()
        let child = try #require(ChildProcess.start(CommandSpec(argv: ["sleep", "100"]), reactor: reactor) { box.value = $0 })
        reactor.after(0.05) { child.send(SIGKILL) }
        let deadline = monotonicSeconds() + 10
        while box.value == nil && monotonicSeconds() < deadline { reactor.runOnce(maxWait: 0.5) }
        let r = try #require(box.value)
        #expect(r.signal == 9)
        #expect(r.code == 137)
        #expect(r.error == "killed by signal 9 (SIGKILL)")
    }

    // MARK: Output

    @Test func stdoutAndStderrAreSeparate() throws {
        let r = try sh("echo to-out; echo to-err >&2; printf more-out")
        #expect(text(r.stdout) == "to-out\nmore-out")
        #expect(text(r.stderr) == "to-err\n")
        #expect(r.ok)
    }

    @Test func largeOutputOnBothStreamsAtOnce() throws {
        // Both writers run at the same time; if either pipe were not drained while the
        // other fills, the child would block forever.
        let outSize = 6_000_000, errSize = 4_000_000
        let r = try sh("yes e | head -c \(errSize) >&2 & head -c \(outSize) /dev/zero; wait")
        #expect(r.ok)
        #expect(r.stdout.count == outSize)
        #expect(r.stderr.count == errSize)
        #expect(r.stdout.allSatisfy { $0 == 0 })
        #expect(r.stderr.prefix(4) == [UInt8(ascii: "e"), 10, UInt8(ascii: "e"), 10])
        #expect(r.stderr.filter { $0 == 10 }.count == errSize / 2)
    }

    @Test func outputOfABackgroundMemberAfterTheLeaderExits() throws {
        let start = monotonicSeconds()
        let r = try sh("(sleep 0.2; echo late) & echo early")
        let elapsed = monotonicSeconds() - start
        #expect(text(r.stdout) == "early\nlate\n")
        #expect(r.ok)
        // the result waited for the pipes to close; duration is the leader's own time
        #expect(elapsed >= 0.2)
        #expect(r.duration < elapsed)
    }

    // MARK: Standard input

    @Test func stdinByteCount() throws {
        var spec = CommandSpec(argv: ["wc", "-c"])
        spec.stdin = Array(repeating: UInt8(ascii: "a"), count: 12345)
        let r = try run(spec)
        #expect(r.ok)
        #expect(text(r.stdout).filter { $0 != " " && $0 != "\n" } == "12345")
    }

    @Test func stdinBinaryEchoedExactly() throws {
        var data: [UInt8] = []
        for i in 0..<4096 { data.append(UInt8(truncatingIfNeeded: i * 7)); if i % 5 == 0 { data.append(0) } }
        var spec = CommandSpec(argv: ["cat"])
        spec.stdin = data
        let r = try run(spec)
        #expect(r.ok)
        #expect(r.stdout == data)
        #expect(r.stdout.contains(0))
        #expect(r.stderr.isEmpty)
    }

    @Test func largeStdinEchoedWhileOutputIsRead() throws {
        // 3 MB in and 3 MB out at the same time: stdin must be fed while stdout is drained.
        let data = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
        var spec = CommandSpec(argv: ["cat"])
        spec.stdin = data
        let r = try run(spec)
        #expect(r.ok)
        #expect(r.stdout.count == data.count)
        #expect(r.stdout == data)
    }

    @Test func largeStdinToAProgramThatIgnoresIt() throws {
        var spec = CommandSpec(argv: ["true"])
        spec.stdin = [UInt8](repeating: 0x41, count: 5_000_000)
        spec.timeout = 10
        let r = try run(spec)
        #expect(r.ok)
        #expect(r.code == 0)
        #expect(!r.timedOut)
        #expect(r.duration < 5)
    }

    @Test func emptyStdinGivesEOF() throws {
        var spec = CommandSpec(argv: ["wc", "-c"])
        spec.stdin = []
        let r = try run(spec)
        #expect(r.ok)
        #expect(text(r.stdout).filter { $0 != " " && $0 != "\n" } == "0")
    }

    @Test func noStdinIsDevNull() throws {
        let r = try run(CommandSpec(argv: ["cat"]))
        #expect(r.ok)
        #expect(r.stdout.isEmpty)
    }

    // MARK: Environment

    @Test func envVariableAdded() throws {
        let r = try sh("echo \"$QW_TEST_FOO\"") { $0.env = [("QW_TEST_FOO", "bar baz")] }
        #expect(text(r.stdout) == "bar baz\n")
    }

    @Test func aVariableGivenTwiceTakesItsLastValue() throws {
        let r = try sh("echo \"$QW_TEST_TWICE\"; env | grep -c '^QW_TEST_TWICE='") {
            $0.env = [("QW_TEST_TWICE", "first"), ("QW_TEST_OTHER", "x"), ("QW_TEST_TWICE", "second")]
        }
        #expect(text(r.stdout) == "second\n1\n")
    }

    @Test func envOverridesAnInheritedVariable() throws {
        let inherited = try #require(getenv("PATH").map { String(cString: $0) })
        let plain = try sh("echo \"$PATH\"")
        #expect(text(plain.stdout) == inherited + "\n")

        let replaced = "/qw-test-path:" + inherited
        let r = try run({ var s = CommandSpec(argv: ["env"]); s.env = [("PATH", replaced)]; return s }())
        #expect(r.ok)
        let lines = text(r.stdout).split(separator: "\n")
        let pathLines = lines.filter { $0.hasPrefix("PATH=") }
        #expect(pathLines.map(String.init) == ["PATH=" + replaced])
        // the rest of the environment is still inherited
        #expect(lines.count > 1)
    }

    @Test func clearEnvKeepsOnlyTheGivenVariables() throws {
        var spec = CommandSpec(argv: ["env"])
        spec.clearEnv = true
        spec.env = [("A", "1"), ("B", "two words"), ("C", "")]
        let r = try run(spec)
        #expect(r.ok)
        #expect(text(r.stdout) == "A=1\nB=two words\nC=\n")
    }

    @Test func clearEnvWithNothingGivesAnEmptyEnvironment() throws {
        var spec = CommandSpec(argv: ["env"])
        spec.clearEnv = true
        let r = try run(spec)
        #expect(r.ok)
        #expect(r.stdout.isEmpty)
    }

    // MARK: Working directory

    @Test func cwdIsUsed() throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        var spec = CommandSpec(argv: ["pwd", "-P"])
        spec.cwd = dir
        let r = try run(spec)
        #expect(r.ok)
        #expect(text(r.stdout) == dir + "\n")
    }

    @Test func nonexistentCwdIs127() throws {
        var spec = CommandSpec(argv: ["pwd"])
        spec.cwd = "/nonexistent/qw-test-dir"
        let r = try run(spec)
        #expect(r.code == 127)
        #expect(!r.ok)
        let error = try #require(r.error)
        #expect(error.contains("/nonexistent/qw-test-dir"))
    }

    @Test func cwdThatIsAFileIs127() throws {
        var spec = CommandSpec(argv: ["pwd"])
        spec.cwd = "/etc/passwd"
        let r = try run(spec)
        #expect(r.code == 127)
        #expect(r.error?.contains("/etc/passwd") == true)
    }

    // MARK: Not started

    @Test func programNotFound() throws {
        let reactor = Reactor()
        let box = Box<ProcessResult>()
        let child = ChildProcess.start(CommandSpec(argv: ["qw-no-such-program-xyz", "arg"]), reactor: reactor) { box.value = $0 }
        // reported right away, without running the reactor
        #expect(child == nil)
        let r = try #require(box.value)
        #expect(r.code == 127)
        #expect(!r.ok)
        let error = try #require(r.error)
        #expect(error.contains("qw-no-such-program-xyz"))
        #expect(!reactor.hasWork)
    }

    @Test func emptyCommand() throws {
        let r = try run(CommandSpec(argv: []))
        #expect(r.code == 127)
        #expect(r.error == "empty command")
        let r2 = try run(CommandSpec(argv: [""]))
        #expect(r2.code == 127)
    }

    @Test func unopenableLogFile() throws {
        var spec = CommandSpec.shell("echo hi")
        spec.logPath = "/nonexistent/qw-dir/log.txt"
        let r = try run(spec)
        #expect(r.code == 127)
        #expect(r.error?.contains("/nonexistent/qw-dir/log.txt") == true)
    }

    // MARK: Timeouts and termination

    @Test func timeoutKillsTheWholeGroup() throws {
        // The background sleeps do not hold the output pipes, so the result arrives when the
        // shell dies; they are gone only if the whole group was signalled.
        let r = try sh("sleep 100 >/dev/null 2>&1 & sleep 100 >/dev/null 2>&1 & wait") { $0.timeout = 0.3 }
        defer { kill(-r.pid, SIGKILL) }
        #expect(r.timedOut)
        #expect(r.code == 124)
        #expect(!r.ok)
        #expect(r.signal == 15)
        #expect(r.error?.contains("timed out") == true)
        #expect(r.duration >= 0.3)
        #expect(r.duration < 5)
        #expect(r.pid > 0)
        let survivors = waitForGroupGone(r.pid)
        #expect(survivors.isEmpty, "group \(r.pid) still has \(survivors)")
    }

    @Test func timeoutWithMembersHoldingThePipes() throws {
        let r = try sh("sleep 100 & sleep 100 & wait") { $0.timeout = 0.3 }
        defer { kill(-r.pid, SIGKILL) }
        #expect(r.timedOut)
        #expect(r.code == 124)
        #expect(r.duration < 5)
        #expect(waitForGroupGone(r.pid).isEmpty)
    }

    @Test func timeoutMessage() throws {
        let r = try run({ var s = CommandSpec(argv: ["sleep", "100"]); s.timeout = 0.25; return s }())
        #expect(r.error == "timed out after 0.25s")
        #expect(r.code == 124)
        #expect(r.timedOut)
    }

    @Test func sigtermIgnoredThenSIGKILLAfterGrace() throws {
        let r = try sh("trap '' TERM; while :; do :; done") {
            $0.timeout = 0.2
            $0.killGrace = 0.3
        }
        defer { kill(-r.pid, SIGKILL) }
        #expect(r.signal == 9)
        #expect(r.timedOut)
        #expect(r.code == 124)
        #expect(r.duration >= 0.45)
        #expect(r.duration < 5)
        #expect(r.error?.contains("timed out") == true)
    }

    @Test func stoppedProcessIsContinuedAndTerminated() throws {
        let r = try sh("kill -STOP $$; echo never") { $0.timeout = 0.2 }
        defer { kill(-r.pid, SIGKILL) }
        #expect(r.timedOut)
        #expect(r.signal == 15)
        #expect(r.stdout.isEmpty)
        #expect(r.duration < 2)
    }

    @Test func processFinishingBeforeTimeoutIsNotTimedOut() throws {
        let r = try sh("echo quick") { $0.timeout = 5 }
        #expect(r.ok)
        #expect(!r.timedOut)
        #expect(r.duration < 4)
    }

    @Test func terminateFromOutside() throws {
        let reactor = Reactor()
        let box = Box<ProcessResult>()
        let child = try #require(ChildProcess.start(CommandSpec(argv: ["sleep", "100"]), reactor: reactor) { box.value = $0 })
        reactor.after(0.1) { child.terminate(reason: "stopped by the test") }
        let deadline = monotonicSeconds() + 10
        while box.value == nil && monotonicSeconds() < deadline { reactor.runOnce(maxWait: 0.5) }
        let r = try #require(box.value)
        #expect(r.error == "stopped by the test")
        #expect(child.terminationReason == "stopped by the test")
        #expect(r.signal == 15)
        #expect(r.code == 143)
        #expect(!r.timedOut)
        #expect(!r.ok)
        #expect(r.duration >= 0.1)
        // the kill timer was cancelled: nothing is left for the reactor to do
        #expect(!reactor.hasWork)
        // terminating a finished process does nothing
        child.terminate(reason: "again")
        #expect(child.terminationReason == "stopped by the test")
    }

    @Test func groupMembersAreSeenThenGoneAfterTerminate() throws {
        // Checks the /proc probe used above: while running, the shell and both sleeps are
        // members of the child's group; after terminate, none is left.
        let reactor = Reactor()
        let box = Box<ProcessResult>()
        let spec = CommandSpec.shell("sleep 100 >/dev/null 2>&1 & sleep 100 >/dev/null 2>&1 & wait")
        let child = try #require(ChildProcess.start(spec, reactor: reactor) { box.value = $0 })
        defer { kill(-child.pid, SIGKILL) }
        var members: [Int32] = []
        let probeDeadline = monotonicSeconds() + 5
        while members.count < 3 && monotonicSeconds() < probeDeadline {
            reactor.runOnce(maxWait: 0.01)
            members = liveMembers(ofGroup: child.pid)
        }
        #expect(members.count == 3)
        #expect(members.contains(child.pid))
        child.terminate(reason: "probe done")
        let deadline = monotonicSeconds() + 10
        while box.value == nil && monotonicSeconds() < deadline { reactor.runOnce(maxWait: 0.5) }
        #expect(box.value?.error == "probe done")
        #expect(waitForGroupGone(child.pid).isEmpty)
    }

    @Test func timeoutAppliesToMembersThatOutliveTheLeader() throws {
        // The leader exits at once; a background member keeps stdout open. The timeout
        // still ends the group, and the result says it timed out.
        let start = monotonicSeconds()
        let r = try run({ var s = CommandSpec.shell("sleep 30 & echo leader-done"); s.timeout = 0.3; return s }(), limit: 2)
        let elapsed = monotonicSeconds() - start
        defer { kill(-r.pid, SIGKILL) }
        #expect(text(r.stdout) == "leader-done\n")
        #expect(elapsed < 1.5)
        #expect(r.timedOut)
        #expect(r.code == 124)
    }

    // MARK: Accounting

    @Test func durationMatches() throws {
        let r = try run(CommandSpec(argv: ["sleep", "0.2"]))
        #expect(r.ok)
        #expect(r.duration >= 0.2)
        #expect(r.duration < 3)
    }

    @Test func maxRSSAndCPUTime() throws {
        let r = try sh("exit 0")
        #expect(r.maxRSS > 0)
        #expect(r.cpuTime >= 0)
        #expect(r.cpuTime <= r.duration + 0.5)
    }

    @Test func maxRSSIsTheChildsOwn() throws {
        // The child is started with clone(CLONE_VM) (or vfork): until exec it shares qw's
        // address space, and at exec the kernel folds that address space's high-water RSS
        // into the child's maxrss. So `true` reports at least qw's own peak.
        let size = 128 << 20
        let p = try #require(malloc(size))
        memset(p, 1, size)
        let r = try run(CommandSpec(argv: ["true"]))
        free(p)
        #expect(r.ok)
        #expect(r.maxRSS > 0)
        withKnownIssue("maxRSS includes the parent's resident size (vfork-style spawn)") {
            #expect(r.maxRSS < 64 << 20)
        }
    }

    @Test func cpuBurningLoopHasCPUTime() throws {
        let r = try sh("while :; do :; done") { $0.timeout = 0.3 }
        #expect(r.timedOut)
        #expect(r.cpuTime > 0.05)
        #expect(r.maxRSS > 0)
    }

    // MARK: Log file

    @Test func logFileGetsBothStreams() throws {
        let dir = try makeTempDir()
        defer { removeTree(dir) }
        let log = dir + "/run.log"
        let fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = "previous\n".withCString { write(fd, $0, 9) }
        close(fd)
        let r = try sh("echo out-line; echo err-line >&2") { $0.logPath = log }
        #expect(r.ok)
        #expect(text(r.stdout) == "out-line\n")
        #expect(text(r.stderr) == "err-line\n")
        let content = try #require(readSmallFile(log))
        // appended, not truncated
        #expect(content.hasPrefix("previous\n"))
        #expect(content.contains("out-line\n"))
        #expect(content.contains("err-line\n"))
        #expect(content.count == "previous\nout-line\nerr-line\n".count)
    }

    // MARK: Many at once

    @Test func manyProcessesAtOnce() throws {
        _ = ignoreSIGPIPE
        let reactor = Reactor()
        let count = 200
        var results: [Int: ProcessResult] = [:]
        var children: [ChildProcess] = []
        for i in 0..<count {
            var spec = CommandSpec(argv: i % 2 == 0 ? ["true"] : ["sh", "-c", "echo \(i)"])
            spec.name = "p\(i)"
            if let c = ChildProcess.start(spec, reactor: reactor, onExit: { results[i] = $0 }) { children.append(c) }
        }
        #expect(children.count == count)
        let deadline = monotonicSeconds() + 15
        while results.count < count && monotonicSeconds() < deadline { reactor.runOnce(maxWait: 0.5) }
        #expect(results.count == count)
        #expect(results.values.allSatisfy { $0.ok })
        for i in stride(from: 1, to: count, by: 2) {
            #expect(results[i].map { text($0.stdout) } == "\(i)\n")
        }
        #expect(Set(results.values.map(\.pid)).count == count)
        #expect(!reactor.hasWork)
        withExtendedLifetime(children) {}
    }
}
