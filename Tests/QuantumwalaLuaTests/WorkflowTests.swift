import Glibc
import LuaHost
@testable import QuantumwalaLua
import QuantumwalaCore
import Testing

/// qw.workflow: dependencies, parallelism, failures, retries and resume, with a real store.
@Suite(.serialized)
struct WorkflowTests {
    let dir = tempDir()

    func run(_ code: String) throws -> (RunOutcome, LuaValue) {
        var opts = RuntimeOptions()
        opts.statePath = dir + "/state.db"
        return try runScript("local DIR = [[\(dir)]]\n" + code, options: opts)
    }

    /// Lines of a marker file, one per run of a task.
    func runs(_ name: String) -> [String] {
        readAll(dir + "/" + name).split(separator: "\n").map(String.init)
    }

    /// Ordering, not timing: 'long' waits until 'after_short' has started, so it can end
    /// only if 'after_short' starts when its own dependency ('short') is done and not after
    /// every earlier task (an engine that waited for 'long' would time it out: it fails).
    @Test func aTaskStartsWhenItsOwnDependenciesFinish() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try run("""
            local function stamp(id)
              return { "sh", "-c", ("echo start $(date +%%s%%N) >> %s/%s; echo end $(date +%%s%%N) >> %s/%s"):format(DIR, id, DIR, id) }
            end
            local wf = qw.workflow("dag", { max_concurrent = 4 })
            wf:task("short", stamp("short"))
            wf:task("long", { "sh", "-c", ("while [ ! -e %s/after_short ]; do sleep 0.01; done; echo end $(date +%%s%%N) >> %s/long"):format(DIR, DIR) },
                    { timeout = 30 })
            wf:task("after_short", stamp("after_short"), { deps = { "short" } })
            wf:task("after_both", stamp("after_both"), { deps = { "short", "long" } })
            local report = wf:run()
            result = { ok = report.ok, n = #report.succeeded }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == true)
        #expect(r["n"] == 4)
        func stamp(_ id: String, _ what: String) -> Double {
            runs(id).first { $0.hasPrefix(what + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }.map { $0 / 1e9 } ?? 0
        }
        #expect(stamp("after_short", "start") >= stamp("short", "end"))
        #expect(stamp("after_both", "start") >= stamp("long", "end"))
    }

    @Test func cyclesAndUnknownDependenciesFailBeforeAnythingRuns() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        let (o1, _) = try run("""
            local wf = qw.workflow("cyc")
            wf:task("a", { "sh", "-c", "touch " .. DIR .. "/ran" }, { deps = { "c" } })
            wf:task("b", "true", { deps = { "a" } })
            wf:task("c", "true", { deps = { "b" } })
            wf:task("free", { "sh", "-c", "touch " .. DIR .. "/ran" })
            wf:run()
            """)
        #expect(o1.error?.message == "test.lua:7: workflow 'cyc': dependency cycle: a -> c -> b -> a")
        #expect(access(dir + "/ran", F_OK) != 0, "nothing ran")
        let (o2, _) = try run("""
            local wf = qw.workflow("unk")
            wf:task("a", "true", { deps = { "nope" } })
            wf:plan()
            """)
        #expect(o2.error?.message == "test.lua:4: workflow 'unk': task 'a' depends on unknown task 'nope'")
        let (o3, _) = try run("""
            local wf = qw.workflow("dup")
            wf:task("a", "true")
            wf:task("a", "false")
            """)
        #expect(o3.error?.message == "test.lua:4: workflow 'dup': task 'a' is defined twice")
    }

    @Test func aFailedDependencySkipsItsDependents() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try run("""
            local wf = qw.workflow("skip")
            wf:task("ok", "true")
            wf:task("bad", "exit 3")
            wf:task("child", "true", { deps = { "bad" } })
            wf:task("grandchild", "true", { deps = { "child", "ok" } })
            local report = wf:run()
            result = { ok = report.ok, succeeded = table.concat(report.succeeded, ","), failed = table.concat(report.failed, ","),
                       skipped = table.concat(report.skipped, ","), code = report.results.bad.code }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == false)
        #expect(r["succeeded"] == "ok")
        #expect(r["failed"] == "bad")
        #expect(r["skipped"] == "child,grandchild")
        #expect(r["code"] == 3)
        // the event log says what happened, with the details of each finished task
        let events = try StateStore(path: dir + "/state.db").events(of: "skip")
        let kinds = Set(events.map { "\($0.kind) \($0.task ?? "")" })
        #expect(kinds.isSuperset(of: ["workflow started ", "task succeeded ok", "task failed bad", "task skipped child",
                                      "task skipped grandchild", "workflow finished "]))
        let bad = events.first { $0.kind == "task failed" }
        #expect(bad?.data?.contains("\"code\":3") == true)
        #expect(bad?.data?.contains("\"started_at\":") == true)
    }

    @Test func retriesAreCountedAndRecorded() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try run("""
            local wf = qw.workflow("retry")
            local count = DIR .. "/count"
            wf:task("flaky", { "sh", "-c", "echo x >> " .. count .. "; [ $(wc -l < " .. count .. ") -ge 3 ]" },
                    { retry = qw.retry.fixed{ attempts = 5, delay = 0.01 } })
            local n = 0
            wf:task("fn", function() n = n + 1; if n < 2 then error("not yet") end; return "done" end,
                    { retry = qw.retry.fixed{ attempts = 3, delay = 0.01 } })
            local report = wf:run()
            result = { ok = report.ok, attempts = report.results.flaky.attempts, fn = report.results.fn, n = n }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == true)
        #expect(r["attempts"] == 3)
        #expect(r["fn"] == "done")
        #expect(r["n"] == 2)
        // every attempt of a task with a retry policy is in the store: two failures, the success
        let store = try StateStore(path: dir + "/state.db")
        let tries = try store.attempts(of: "retry", task: "flaky")
        #expect(tries.map(\.attempt) == [1, 2, 3])
        #expect(tries.map(\.ok) == [false, false, true])
        #expect(tries.first?.code == 1)
        #expect(try store.attempts(of: "retry", task: "fn").map(\.ok) == [false, true])
    }

    @Test func runningAgainDoesOnlyWhatHadNotSucceeded() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        let script = """
            local fail = ...
            local function mark(id, code)
              return { "sh", "-c", ("echo run >> %s/%s; exit %d"):format(DIR, id, code or 0) }
            end
            local wf = qw.workflow("resume")
            wf:task("a", mark("a"))
            wf:task("b", mark("b", fail and 1 or 0), { deps = { "a" } })
            wf:task("c", mark("c"), { deps = { "b" } })
            wf:task("d", mark("d"))
            local report = wf:run()
            result = report.ok
            """
        // first run: b fails, c is skipped
        let first = script.replacingAll("local fail = ...", with: "local fail = true")
        let (o1, r1) = try run(first)
        #expect(o1.error == nil)
        #expect(r1 == false)
        #expect(runs("a").count == 1 && runs("b").count == 1 && runs("c").isEmpty && runs("d").count == 1)
        // the same workflow, b fixed: b is a changed task, so b and c run; a and d do not
        let (o2, r2) = try run(script.replacingAll("local fail = ...", with: "local fail = false"))
        #expect(o2.error == nil)
        #expect(r2 == true)
        #expect(runs("a").count == 1 && runs("b").count == 2 && runs("c").count == 1 && runs("d").count == 1)
        // nothing left to do
        let (_, r3) = try run(script.replacingAll("local fail = ...", with: "local fail = false"))
        #expect(r3 == true)
        #expect(runs("a").count == 1 && runs("b").count == 2 && runs("c").count == 1)
        // fresh = true starts over
        let (_, r4) = try run(script.replacingAll("local fail = ...", with: "local fail = false")
            .replacingAll("wf:run()", with: "wf:run{ fresh = true }"))
        #expect(r4 == true)
        #expect(runs("a").count == 2 && runs("d").count == 2)
    }

    @Test func planGivesParallelBatches() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try run("""
            local wf = qw.workflow("plan")
            wf:task("test", "true", { deps = { "build" } })
            wf:task("build", "true")
            wf:task("lint", "true")
            wf:task("ship", "true", { deps = { "test", "lint" } })
            result = qw.json.encode(wf:plan())
            """)
        #expect(o.error == nil)
        #expect(r == #"[["build","lint"],["test"],["ship"]]"#)
    }

    /// Thousands of tasks, each depending on one defined after it (kept by name until the
    /// plan) and on one defined before (kept by place), with options of both kinds: the plan
    /// is the chain, every id comes back as it went in, and an unknown one still fails.
    @Test func manyTasksWithDependenciesBeforeAndAfterPlanAsAChain() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try run("""
            local n = 3000
            local wf = qw.workflow("chain")
            for i = 1, n do
              local deps = {}
              if i < n then deps[#deps + 1] = "step-" .. (i + 1) end
              if i == n then deps[#deps + 1] = "root" end
              wf:task("step-" .. i, "true", { deps = deps, timeout = i % 2 == 0 and 5 or nil })
            end
            wf:task("root", function() end)
            local levels = wf:plan()
            local ok = #levels == n + 1 and levels[1][1] == "root" and levels[n + 1][1] == "step-1"
            for k = 2, n + 1 do ok = ok and #levels[k] == 1 and levels[k][1] == "step-" .. (n + 2 - k) end
            local bad = qw.workflow("bad")
            bad:task("a", "true", { deps = { "b" } })
            bad:task("b", "true", { deps = { "missing-" .. n } })
            local ok2, err = pcall(bad.plan, bad)
            result = { ok = ok, levels = #levels, err = err }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == true)
        #expect(r["levels"] == 3001)
        #expect(r["err"]?.stringValue?.hasSuffix("workflow 'bad': task 'b' depends on unknown task 'missing-3000'") == true)
    }

    /// A workflow's task table (in C memory) counts against the Lua heap's limit: a runaway
    /// loop of wf:task with long ids stops there, with a message, where it used to go on until
    /// the Lua lists alone reached the limit (some 600 MB of ids at this one).
    @Test func aRunawayLoopOfTasksStopsAtTheHeapLimit() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        var opts = RuntimeOptions()
        opts.statePath = dir + "/state.db"
        opts.memoryLimit = 32 << 20
        let (o, r) = try runScript("""
            local wf = qw.workflow("runaway")
            local id, noop, n = string.rep("x", 1000), function() end, 0
            local ok, err = pcall(function() for i = 1, 1e7 do wf:task(id .. i, noop); n = i end end)
            result = { ok = ok, memory = tostring(err):find("memory", 1, true) ~= nil, n = n }
            """, options: opts)
        #expect(o.error == nil, "\(o.error?.message ?? "")")
        #expect(r["ok"] == false)
        #expect(r["memory"] == true)
        var n: Int64 = -1
        if case .integer(let x) = r["n"] { n = x }
        #expect(n > 10_000 && n < 33_000, "stopped after \(n) tasks")
    }

    /// wf:task takes its common case in C and gives every other to the Lua checks: each
    /// mistake names the line of the wf:task call, and a refused task adds nothing.
    @Test func eachMistakeInATaskNamesItsLineAndAddsNothing() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try run("""
            local wf = qw.workflow("bad")
            local said = {}
            local function try(f) local ok, e = pcall(f); said[#said + 1] = ok and "ok" or e end
            try(function() wf:task("", "true") end)
            try(function() wf:task(1, "true") end)
            try(function() wf:task("a", 42) end)
            try(function() wf:task("a", "true", 5) end)
            try(function() wf:task("a", "true", { tiemout = 1 }) end)
            try(function() wf:task("a", "true", { deps = "b" }) end)
            try(function() wf:task("a", "true", { deps = { "b", 7 } }) end)
            try(function() wf:task("a", "true", { inputs = 3 }) end)
            try(function() wf:task("a", { prompt = "" }) end)
            try(function() wf.task("a", "true") end)
            try(function() wf:task("a", "true", { [1] = "x" }) end)
            try(function() wf:task("a", { "true" }, setmetatable({ deps = {} }, {})) end)
            try(function() wf:task("a", "false") end)
            try(function() wf:task("b", "true", { deps = { "a" } }) end)
            result = table.concat(said, "\\n") .. "\\n" .. qw.json.encode(wf:plan())
            """)
        #expect(o.error == nil)
        let lines = (r.stringValue ?? "").split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let bad = "workflow 'bad': "
        #expect(lines == [
            "test.lua:5: \(bad)a task id must be a non-empty string (got string)",
            "test.lua:6: \(bad)a task id must be a non-empty string (got number)",
            "test.lua:7: \(bad)task 'a' must be a command (string or table) or a function (got number)",
            "test.lua:8: \(bad)the options of task 'a' must be a table (got number)",
            "test.lua:9: \(bad)task 'a' has an unknown option 'tiemout'",
            "test.lua:10: \(bad)deps of task 'a' must be a list of task ids",
            "test.lua:11: \(bad)deps[2] of task 'a' must be a task id (got number)",
            "test.lua:12: \(bad)inputs of task 'a' must be a list of paths or globs, or a function returning one (got number)",
            "test.lua:13: \(bad)the prompt of agent task 'a' must be a non-empty string",
            "test.lua:14: wf:task: call it as a method, wf:task(id, spec, opts)",
            "test.lua:15: \(bad)task 'a' has an unknown option '1'",
            "ok",
            "test.lua:17: \(bad)task 'a' is defined twice",
            "ok",
            #"[["a"],["b"]]"#,
        ])
    }

    /// The task counts a run keeps in its workflow's row (what `qw status` and the dashboard
    /// read) are those of the rows: after failures and skips, a task dropped from the
    /// definition, a new one, and a fresh run.
    @Test func theKeptTaskCountsAreThoseOfTheRows() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        func check(_ runs: [(String, [(String, Int)])]) throws {
            for (code, expected) in runs {
                let (o, _) = try run(code)
                #expect(o.error == nil)
                let store = try StateStore(path: dir + "/state.db")
                let kept = try #require(try store.keptTaskCounts(of: "counts"), "the run wrote its counts")
                let rows = try store.taskCountsFromRows(of: "counts")
                #expect(kept.map { "\($0.0)=\($0.1)" } == rows.map { "\($0.0)=\($0.1)" })
                #expect(kept.map { "\($0.0)=\($0.1)" } == expected.map { "\($0.0)=\($0.1)" })
            }
        }
        try check([
            ("""
             local wf = qw.workflow("counts")
             wf:task("a", "true"); wf:task("b", "false"); wf:task("c", "true", { deps = { "b" } }); wf:task("d", "true")
             wf:run()
             """, [("failed", 1), ("skipped", 1), ("succeeded", 2)]),
            ("""
             local wf = qw.workflow("counts")
             wf:task("a", "true"); wf:task("b", "true"); wf:task("c", "true", { deps = { "b" } }); wf:task("e", "false")
             wf:run()
             """, [("failed", 1), ("succeeded", 4)]),   // d's row stays, as it was
            ("""
             local wf = qw.workflow("counts")
             wf:task("a", "true")
             wf:run{ fresh = true }
             """, [("succeeded", 1)]),
        ])
    }
}
