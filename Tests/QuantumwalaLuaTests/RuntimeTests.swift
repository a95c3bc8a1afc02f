import Glibc
import LuaHost
@testable import QuantumwalaLua
import Testing

/// Runs `code` as a script file in a fresh runtime; returns the global `result` (or the
/// failure) so tests can look at what the script computed.
func runScript(_ code: String, options: RuntimeOptions = RuntimeOptions(), file: String = "test.lua") throws -> (RunOutcome, LuaValue) {
    let dir = tempDir()
    defer { _ = system("rm -rf '\(dir)'") }
    let path = dir + "/" + file
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    _ = code.withCString { write(fd, $0, strlen($0)) }
    close(fd)
    let rt = try Runtime(options: options)
    var outcome = rt.runFile(path)
    var result = try rt.lua.run("return result").first ?? .nil
    // messages name the script as the tests wrote it: test.lua, not /tmp/.../test.lua
    if case .failed(var e) = outcome {
        e.message = e.message.replacingAll(dir + "/", with: "")
        outcome = .failed(e)
    }
    result = result.replacingInStrings(dir + "/", with: "")
    return (outcome, result)
}

extension String {
    func replacingAll(_ a: String, with b: String) -> String {
        var out = "", rest = Substring(self)
        while let r = rest.firstRange(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension LuaValue {
    func replacingInStrings(_ a: String, with b: String) -> LuaValue {
        switch self {
        case .string: return .string(stringValue!.replacingAll(a, with: b))
        case .table(let t):
            var out: [LuaValue: LuaValue] = [:]
            for (k, v) in t { out[k] = v.replacingInStrings(a, with: b) }
            return .table(out)
        default: return self
        }
    }
}

/// Runs each snippet and expects it to fail with a message starting with the given text.
func expectFailures(_ cases: [(String, String)], options: RuntimeOptions = RuntimeOptions(),
                    sourceLocation: SourceLocation = #_sourceLocation) throws {
    for (code, message) in cases {
        let (o, _) = try runScript(code, options: options)
        let e = try #require(o.error, "\(code) should fail", sourceLocation: sourceLocation)
        #expect(e.message.hasPrefix(message), "\(code): \(e.message)", sourceLocation: sourceLocation)
    }
}

/// Options with the state store at `dir/s.db`.
func storeOptions(_ dir: String) -> RuntimeOptions {
    var o = RuntimeOptions()
    o.statePath = dir + "/s.db"
    return o
}

func tempDir() -> String {
    var template = Array("/tmp/qw-lua-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

extension RunOutcome {
    var error: LuaError? {
        if case .failed(let e) = self { return e }
        return nil
    }
}

/// Most children alive at once, from `+ ns` / `- ns` lines the children wrote themselves.
func maxOverlap(_ log: String) -> Int {
    var events: [(Int, Int)] = []
    for line in log.split(separator: "\n") {
        let parts = line.split(separator: " ")
        guard parts.count == 2, let t = Int(parts[1]) else { continue }
        events.append((t, parts[0] == "+" ? 1 : -1))
    }
    events.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
    var alive = 0, most = 0
    for e in events {
        alive += e.1
        most = max(most, alive)
    }
    return most
}

/// A shell command that logs its start and end times to `file` around `sleep seconds`.
func timedItem(_ file: String, _ seconds: String, echo: String) -> String {
    "sh -c 'echo \"+ $(date +%s%N)\" >> \(file); sleep \(seconds); echo \"- $(date +%s%N)\" >> \(file); echo \(echo)'"
}

@Suite(.serialized)
struct RuntimeTests {
    /// A waiter whose cancel hook refers to the waiter itself (qw.sleep's, batch:next's) is
    /// freed once it has its answer: every wait used to leak its waiter and the result it
    /// carried (about 150 bytes per batch item).
    @Test func aCompletedWaiterIsFreedThoughItsCancelHookHoldsIt() throws {
        let rt = try Runtime()
        weak var gone: Waiter?
        do {
            let w = rt.scheduler.waiter()
            w.onCancel = { reason in w.fail(reason) }
            w.succeed { _ in 0 }
            gone = w
        }
        #expect(gone == nil)
    }

    /// Items that fail at once (a program not in PATH is refused before any fork) each
    /// finish inside their own launch: 5000 of them, through the batch and through a full
    /// admission queue, must not nest one call per item (that overflowed the stack).
    @Test func manyItemsThatFailAtOnceDoNotNest() throws {
        let (o, r) = try runScript("""
            local items = {}
            for i = 1, 5000 do items[i] = { "qw-no-such-program-" .. i % 7 } end
            local function count(rs)
              local n = 0
              for _, x in ipairs(rs) do if x.code == 127 and not x.ok then n = n + 1 end end
              return n
            end
            local wide = count(qw.batch(items))
            qw.limits{ max_concurrent = 2 }
            local queued = count(qw.batch(items))
            result = { wide = wide, queued = queued, slots = qw.resources().slots_used }
            """)
        #expect(o.error == nil)
        #expect(r["wide"] == 5000)
        #expect(r["queued"] == 5000)
        #expect(r["slots"] == 0)
    }

    @Test func execResultFields() throws {
        let (o, r) = try runScript("""
            local r = qw.exec{"sh", "-c", "echo out; echo err >&2; exit 3"}
            result = { ok = r.ok, code = r.code, out = r.stdout, err = r.stderr, attempts = r.attempts,
                       pid = r.pid > 0, rss = r.max_rss > 0, dur = r.duration >= 0, error = r.error, name = r.name }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == false)
        #expect(r["code"] == 3)
        #expect(r["out"] == "out\n")
        #expect(r["err"] == "err\n")
        #expect(r["attempts"] == 1)
        #expect(r["pid"] == true && r["rss"] == true && r["dur"] == true)
        #expect(r["error"] == "exited with code 3")
        #expect(r["name"] == "sh -c echo out; echo err >&2; exit 3")
    }

    @Test func shellStringsAndOptionsTable() throws {
        let (o, r) = try runScript("""
            local a = qw.exec("echo $GREETING | tr a-z A-Z", { env = { GREETING = "hi" } })
            local b = qw.exec({ "pwd", cwd = "/tmp" })
            local c = qw.exec({ "cat" }, { stdin = "fed\\0in" })
            result = { a = a.stdout, b = b.stdout, c = c.stdout }
            """)
        #expect(o.error == nil)
        #expect(r["a"] == "HI\n")
        #expect(r["b"] == "/tmp\n")
        #expect(r["c"] == .string(Array("fed\0in".utf8)))
    }

    @Test func checkRaisesWithTheCommandAndItsStderr() throws {
        let (o, _) = try runScript("""
            local x = 1
            qw.exec({ "sh", "-c", "echo why it failed >&2; exit 2" }, { check = true })
            """)
        let e = try #require(o.error)
        #expect(e.message.hasPrefix("test.lua:2: command failed: sh -c"))
        #expect(e.message.contains("exited with code 2"))
        #expect(e.message.contains("why it failed"))
    }

    @Test func badOptionsNameTheProblemAndTheLine() throws {
        try expectFailures([
            ("qw.exec{'true', tiemout = 3}", "test.lua:1: qw.exec: unknown option 'tiemout'"),
            ("qw.exec{'true', timeout = -1}", "test.lua:1: qw.exec: option 'timeout' must be a positive number of seconds (got number)"),
            ("qw.exec(42)", "test.lua:1: qw.exec: the command must be a string or a table (got number)"),
            ("qw.exec{}", "test.lua:1: qw.exec: the command table has no program"),
            ("qw.batch({ 1 })", "test.lua:1: qw.batch: item 1 must be a command (string or table) or a function (got number)"),
            ("qw.batch({}, { max_concurrent = 0 })", "test.lua:1: qw.batch: max_concurrent must be a positive integer"),
            ("qw.sleep('x')", "test.lua:1: qw.sleep: seconds must be a number >= 0 (got string)"),
        ])
    }

    @Test func batchKeepsItemOrderAndItsConcurrencyBound() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        let log = dir + "/events"
        let items = (1...12).map { "[[\(timedItem(log, "0.05", echo: "\($0)"))]]" }.joined(separator: ", ")
        let (o, r) = try runScript("""
            local done = {}
            local rs = qw.batch({ \(items) }, { max_concurrent = 3, on_done = function(i, r) done[#done + 1] = i end })
            local outs = {}
            for i, x in ipairs(rs) do outs[i] = x.stdout end
            table.sort(done)
            result = { outs = table.concat(outs), n = #rs, done = table.concat(done, ",") }
            """)
        #expect(o.error == nil)
        #expect(r["n"] == 12)
        #expect(r["outs"] == .string((1...12).map { "\($0)\n" }.joined()))
        #expect(r["done"] == .string((1...12).map(String.init).joined(separator: ",")))
        let overlap = maxOverlap(readAll(log))
        #expect(overlap <= 3, "never more than max_concurrent children alive")
        #expect(overlap >= 2, "the batch ran items in parallel")
    }

    @Test func coroutinesRunProcessesConcurrently() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        let log = dir + "/events"
        let (o, _) = try runScript("""
            local cmd = [[\(timedItem(log, "0.3", echo: "x"))]]
            qw.parallel(function() qw.exec(cmd) end, function() qw.exec(cmd) end,
                        function() qw.exec(cmd) end, function() qw.exec(cmd) end)
            """)
        #expect(o.error == nil)
        #expect(maxOverlap(readAll(log)) == 4)
    }

    @Test func failFastCancelsTheRestAndKillsTheirProcesses() throws {
        let (o, r) = try runScript("""
            local t = qw.now()
            local s = "1005" .. ".5"
            local rs = qw.batch({ { "sleep", s }, { "sh", "-c", "sleep 0.1; exit 2" }, { "sleep", s },
                                  function() return qw.exec{ "sleep", s } end, { "sleep", s } },
                                { fail_fast = true, max_concurrent = 4 })
            result = { e1 = rs[1].error, c2 = rs[2].code, e3 = rs[3].error, e4 = rs[4].error,
                       e5 = rs[5].error, c5 = rs[5].cancelled, took = qw.now() - t }
            """)
        #expect(o.error == nil)
        #expect(r["c2"] == 2)
        #expect(r["e1"] == "cancelled")
        #expect(r["e3"] == "cancelled")
        #expect(r["e4"]?.stringValue?.contains("cancelled") == true)
        #expect(r["e5"] == "cancelled", "never started")
        #expect(r["c5"] == true)
        #expect(pidsOf("1005.5").isEmpty)
    }

    @Test func errorsInBatchFunctionsBecomeResults() throws {
        let (o, r) = try runScript("""
            local rs = qw.batch({ function() return 1 end,
                                  function() error("bad item") end,
                                  function() end,
                                  "echo fine" })
            result = { one = rs[1], ok2 = rs[2].ok, err2 = rs[2].error, tb = rs[2].traceback ~= nil,
                       three = rs[3] == nil, four = rs[4].stdout }
            local ok, e = pcall(qw.parallel, function() return 1 end, function() error("inner") end)
            result.perr = e
            local a, b = qw.parallel(function() return "a" end, function() return "b" end)
            result.ab = a .. b
            """)
        #expect(o.error == nil)
        #expect(r["one"] == 1)
        #expect(r["ok2"] == false)
        #expect(r["err2"] == "test.lua:2: bad item")
        #expect(r["tb"] == true)
        #expect(r["three"] == true)
        #expect(r["four"] == "fine\n")
        #expect(r["perr"] == "test.lua:7: inner")
        #expect(r["ab"] == "ab")
    }

    @Test func userCoroutinesKeepTheirOwnYields() throws {
        let (o, r) = try runScript("""
            local gen = coroutine.wrap(function()
              for i = 1, 3 do
                local out = qw.exec{ "echo", tostring(i) }.stdout
                coroutine.yield(out:sub(1, 1))
              end
              return "end"
            end)
            local seen = gen() .. gen() .. gen() .. gen()
            local co = coroutine.create(function(a) qw.sleep(0.01); local b = coroutine.yield(a + 1); return b * 2 end)
            local _, first = coroutine.resume(co, 1)
            local _, second = coroutine.resume(co, 5)
            local _, ismain = coroutine.running()
            result = { seen = seen, first = first, second = second, status = coroutine.status(co),
                       ismain = ismain, yieldable = coroutine.isyieldable() }
            """)
        #expect(o.error == nil)
        #expect(r["seen"] == "123end")
        #expect(r["first"] == 2)
        #expect(r["second"] == 10)
        #expect(r["status"] == "dead")
        #expect(r["ismain"] == true)
        #expect(r["yieldable"] == false)
    }

    @Test func waitingWhereLuaCannotYieldWaitsInPlace() throws {
        let (o, r) = try runScript("""
            local t = { 5, 3, 9, 1 }
            table.sort(t, function(a, b) qw.sleep(0) return a < b end)
            local s = ("x"):gsub("x", function() return qw.exec{ "echo", "-n", "y" }.stdout end)
            local m = setmetatable({}, { __index = function(_, k) return qw.exec{ "echo", "-n", k }.stdout end })
            result = table.concat(t, ",") .. " " .. s .. " " .. m.key
            """)
        #expect(o.error == nil)
        #expect(r == "1,3,5,9 y key")
    }

    @Test func yieldingTheMainChunkIsAnError() throws {
        let (o, _) = try runScript("coroutine.yield(1)")
        #expect(o.error?.message.contains("attempt to yield from outside a coroutine") == true)
        // a batch function is a main thread of its own, as far as the script can tell
        let (o2, r2) = try runScript("""
            local rs = qw.batch({ function() return { pcall(coroutine.yield, 1) } end,
                                  function() return coroutine.isyieldable() end })
            result = { ok = rs[1][1], err = rs[1][2], yieldable = rs[2] }
            """)
        #expect(o2.error == nil)
        #expect(r2["ok"] == false)
        #expect(r2["err"] == "attempt to yield from outside a coroutine")
        #expect(r2["yieldable"] == false)
    }

    /// One task closes a coroutine of another's while it waits in a primitive: the waiting
    /// task gets "cannot resume dead coroutine" once the wait ends, the coroutine's
    /// to-be-closed variables run once, and nothing crashes or is left running.
    @Test func closingACoroutineSuspendedInsideAPrimitive() throws {
        let (o, r) = try runScript("""
            local closed = 0
            local co = coroutine.create(function()
              local x <close> = setmetatable({}, { __close = function() closed = closed + 1 end })
              qw.exec{ "sleep", "0.2" }
              return "finished"
            end)
            local a, b = qw.parallel(
              function() return { coroutine.resume(co) } end,
              function() -- runs once the first has started the exec and waits
                local status = coroutine.status(co)
                return { status, coroutine.close(co) }
              end)
            result = { ok = a[1], err = a[2], status = b[1], close_ok = b[2], closed = closed,
                       after = coroutine.status(co), running = qw.resources().running }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == false)
        #expect(r["err"] == "cannot resume dead coroutine")
        #expect(r["status"] == "suspended")
        #expect(r["close_ok"] == true)
        #expect(r["closed"] == 1)
        #expect(r["after"] == "dead")
        #expect(r["running"] == 0)
    }

    /// stdlib's modules load on first use, and are whole once they do, whichever way a
    /// script first reaches them.
    @Test func lazyModulesAreWholeOnFirstUse() throws {
        let (o, r) = try runScript("""
            local names = {}
            for k in pairs(qw.state) do names[#names + 1] = k end
            table.sort(names)
            result = { state = table.concat(names, ","), fixed = type(qw.retry.fixed),
                       shown = qw.inspect({ 1 }), wf = getmetatable(qw.workflow("lazy")) ~= nil }
            """)
        #expect(o.error == nil)
        #expect(r["state"]?.stringValue?.contains("get,keys,set,transaction,update") == true)
        #expect(r["fixed"] == "function")
        #expect(r["shown"] == "{ 1 }")
        #expect(r["wf"] == true)
    }

    @Test func spawnHandles() throws {
        let (o, r) = try runScript("""
            local h = qw.spawn{ "sleep", "5" }
            local pid, running = h.pid, h:running()
            h:kill()
            local res = h:wait()
            local quick = qw.spawn("echo spawned")
            result = { pid = pid > 0, running = running, after = h:running(), sig = res.signal,
                       ok = res.ok, err = res.error, out = quick:wait().stdout, again = quick:wait().stdout }
            """)
        #expect(o.error == nil)
        #expect(r["pid"] == true)
        #expect(r["running"] == true)
        #expect(r["after"] == false)
        #expect(r["sig"] == 15)
        #expect(r["ok"] == false)
        #expect(r["err"] == "killed by SIGTERM")
        #expect(r["out"] == "spawned\n")
        #expect(r["again"] == "spawned\n")
    }

    /// `handle:read()` gives the output as it comes: the child prints a line, then waits for
    /// the script (through a fifo) before it prints the next, so the first read can only
    /// return while the child runs. After the end, `nil`; `wait()` still has all of it.
    @Test func spawnReadFollowsTheOutputAsItComes() throws {
        let dir = tempDir()
        let fifo = dir + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo); rmdir(dir) }
        let (o, r) = try runScript("""
            local h = qw.spawn{ "sh", "-c", "echo one; read x < \(fifo); echo two; printf three" }
            local first = h:read()
            local running = h:running()
            local f = assert(io.open("\(fifo)", "w")); f:write("go\\n"); f:close()
            local rest = {}
            while true do
              local piece = h:read()
              if not piece then break end
              rest[#rest + 1] = piece
            end
            result = { first = first, running = running, rest = table.concat(rest), all = h:wait().stdout, after = h:read() }
            """)
        #expect(o.error == nil)
        #expect(r["first"] == "one\n")
        #expect(r["running"] == true)
        #expect(r["rest"] == "two\nthree")
        #expect(r["all"] == "one\ntwo\nthree")
        #expect(r["after"] == nil)
    }

    /// `stdin = true` keeps a spawned process's input open: what `write` gives it arrives in
    /// order, `close_input` ends it; `set_timeout` counts from the call; `cpu_time` reads
    /// what the process has used so far.
    @Test func spawnWithAnOpenInput() throws {
        let (o, r) = try runScript("""
            local h = qw.spawn({ "cat" }, { stdin = true })
            local took = h:write("one ")
            h:write(("x"):rep(200000))  -- more than a pipe holds: written as cat reads
            h:write(" two")
            h:close_input()
            local res = h:wait()
            local late = h:write("three")
            local plain = qw.spawn{ "sleep", "5" }
            local ok, err = pcall(plain.write, plain, "x")
            plain:kill()
            local s = qw.spawn({ "sleep", "30" }, { stdin = true, timeout = 60 })
            local t0 = qw.now()
            s:set_timeout(0.2)
            local sr = s:wait()
            -- the CPU a running process has used: it grows while it spins, and is nil after
            local busy = qw.spawn{ "sh", "-c", "while :; do :; done" }
            local used, deadline = 0, qw.now() + 10
            while used < 0.05 and qw.now() < deadline do qw.sleep(0.01); used = busy:cpu_time() or -1 end
            busy:kill()
            busy:wait()
            result = { used = used >= 0.05, after = busy:cpu_time(), took = took, n = #res.stdout, head = res.stdout:sub(1, 5), tail = res.stdout:sub(-4), late = late,
                       ok = ok, err = err, code = sr.code, timed_out = sr.timed_out, terr = sr.error, quick = qw.now() - t0 < 30 }
            """)
        #expect(o.error == nil)
        #expect(r["took"] == true)
        #expect(r["used"] == true)
        #expect(r["after"] == nil)
        #expect(r["n"] == 200008)
        #expect(r["head"] == "one x")
        #expect(r["tail"] == " two")
        #expect(r["late"] == false)
        #expect(r["ok"] == false)
        #expect(r["err"]?.stringValue?.contains("not spawned with stdin = true") == true, "\(String(describing: r["err"]))")
        #expect(r["code"] == 124)
        #expect(r["timed_out"] == true)
        #expect(r["terr"] == "timed out after 0.2s")
        #expect(r["quick"] == true)
    }

    @Test func timeoutKillsTheWholeGroup() throws {
        let (o, r) = try runScript("""
            local s = "1006" .. ".5"
            local res = qw.exec({ "sh", "-c", "sleep " .. s .. " & sleep " .. s .. " & wait" }, { timeout = 0.3 })
            result = { code = res.code, timed_out = res.timed_out, ok = res.ok, err = res.error }
            """)
        #expect(o.error == nil)
        #expect(r["code"] == 124)
        #expect(r["timed_out"] == true)
        #expect(r["ok"] == false)
        #expect(r["err"] == "timed out after 0.3s")
        #expect(pidsOf("1006.5").isEmpty)
    }

    @Test func retryPolicies() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try runScript("""
            local always = qw.exec({ "false" }, { retry = qw.retry.fixed{ attempts = 3, delay = 0.01 } })
            -- fails once, then succeeds: a counter file marks the first attempt
            local flaky = qw.exec({ "sh", "-c", "if [ -e \(dir)/once ]; then exit 0; fi; touch \(dir)/once; exit 1" },
                                  { retry = qw.retry.exponential{ attempts = 5, initial = 0.01, jitter = 0 } })
            local picky = qw.exec({ "sh", "-c", "exit 2" },
                                  { retry = qw.retry.fixed{ attempts = 5, delay = 0, retry_on = function(r) return r.code ~= 2 end } })
            result = { always = always.attempts, always_ok = always.ok, flaky = flaky.attempts, flaky_ok = flaky.ok,
                       picky = picky.attempts }
            """)
        #expect(o.error == nil)
        #expect(r["always"] == 3)
        #expect(r["always_ok"] == false)
        #expect(r["flaky"] == 2)
        #expect(r["flaky_ok"] == true)
        #expect(r["picky"] == 1)
    }

    @Test func retryDelaysFollowThePolicy() throws {
        let (o, r) = try runScript("""
            local t = qw.now()
            local res = qw.exec({ "false" }, { retry = qw.retry.exponential{ attempts = 3, initial = 0.1, factor = 2, jitter = 0 } })
            local took = qw.now() - t
            -- batch items take policies too, and other items go on meanwhile
            t = qw.now()
            local rs = qw.batch({ { "false", retry = qw.retry.fixed{ attempts = 3, delay = 0.15 } }, { "sleep", "0.1" } })
            result = { attempts = res.attempts, took = took, batch_attempts = rs[1].attempts, batch_took = qw.now() - t }
            """)
        #expect(o.error == nil)
        #expect(r["attempts"] == 3)
        #expect(r["batch_attempts"] == 3)
        func seconds(_ v: LuaValue?) -> Double { if case .number(let d)? = v { return d }; return -1 }
        // 0.1 + 0.2 s of delays between three attempts
        #expect(seconds(r["took"]) >= 0.3 && seconds(r["took"]) < 0.6, "\(seconds(r["took"]))")
        #expect(seconds(r["batch_took"]) >= 0.3 && seconds(r["batch_took"]) < 0.6)
    }

    @Test func jsonFromLua() throws {
        let (o, r) = try runScript("""
            local s = qw.json.encode({ b = { 1, 2.5, "x" }, a = true })
            local back = qw.json.decode(s)
            local ok, e = pcall(qw.json.decode, '{"a": [1, 2,]}')
            local ok2, e2 = pcall(qw.json.encode, { f = print })
            result = { s = s, b2 = back.b[2], e = e, e2 = e2 }
            """)
        #expect(o.error == nil)
        #expect(r["s"] == #"{"a":true,"b":[1,2.5,"x"]}"#)
        #expect(r["b2"] == 2.5)
        #expect(r["e"]?.stringValue?.hasPrefix("test.lua:3: qw.json.decode:") == true)
        #expect(r["e"]?.stringValue?.contains("column") == true)
        #expect(r["e2"]?.stringValue?.contains("function") == true)
    }

    @Test func logOptionTeesOutput() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, _) = try runScript("qw.exec({ 'sh', '-c', 'echo to-out; echo to-err >&2' }, { log = '\(dir)/x.log' })")
        #expect(o.error == nil)
        let text = readAll(dir + "/x.log")
        #expect(text.contains("to-out") && text.contains("to-err"))
    }

    @Test func memoryLimitStopsABombAndNamesTheLimit() throws {
        var opts = RuntimeOptions()
        opts.memoryLimit = 64 << 20
        let (o, _) = try runScript("local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(4096) .. i end", options: opts)
        #expect(o.error?.message.contains("not enough memory: the Lua heap reached its limit of 64 MiB") == true)
    }

    @Test func timeLimitStopsARunawayLoop() throws {
        var opts = RuntimeOptions()
        opts.timeLimit = 0.3
        let (o, _) = try runScript("local n = 0\nwhile true do n = n + 1 end", options: opts)
        #expect(o.error?.message == "test.lua:2: time limit exceeded")
    }

    @Test func inspectRendersTablesReadably() throws {
        let (o, r) = try runScript("""
            local t = { 1, 2, name = "x", nested = { deep = { deeper = { deepest = {} } } }, [true] = 1 }
            t.self = t
            result = qw.inspect(t, { depth = 3, width = 200 })
            """)
        #expect(o.error == nil)
        #expect(r == #"{ 1, 2, name = "x", nested = { deep = { deeper = {...} } }, self = <cycle>, [true] = 1 }"#)
    }
}

func readAll(_ path: String) -> String {
    String(decoding: readFile(path) ?? [], as: UTF8.self)
}

/// Live (not zombie) processes whose command line contains `marker`, after a short grace for
/// the kernel to finish tearing down what was just killed.
func pidsOf(_ marker: String) -> [Int32] {
    for _ in 0..<100 {
        let out = String(decoding: Array(runCapture("ps -eo stat=,args=").utf8), as: UTF8.self)
        let live = out.split(separator: "\n").filter { $0.contains(marker) && !$0.hasPrefix("Z") && !$0.contains("ps -eo") }
        if live.isEmpty { return [] }
        usleep(20_000)
    }
    return [1]
}

func runCapture(_ command: String) -> String {
    guard let f = popen(command, "r") else { return "" }
    defer { pclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n == 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}
