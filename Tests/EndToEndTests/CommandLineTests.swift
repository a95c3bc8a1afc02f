import Glibc
import QuantumwalaCore
import Testing

/// `qw run`, `qw -e`, scripts on stdin: exit codes, messages, signals, limits.
@Suite(.serialized)
struct CommandLineTests {
    @Test func chunkFromTheCommandLine() {
        let r = qw(["-e", "print(1 + 1, qw.version)"])
        #expect(r.code == 0)
        #expect(r.stdout.hasPrefix("2\t"))
    }

    /// A fresh qw has a CPU reading at once (a baseline taken at start, the first reading
    /// over at least 50 ms), even before admission has sampled anything.
    @Test func cpuPercentIsANumberInAFreshProcess() {
        let r = qw(["-e", "local c = qw.resources().cpu_percent; print(math.type(c) ~= nil and c >= 0 and c <= 100, qw.resources().cpu_percent ~= nil)"])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout == "true\ttrue\n")
    }

    /// Global options go before the command or after `run`; whatever follows the script is
    /// the script's, options included.
    @Test func globalOptionsBeforeOrAfterRun() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/args.lua", "print(select('#', ...), ...)\n")
        for form in [["run", "args.lua"], ["run", "--time-limit", "30", "args.lua"], ["--time-limit=30", "run", "args.lua"],
                     ["-v", "run", "--lua-memory", "64M", "--state", dir + "/s.db", "args.lua"]] {
            let r = qw(form + ["--x", "-e", "y"], cwd: dir)
            #expect(r.code == 0, "\(form): \(r.stderr)")
            #expect(r.stdout == "3\t--x\t-e\ty\n", "\(form)")
        }
        #expect(qw(["--max-concurrent", "2", "-e", "io.write(qw.resources().slots_total)", "-e", "io.write(2)"]).stdout == "22")
        let bad = qw(["-e", "print(1)", "stray"])
        #expect(bad.code != 0)
        #expect(bad.stderr.contains("stray"))
        let invalid = qw(["run", "--time-limit", "-1", "args.lua"], cwd: dir)
        #expect(invalid.code == 64)
        #expect(invalid.stderr.contains("--time-limit must be a positive number of seconds"))
        let unknown = qw(["run", "--no-such-option", "args.lua"], cwd: dir)
        #expect(unknown.code == 64)
        #expect(unknown.stderr.contains("no-such-option"))
    }

    @Test func versionFlag() {
        let r = qw(["--version"])
        #expect(r.code == 0)
        #expect(r.stdout.contains("0."))
    }

    @Test func runsAScriptWithArguments() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/args.lua", """
            local a, b = ...
            print(a, b, arg[0] ~= nil, #qw.args, qw.args[2])
            """)
        let r = qw(["run", dir + "/args.lua", "one", "--two"])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout == "one\t--two\ttrue\t2\t--two\n")
    }

    @Test func luaErrorNamesFileAndLineAndExitsOne() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/bad.lua", "local x = 1\nerror('boom')\n")
        let r = qw(["run", "bad.lua"], cwd: dir)
        #expect(r.code == 1)
        #expect(r.stderr.contains("bad.lua:2: boom"))
        #expect(r.stderr.contains("stack traceback:"))
    }

    @Test func syntaxErrorNamesFileAndLine() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/syntax.lua", "print('ok')\nlocal = 3\n")
        let r = qw(["run", "syntax.lua"], cwd: dir)
        #expect(r.code == 1)
        #expect(r.stderr.contains("syntax.lua:2:"))
        #expect(!r.stdout.contains("ok"), "nothing runs when the script does not parse")
    }

    @Test func missingScriptIsAClearError() {
        let r = qw(["run", "/nonexistent/missing.lua"])
        #expect(r.code == 1)
        #expect(r.stderr.contains("cannot open /nonexistent/missing.lua"))
    }

    @Test(arguments: [("os.exit(3)", Int32(3)), ("os.exit(true)", 0), ("os.exit(false)", 1), ("print('x')", 0)])
    func exitCodes(code: String, expected: Int32) {
        #expect(qw(["-e", code]).code == expected)
    }

    @Test func scriptOnStandardInput() {
        let r = qw([], stdin: "local r = qw.exec{'echo', 'piped'}\nio.write(r.stdout)\n")
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout == "piped\n")
    }

    @Test func runawayLoopStoppedByTimeLimit() {
        let r = qw(["--time-limit", "0.5", "-e", "while true do end"])
        #expect(r.code == 1)
        #expect(r.stderr.contains("time limit exceeded"))
    }

    @Test func timeLimitEndsWaitingCommandsToo() {
        let r = qw(["--time-limit", "0.5", "-e", "qw.exec{'sleep', '1001' .. '.5'}"])
        #expect(r.code == 1)
        #expect(r.stderr.contains("time limit exceeded"))
        #expect(noneLeft(matching: "1001.5"))
    }

    @Test func memoryBombStopped() {
        let r = qw(["--lua-memory", "64M", "-e", "local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(4096) .. i end"])
        #expect(r.code == 1)
        #expect(r.stderr.contains("not enough memory"))
    }

    @Test func badOptionValueIsAClearError() {
        let r = qw(["--lua-memory", "lots", "-e", "print(1)"])
        #expect(r.code != 0)
        #expect(r.stderr.contains("--lua-memory"))
    }

    @Test func interruptEndsChildProcesses() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/batch.lua", """
            io.write("started\\n"); io.flush()
            qw.batch({ {"sleep", "1002.5"}, {"sleep", "1002.5"}, function() return qw.exec{"sleep", "1002.5"} end })
            """)
        // Ctrl-C (SIGINT) to qw alone, not its group, once the three sleeps run
        let result = try signalWhenRunning([qwBinary, "run", dir + "/batch.lua"], marker: "1002.5", count: 3, signal: SIGINT)
        #expect(result.code == 1)
        let stderr = String(decoding: result.stderr, as: UTF8.self)
        #expect(stderr.contains("interrupted"))
        #expect(!stderr.contains("traceback"), "Ctrl-C is not a bug to trace: \(stderr)")
        #expect(noneLeft(matching: "1002.5"))
    }

    @Test func terminationEndsChildProcesses() throws {
        let code = "local t = '1003' .. '.5'; local h = qw.spawn{'sleep', t}; qw.exec{'sleep', t}"
        let result = try signalWhenRunning([qwBinary, "-e", code], marker: "1003.5", count: 2, signal: SIGTERM)
        #expect(result.signal == SIGTERM)
        #expect(noneLeft(matching: "1003.5"))
    }

    /// Starts `argv`, waits until `count` processes matching `marker` run, sends `signal` to
    /// that process alone, and returns its result.
    private func signalWhenRunning(_ argv: [String], marker: String, count: Int, signal: Int32) throws -> ProcessResult {
        var spec = CommandSpec(argv: argv)
        spec.env = qwTestEnv
        let reactor = Reactor()
        var result: ProcessResult?
        let child = try #require(ChildProcess.start(spec, reactor: reactor) { result = $0 })
        let deadline = monotonicSeconds() + 10
        while livePids(matching: marker).count < count && monotonicSeconds() < deadline { reactor.runOnce(maxWait: 0.02) }
        #expect(livePids(matching: marker).count == count)
        kill(child.pid, signal)
        while result == nil { reactor.runOnce() }
        return result!
    }

    /// Under a low soft open-file limit qw runs 100 commands at once (three fds each), while
    /// each command still starts with the limit qw was given.
    @Test func aLowOpenFileLimitDoesNotStopManyCommandsAtOnce() throws {
        let code = """
            qw.limits{ max_concurrent = 100 }
            local items = {}
            for i = 1, 100 do items[i] = { "sleep", "0.2" } end
            local ok = 0
            for _, r in ipairs(qw.batch(items)) do if r.ok then ok = ok + 1 end end
            print(ok, qw.exec{ "sh", "-c", "ulimit -Sn" }.stdout)
            """
        // (the hard limit stays as it is: qw needs 300 or more of it)
        let r = qwShell("ulimit -Sn 64 && NO_COLOR=1 QW_RUNTIME_DIR='\(testRuntimeDir)' '\(qwBinary)' -e '\(code)' 2>&1")
        #expect(r == "100\t64\n\n")
    }

    @Test func logLevelsAndVerbose() {
        let quiet = qw(["-e", "qw.log.info('starting', 3); qw.log.warn('careful'); qw.log.debug('details')"])
        #expect(quiet.code == 0)
        #expect(quiet.stderr == "info: starting 3\nwarn: careful\n")
        let verbose = qw(["--verbose", "-e", "qw.log.debug('details')"])
        #expect(verbose.stderr == "debug: details\n")
    }

    @Test func resourcesCommandAndPolicyFile() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/.qw'")
        writeFile(dir + "/.qw/policy.lua", "qw.limits{ max_concurrent = 5, memory_percent = 50 }\n")
        let table = qw(["resources"], cwd: dir)
        #expect(table.code == 0, "\(table.stderr)")
        #expect(table.stdout.contains("max_concurrent    5"))
        #expect(table.stdout.contains("memory_percent    50 %"))
        #expect(table.stdout.contains("cpu busy now"))
        let json = qw(["resources", "--json", "--max-concurrent", "3"], cwd: dir)
        #expect(json.code == 0)
        #expect(json.stdout.contains("\"max_concurrent\": 3"), "the command line wins over the policy file")
        #expect(json.stdout.contains("\"memory_percent\": 50.0"))
        writeFile(dir + "/.qw/policy.lua", "qw.limits{ max_concurent = 5 }\n")
        let bad = qw(["-e", "print('never')"], cwd: dir)
        #expect(bad.code == 1)
        #expect(bad.stderr.contains(".qw/policy.lua:1: qw.limits: unknown limit 'max_concurent'"))
        #expect(!bad.stdout.contains("never"))
    }

    @Test func helloExampleRuns() {
        let r = qw(["run", repoRoot + "/examples/hello.lua"])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.contains("hello from a child process"))
    }

    @Test func resourcesExampleRuns() {
        let r = qw(["run", repoRoot + "/examples/resources.lua"])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.contains("4. hog: ok = false, memory limit exceeded: used"))
        #expect(r.stdout.contains("neighbour: ok = true, neighbour done"))
        #expect(r.stdout.contains("6. after all that: 0 slots in use, 0 MiB granted"))
    }

    @Test func workflowExampleStopsAndResumes() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let first = qw(["run", repoRoot + "/examples/workflow.lua"], env: [("BREAK", "1")], cwd: dir)
        #expect(first.code == 1)
        #expect(first.stdout.contains("FAILED   package"))
        #expect(first.stdout.contains("skipped  publish"))
        #expect(first.stdout.contains("passed on try 2"), "the flaky step was healed by its retry policy")
        let status = qw(["status", "demo-release"], cwd: dir)
        #expect(status.stdout.contains("package           failed"))
        let resumed = qw(["resume", "demo-release"], cwd: dir)
        #expect(resumed.code == 0, "\(resumed.stderr)")
        #expect(resumed.stdout.contains("ok       publish"))
        let after = qw(["status", "--json"], cwd: dir)
        #expect(after.stdout.contains("\"succeeded\": 6"))
        #expect(readText(dir + "/.qw/state.db") != nil)
    }

    /// The incremental build example: a second run compiles nothing, a touched source
    /// changes nothing, an edited one rebuilds its object and program, a deleted program is
    /// made again.
    @Test func incrementalBuildExampleRebuildsWhatChanged() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let example = repoRoot + "/examples/incremental-build.lua"
        func build() -> Outcome { qw(["--state", dir + "/state.db", "run", example, dir + "/b"], timeout: 120) }
        let first = build()
        #expect(first.code == 0, "\(first.stdout)\(first.stderr)")
        #expect(first.stdout.hasPrefix("10 of 10 tasks to run"))
        #expect(access(dir + "/b/bin/fib", X_OK) == 0)
        #expect(build().stdout.hasPrefix("0 of 10 tasks to run"))
        qwShell("touch '\(dir)/b/src/fib.c'")
        #expect(build().stdout.hasPrefix("0 of 10 tasks to run"))
        qwShell("echo '/* edited */' >> '\(dir)/b/src/fib.c'; rm '\(dir)/b/bin/sort'")
        let again = build()
        #expect(again.code == 0)
        #expect(again.stdout.hasPrefix("3 of 10 tasks to run"))
        #expect(again.stdout.contains("fib.o        input changed: src/fib.c"))
        #expect(again.stdout.contains("fib          dependency re-run: fib.o"))
        #expect(again.stdout.contains("sort         output missing: bin/sort"))
        #expect(access(dir + "/b/bin/sort", X_OK) == 0)
    }

    @Test func parallelBuildExampleRuns() {
        let r = qw(["run", repoRoot + "/examples/parallel-build.lua"], timeout: 120)
        #expect(r.code == 0, "stdout:\n\(r.stdout)\nstderr:\n\(r.stderr)")
    }
}

/// An installed copy (PREFIX/bin/qw with PREFIX/share/qw/stdlib) uses its own stdlib.
@Suite struct InstalledCopyTests {
    @Test func installedCopyFindsItsStdlib() throws {
        let prefix = makeTempDir()
        defer { removeTree(prefix) }
        qwShell("""
            mkdir -p '\(prefix)/bin' '\(prefix)/share/qw' && cp '\(qwBinary)' '\(prefix)/bin/qw' \
            && cp -R '\(repoRoot)/stdlib' '\(prefix)/share/qw/stdlib' \
            && echo 'return "installed copy"' > '\(prefix)/share/qw/stdlib/qw/where.lua'
            """)
        var spec = CommandSpec(argv: [prefix + "/bin/qw", "-e", "print(require('qw.where'), qw.retry ~= nil)"])
        spec.env = [("QW_STDLIB", "")] + qwTestEnv
        let reactor = Reactor()
        var result: ProcessResult?
        ChildProcess.start(spec, reactor: reactor) { result = $0 }
        while result == nil { reactor.runOnce() }
        #expect(String(decoding: result!.stdout, as: UTF8.self) == "installed copy\ttrue\n",
                "\(String(decoding: result!.stderr, as: UTF8.self))")
    }

    /// The stdlib's modules load through the cache of compiled chunks, as init.lua does: an
    /// edited module is compiled again, and its errors still name its file and line.
    @Test func stdlibModulesAreCompiledOnceAndAgainWhenEdited() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("cp -R '\(repoRoot)/stdlib' '\(dir)/stdlib' && mkdir '\(dir)/cache'")
        let env = [("QW_STDLIB", dir + "/stdlib"), ("XDG_CACHE_HOME", dir + "/cache"), ("QW_STATE", dir + "/state.db")]
        func cached() -> Int { Int(qwShell("ls '\(dir)/cache/qw' | grep -c luac").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1 }
        let first = qw(["-e", "print(qw.state.get('x'))"], env: env)
        #expect(first.stdout == "nil\n", "\(first.stderr)")
        let afterFirst = cached()
        #expect(afterFirst >= 2, "init.lua and state.lua compiled: \(afterFirst)")
        #expect(qw(["-e", "print(qw.state.get('x'))"], env: env).stdout == "nil\n")
        #expect(cached() == afterFirst, "the second start compiled nothing")
        qwShell("sed -i '1i print(\"edited\")' '\(dir)/stdlib/qw/state.lua'")
        #expect(qw(["-e", "qw.state.get('x')"], env: env).stdout == "edited\n")
        qwShell("sed -i '1c local broken = = 1' '\(dir)/stdlib/qw/state.lua'")
        let bad = qw(["-e", "qw.state.get('x')"], env: env)
        #expect(bad.code == 1)
        #expect(bad.stderr.contains("stdlib/qw/state.lua:1:"), "\(bad.stderr)")
    }
}

/// The state store shared by several qw processes at once.
@Suite(.serialized) struct StateProcessTests {
    @Test func concurrentUpdatesFromFourProcessesLoseNothing() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let reactor = Reactor()
        var results: [ProcessResult] = []
        for _ in 0..<4 {
            var spec = CommandSpec(argv: [qwBinary, "--state", dir + "/s.db", "-e",
                                          "for i = 1, 500 do qw.state.update('count', function(n) return (n or 0) + 1 end) end"])
            spec.timeout = 120
            spec.env = qwTestEnv
            ChildProcess.start(spec, reactor: reactor) { results.append($0) }
        }
        while results.count < 4 { reactor.runOnce() }
        let errors = results.map { String(decoding: $0.stderr, as: UTF8.self) }
        #expect(results.allSatisfy { $0.ok }, "\(errors)")
        let r = qw(["--state", dir + "/s.db", "-e", "print(qw.state.get('count'))"])
        #expect(r.stdout == "2000\n")
        let stats = qw(["state", "--state", dir + "/s.db"])
        #expect(stats.stdout.contains("integrity  ok"))
        #expect(stats.stdout.contains("keys       1"))
    }

    @Test func stateCommandAndEnvironment() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let set = qw(["-e", "qw.state.set('deploy.count', 3); qw.state.set('deploy.last', { ok = true })"], env: [("QW_STATE", dir + "/env.db")])
        #expect(set.code == 0, "\(set.stderr)")
        let keys = qw(["state", "keys", "deploy.", "--state", dir + "/env.db"])
        #expect(keys.stdout == "deploy.count\ndeploy.last\n")
        let get = qw(["state", "get", "deploy.last", "--state", dir + "/env.db"])
        #expect(get.stdout.contains("\"ok\": true"))
        let missing = qw(["state", "get", "nope", "--state", dir + "/env.db"])
        #expect(missing.code == 1)
        #expect(missing.stderr.contains("no such key: nope"))
    }
}
