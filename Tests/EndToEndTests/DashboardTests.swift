import Foundation
import Glibc
import Testing

/// `qw dashboard` and `qw status --watch` against real workflows: the real binary, the real
/// store, real HTTP, and pages in headless Chromium.
@Suite(.serialized) struct DashboardTests {
    /// That project, and a dashboard serving its store.
    private func finishedDashboard() throws -> (String, DashboardProcess) {
        let dir = finishedProject()
        guard let d = DashboardProcess(state: dir + "/.qw/state.db", cwd: dir) else {
            removeTree(dir)
            throw DashboardStartError()
        }
        return (dir, d)
    }

    private struct DashboardStartError: Error, CustomStringConvertible {
        var description: String { "qw dashboard did not start on the finished project's store" }
    }

    /// A project with a workflow whose task names need escaping, run to the end.
    private func finishedProject() -> String {
        let dir = makeTempDir()
        writeFile(dir + "/wf.lua", """
            local wf = qw.workflow("demo")
            wf:task("a", { "sh", "-c", "echo out-of-a; echo err-of-a >&2" })
            wf:task("<img src=x onerror=alert(1)>", { "true" }, { deps = { "a" } })
            wf:task("b", { "false" }, { deps = { "a" } })
            wf:run()
            """)
        _ = qw(["run", "wf.lua"], cwd: dir)
        return dir
    }

    @Test func theAPIAnswersFromTheStore() throws {
        let (dir, d) = try finishedDashboard()
        defer { d.stop(); removeTree(dir) }
        let overview = try #require(d.get("/api/overview"))
        #expect(overview.status == 200)
        let o = try #require(parseJSON(overview.body) as? [String: Any])
        let wfs = try #require(o["workflows"] as? [[String: Any]])
        #expect(wfs.first?["name"] as? String == "demo")
        #expect(wfs.first?["status"] as? String == "failed")
        #expect((wfs.first?["counts"] as? [String: Int]) == ["succeeded": 2, "failed": 1])

        let w = try #require(d.json("/api/workflows/demo") as? [String: Any])
        let waves = try #require(w["waves"] as? [[String: Any]])
        #expect(waves.map { $0["tasks"] as? Int } == [1, 2])
        #expect(w["wave_count"] as? Int == 2)
        #expect(w["waves_from"] as? Int == 0)
        let later = try #require(d.json("/api/workflows/demo?waves=1") as? [String: Any])
        #expect((later["waves"] as? [[String: Any]])?.map { $0["wave"] as? Int } == [1])
        let badWaves = try #require(d.get("/api/workflows/demo?waves=first"))
        #expect(badWaves.status == 400)
        #expect(badWaves.body.contains("waves must be a whole number"))
        let graph = try #require(w["graph"] as? [String: Any])
        #expect((graph["edges"] as? [[String]])?.count == 2)

        let page = try #require(d.json("/api/workflows/demo/tasks?limit=2&offset=1") as? [String: Any])
        #expect(page["total"] as? Int == 3)
        #expect((page["tasks"] as? [[String: Any]])?.map { $0["id"] as? String } == ["<img src=x onerror=alert(1)>", "b"])
        let failed = try #require(d.json("/api/workflows/demo/tasks?status=failed") as? [String: Any])
        #expect((failed["tasks"] as? [[String: Any]])?.map { $0["id"] as? String } == ["b"])

        let task = try #require(d.json("/api/workflows/demo/tasks/a") as? [String: Any])
        let result = try #require(task["result"] as? [String: Any])
        #expect(result["stdout"] as? String == "out-of-a\n")
        #expect(result["stderr"] as? String == "err-of-a\n")
        #expect((task["dependents"] as? [String])?.sorted() == ["<img src=x onerror=alert(1)>", "b"])
        let escaped = "/api/workflows/demo/tasks/" + "<img src=x onerror=alert(1)>".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        #expect(try #require(d.get(escaped)).status == 200)

        let events = try #require(d.json("/api/events?source=engine&kind=failed") as? [[String: Any]])
        #expect(events.contains { $0["kind"] as? String == "task failed" && $0["task"] as? String == "b" })
        #expect(!events.contains { ($0["kind"] as? String)?.contains("failed") == false })

        let missing = try #require(d.get("/api/workflows/nope"))
        #expect(missing.status == 404)
        #expect(missing.body.contains("no workflow named 'nope'"))
        let bad = try #require(d.get("/api/workflows/demo/tasks?limit=many"))
        #expect(bad.status == 400)
        #expect(bad.body.contains("limit must be a whole number"))
        #expect(try #require(d.get("/api/cost")).status == 200)
    }

    /// A workflow of more waves than a document summarises: a window of them, from where
    /// the work stopped unless asked for another.
    @Test func manyWavesComeAsAWindowFromWhereTheWorkIs() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/wf.lua", """
            local wf = qw.workflow("chain")
            for i = 1, 1200 do
              wf:task("t" .. i, function() if i == 700 then error("stop here") end end, { deps = i > 1 and { "t" .. (i - 1) } or nil })
            end
            wf:run()
            """)
        _ = qw(["run", "wf.lua"], cwd: dir)
        let d = try #require(DashboardProcess(state: dir + "/.qw/state.db", cwd: dir))
        defer { d.stop() }
        let w = try #require(d.json("/api/workflows/chain") as? [String: Any])
        #expect(w["wave_count"] as? Int == 1200)
        // t700 failed in wave 699: the window starts two waves before it
        #expect(w["waves_from"] as? Int == 697)
        let waves = try #require(w["waves"] as? [[String: Any]])
        #expect(waves.count == 500)
        #expect(waves.first?["wave"] as? Int == 697)
        #expect((waves[2]["counts"] as? [String: Int]) == ["failed": 1])
        #expect((waves[3]["counts"] as? [String: Int]) == ["skipped": 1])
        let tail = try #require(d.json("/api/workflows/chain?waves=1000") as? [String: Any])
        #expect((tail["waves"] as? [[String: Any]])?.count == 200)
        let past = try #require(d.json("/api/workflows/chain?waves=5000") as? [String: Any])
        #expect((past["waves"] as? [[String: Any]])?.map { $0["wave"] as? Int } == [1199])
    }

    @Test func nothingOutsideItsAssetsIsServed() throws {
        let (dir, d) = try finishedDashboard()
        defer { d.stop(); removeTree(dir) }
        writeFile(dir + "/secret.txt", "top-secret-content")
        #expect(try #require(d.get("/assets/app.js")).status == 200)
        let page = try #require(d.get("/workflows/demo"))
        #expect(page.status == 200)
        #expect(page.header("content-security-policy")?.contains("script-src 'self'") == true)
        for path in ["/../secret.txt", "/assets/../secret.txt", "/assets/..%2F..%2Fsecret.txt", "/assets/%2e%2e/%2e%2e/secret.txt",
                     "/assets/../../../../etc/passwd", "//etc/passwd", "/assets//etc/passwd", "/assets/app.js/../../secret.txt",
                     "/secret.txt", "/assets/../qw/init.lua", "/assets/index.html/..", "/workflows/../../secret.txt"] {
            let r = try #require(d.get(path), "no answer to \(path)")
            #expect(!r.body.contains("top-secret-content") && !r.body.contains("root:x:0") && !r.body.contains("local core = ..."),
                    "\(path) served a file outside the dashboard's assets")
            #expect(r.status == 404 || r.status == 400 || (r.status == 200 && r.body.contains("<!doctype html>")), "\(path): \(r.status)")
        }
    }

    @Test func changesNeedTheTokenAndStrangersAreRefused() throws {
        let (dir, d) = try finishedDashboard()
        defer { d.stop(); removeTree(dir) }
        let post = try #require(httpRequest("POST", port: d.port, path: "/api/specs/x/approve?phase=design"))
        #expect(post.status == 403)
        let cookieOnly = try #require(httpRequest("POST", port: d.port, path: "/api/specs/x/approve?phase=design",
                                                  headers: ["Cookie": "qw_token=\(d.token)"]))
        #expect(cookieOnly.status == 403)
        let withToken = try #require(httpRequest("POST", port: d.port, path: "/api/specs/x/approve?phase=nonsense",
                                                 headers: ["X-QW-Token": d.token]))
        #expect(withToken.status == 400)
        #expect(withToken.body.contains("phase must be requirements, design or tasks"))
        // a page on another name (DNS rebinding) gets nothing
        let rebound = try #require(httpRequest("GET", port: d.port, path: "/api/overview", headers: ["Host": "evil.example:\(d.port)"]))
        #expect(rebound.status == 421)
        // the address with the token sets the cookie the page then uses
        let first = try #require(d.get("/?token=\(d.token)"))
        #expect(first.header("set-cookie")?.contains("qw_token=\(d.token)") == true)
        #expect(first.header("set-cookie")?.contains("HttpOnly") == true)
    }

    @Test func beyondLoopbackEverythingNeedsTheToken() throws {
        let dir = finishedProject()
        defer { removeTree(dir) }
        let d = try #require(DashboardProcess(state: dir + "/.qw/state.db", cwd: dir, extra: ["--host", "0.0.0.0"]))
        defer { d.stop() }
        #expect(try #require(d.get("/api/overview")).status == 403)
        #expect(try #require(d.get("/")).status == 403)
        #expect(try #require(d.get("/api/overview", headers: ["X-QW-Token": d.token])).status == 200)
        #expect(try #require(d.get("/api/overview?token=\(d.token)")).status == 200)
        #expect(try #require(d.get("/api/overview", headers: ["Cookie": "qw_token=\(d.token)"])).status == 200)
        #expect(try #require(d.get("/api/overview", headers: ["X-QW-Token": "wrong"])).status == 403)
    }

    @Test func aSpecShowsItsPhasesAndTasksAndCanBeApproved() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        #expect(runProgram(["git", "init", "-q", dir]).code == 0)
        #expect(qw(["spec", "new", "login", "Sign-in"], cwd: dir).code == 0)
        writeFile(dir + "/.claude/specs/login/tasks.md", """
            # Tasks

            - [x] 1. Form
            - [ ] 2. Check the password
              - [-] 2.1 Hashing
            """)
        let d = try #require(DashboardProcess(state: dir + "/.qw/state.db", cwd: dir))
        defer { d.stop() }
        let spec = try #require(d.json("/api/specs/login") as? [String: Any])
        #expect((spec["phases"] as? [[String: Any]])?.map { $0["phase"] as? String }
                == ["steering", "requirements", "design", "tasks", "implementation", "testing", "review"])
        let tasks = try #require(spec["tasks"] as? [[String: Any]])
        #expect(tasks.map { $0["id"] as? String } == ["1", "2", "2.1"])
        #expect(tasks.map { $0["state"] as? String } == ["x", " ", "-"])
        #expect(tasks.last?["depth"] as? Int == 1)
        let missing = try #require(d.get("/api/specs/nope"))
        #expect(missing.status == 404)
        #expect(missing.body.contains("nope"))
        let approve = try #require(httpRequest("POST", port: d.port, path: "/api/specs/login/approve?phase=requirements",
                                               headers: ["X-QW-Token": d.token]))
        #expect(approve.status == 200)
        #expect(approve.body.contains("\"ok\":true"))
        let again = try #require(d.json("/api/specs/login") as? [String: Any])
        #expect((again["approvals"] as? [String: String])?["requirements"] == "approved")
        let log = try #require(d.json("/api/events?kind=dashboard") as? [[String: Any]])
        #expect(log.first?["kind"] as? String == "dashboard approve")
    }

    /// Command tasks tee their output into a log of their own, which the dashboard serves
    /// and follows as it grows; `logs = false` writes none.
    @Test func taskLogsAreWrittenServedAndFollowed() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        mkfifo(dir + "/go.fifo", 0o600)
        writeFile(dir + "/wf.lua", """
            local wf = qw.workflow("logged", { budget_usd = 2.5 })
            wf:task("talk/1", { "sh", "-c", "echo first line; echo to stderr >&2; read x < go.fifo; echo second line" })
            wf:task("fn", function() return 1 end)
            wf:run()
            local quiet = qw.workflow("quiet", { logs = false })
            quiet:task("hush", { "echo", "not in a log" })
            quiet:run()
            """)
        // the dashboard and its stream first: the run's every change is news to them
        let d = try #require(DashboardProcess(state: dir + "/.qw/state.db", cwd: dir))
        defer { d.stop() }
        let stream = try #require(EventStream(port: d.port, path: "/api/stream?workflow=logged&task=talk%2F1"))
        _ = try #require(stream.next { e, _ in e == "hello" })
        let run = try #require(spawnQw(["run", "wf.lua"], in: dir))
        // the first line is there while the task waits (a message's counts are read after its
        // rows: one may count the task running before the next one carries its row)
        let first = try #require(stream.next { e, data in e == "tasks" && data.contains("\"running\"") && data.contains("talk/1") })
        let rows = (parseJSON(first.data) as? [String: Any])?["tasks"] as? [[String: Any]] ?? []
        let row = rows.first { $0.values.contains { $0 as? String == "talk/1" } }
        #expect(row?.values.contains { $0 as? String == "running" } == true, "its row says running: \(first.data)")
        var log = try #require(d.json("/api/workflows/logged/tasks/talk%2F1/log") as? [String: Any])
        var text = log["text"] as? String ?? ""
        if !text.contains("first line") {
            // the task had not written yet when its row said running: the stream says when it does
            let grown = try #require(stream.next { e, data in e == "log" && data.contains("first line") })
            text = (parseJSON(grown.data) as? [String: Any])?["text"] as? String ?? ""
        }
        #expect(text.contains("first line"))
        #expect((log["path"] as? String)?.contains("/.qw/logs/workflows/logged/talk_1-") == true, "a safe name, with a hash: the id had a slash")
        release(dir + "/go.fifo")
        let more = try #require(stream.next { e, data in e == "log" && data.contains("second line") })
        let m = try #require(parseJSON(more.data) as? [String: Any])
        #expect(m["task"] as? String == "talk/1")
        #expect((m["offset"] as? Int ?? 0) > 0)
        var status: Int32 = 0
        waitpid(run.pid, &status, 0)
        close(run.stdout)
        log = try #require(d.json("/api/workflows/logged/tasks/talk%2F1/log") as? [String: Any])
        #expect(log["exists"] as? Bool == true)
        #expect((log["text"] as? String)?.contains("first line\nto stderr\nsecond line\n") == true)
        #expect(try #require(d.json("/api/workflows/logged/tasks/fn/log") as? [String: Any])["exists"] as? Bool == false)
        #expect(try #require(d.json("/api/workflows/quiet/tasks/hush/log") as? [String: Any])["exists"] as? Bool == false)
        #expect(try #require(d.get("/api/workflows/logged/tasks/nope/log")).status == 404)
        // the workflow's budget shows on the cost page
        let cost = try #require(d.json("/api/cost") as? [String: Any])
        let budgets = try #require(cost["budgets"] as? [[String: Any]])
        #expect(budgets.contains { $0["workflow"] as? String == "logged" && $0["budget_usd"] as? Double == 2.5 })
        // a bad option is named
        let bad = qw(["-e", "qw.workflow('x', { logs = 'yes' })"], cwd: dir)
        #expect(bad.code == 1)
        #expect(bad.stderr.contains("logs must be true or false"))
    }

    @Test func aTakenPortIsNamed() throws {
        let (dir, d) = try finishedDashboard()
        defer { d.stop(); removeTree(dir) }
        let r = qw(["dashboard", "--state", dir + "/.qw/state.db", "--port", String(d.port)], cwd: dir, timeout: 20)
        #expect(r.code == 1)
        #expect(r.stderr.contains("cannot listen on 127.0.0.1:\(d.port)"))
        let bad = qw(["dashboard", "--port", "70000"], cwd: dir, timeout: 20)
        #expect(bad.code != 0)
        #expect(bad.stderr.contains("--port must be between 0 and 65535"))
    }

    /// The stream tells of a change as it happens, and a client that comes back with
    /// Last-Event-ID gets what it missed.
    @Test func theStreamPushesChangesAndCatchesUp() throws {
        let (dir, d) = try finishedDashboard()
        defer { d.stop(); removeTree(dir) }
        let stream = try #require(EventStream(port: d.port, path: "/api/stream?workflow=more&events=1"))
        let hello = try #require(stream.next { e, _ in e == "hello" })
        let position = try #require((parseJSON(hello.data) as? [String: Any])?["version"] as? String)
        #expect(stream.status == 200)
        writeFile(dir + "/more.lua", """
            local wf = qw.workflow("more")
            wf:task("x", { "true" })
            wf:task("y", { "true" }, { deps = { "x" } })
            wf:run()
            """)
        #expect(qw(["run", "more.lua"], cwd: dir).code == 0)
        let tasks = try #require(stream.next { e, data in e == "tasks" && data.contains("\"id\":\"y\"") && data.contains("\"succeeded\"") })
        let t = try #require(parseJSON(tasks.data) as? [String: Any])
        #expect(t["workflow"] as? String == "more")
        _ = try #require(stream.next { e, data in e == "overview" && data.contains("\"more\"") })
        // back after missing it all
        let again = try #require(EventStream(port: d.port, path: "/api/stream?events=1", headers: ["Last-Event-ID": position]))
        let h2 = try #require(again.next { e, _ in e == "hello" })
        #expect(h2.data.contains("\"resync\":true"))
        let missed = try #require(again.next { e, _ in e == "events" })
        #expect(missed.data.contains("\"workflow started\"") && missed.data.contains("\"workflow\":\"more\""))
    }

    /// A run records its successes in batches: a stream of every event gets the newest of
    /// them (at most 500 a message, numbered as /api/events numbers them), a workflow's own
    /// stream none of its task rows, only that it started and finished.
    @Test func aBurstOfSuccessesReachesEachStreamAsItWantsIt() throws {
        let (dir, d) = try finishedDashboard()
        defer { d.stop(); removeTree(dir) }
        let all = try #require(EventStream(port: d.port, path: "/api/stream?events=1"))
        let mine = try #require(EventStream(port: d.port, path: "/api/stream?workflow=burst"))
        _ = try #require(all.next { e, _ in e == "hello" })
        _ = try #require(mine.next { e, _ in e == "hello" })
        writeFile(dir + "/burst.lua", """
            local wf = qw.workflow("burst")
            for i = 1, 1200 do wf:task(("t%04d"):format(i), function() end) end
            wf:run()
            """)
        #expect(qw(["run", "burst.lua"], cwd: dir).code == 0)
        var rows: [[String: Any]] = []
        while !rows.contains(where: { $0["kind"] as? String == "workflow finished" }),
              let m = all.next(timeout: 20, { e, _ in e == "events" }) {
            let batch = try #require(parseJSON(m.data) as? [[String: Any]])
            #expect(batch.count <= 500)
            rows += batch
        }
        let successes = rows.filter { $0["kind"] as? String == "task succeeded" }
        #expect(!successes.isEmpty)
        #expect(Set(successes.compactMap { $0["cursor"] as? String }).count == successes.count)
        let newest = try #require(d.json("/api/events?source=engine&kind=task%20succeeded&limit=1") as? [[String: Any]])
        #expect(successes.last?["cursor"] as? String == newest.first?["cursor"] as? String)
        #expect(successes.last?["task"] as? String == newest.first?["task"] as? String)

        var own: [[String: Any]] = []
        while !own.contains(where: { $0["kind"] as? String == "workflow finished" }),
              let m = mine.next(timeout: 20, { e, _ in e == "events" }) {
            own += try #require(parseJSON(m.data) as? [[String: Any]])
        }
        #expect(own.contains { $0["kind"] as? String == "workflow started" })
        #expect(own.allSatisfy { $0["workflow"] as? String == "burst" && $0["task"] is NSNull })

        // page by page through the log: every line of the batches once, though they share a time
        var cursors: [String] = [], query = ""
        for _ in 0..<20 {
            let body = try #require(d.get("/api/events?source=engine&workflow=burst&limit=200" + query)).body
            let page = try #require(parseJSON(body) as? [[String: Any]])
            guard let cursor = page.last?["cursor"] as? String else { break }
            cursors += page.compactMap { $0["cursor"] as? String }
            // the time as the server wrote it (a parsed Double need not print back the same)
            let at = try #require(body.ranges(of: #/"at":([0-9.e+-]+)/#).last.map { String(body[$0].dropFirst(5)) })
            query = "&before=\(at)&after=" + cursor.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        }
        #expect(cursors.count == 1202, "1,200 successes, started, finished")
        #expect(Set(cursors).count == cursors.count)
    }

    /// One stream can carry what many pages want (a worker shares it between tabs).
    @Test func oneStreamCarriesSeveralWorkflowsAndLogs() throws {
        let (dir, d) = try finishedDashboard()
        defer { d.stop(); removeTree(dir) }
        let watch = #"{"workflows":["one"],"logs":[["two","t"]]}"#.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let stream = try #require(EventStream(port: d.port, path: "/api/stream?watch=\(watch)"))
        _ = try #require(stream.next { e, _ in e == "hello" })
        writeFile(dir + "/two.lua", """
            for _, name in ipairs({ "one", "two", "three" }) do
              local wf = qw.workflow(name)
              wf:task("t", { "echo", "from " .. name })
              wf:run()
            end
            """)
        #expect(qw(["run", "two.lua"], cwd: dir).code == 0)
        var got: Set<String> = []
        while got.count < 3, let m = stream.next(timeout: 10, { e, _ in e == "tasks" || e == "log" }) {
            let o = parseJSON(m.data) as? [String: Any]
            got.insert(m.event + ":" + (o?["workflow"] as? String ?? "?"))
            #expect(o?["workflow"] as? String != "three", "a workflow not asked for")
            if m.event == "log" { #expect((o?["text"] as? String)?.contains("from two") == true) }
        }
        #expect(got == ["tasks:one", "tasks:two", "log:two"])
        let bad = try #require(d.get("/api/stream?watch=nonsense"))
        #expect(bad.status == 400)
        #expect(bad.body.contains("watch must be a JSON object"))
    }

    @Test func statusWatchAppendsLinesOffATerminalAndEndsWithTheWorkflow() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        mkfifo(dir + "/go.fifo", 0o600)
        writeFile(dir + "/wf.lua", """
            local wf = qw.workflow("watched")
            wf:task("gate", { "sh", "-c", "read line < go.fifo" })
            wf:task("then", { "true" }, { deps = { "gate" } })
            wf:run()
            """)
        let run = try #require(spawnQw(["run", "wf.lua"], in: dir))
        let watch = try #require(spawnQw(["status", "--watch", "watched"], in: dir))
        var seen: [String] = []
        // the first line is the workflow as the watch found it; wait for its task to start
        // (an event line, or that first line when the task started before the watch did)
        let started = { (line: String) in line.contains("watched: task started gate") || line.contains("watched: running") && line.contains("1 running") }
        while let line = Optional(readLine(watch.stdout)), !line.isEmpty {
            seen.append(line)
            if started(line) { break }
        }
        #expect(seen.contains(where: started))
        release(dir + "/go.fifo")
        while let line = Optional(readLine(watch.stdout)), !line.isEmpty { seen.append(line) }
        var status: Int32 = 0
        waitpid(watch.pid, &status, 0)
        #expect(status >> 8 & 0xff == 0, "the watch ends with the workflow's status")
        waitpid(run.pid, &status, 0)
        close(watch.stdout)
        close(run.stdout)
        #expect(seen.contains { $0.contains("task succeeded then") })
        #expect(seen.contains { $0.contains("workflow finished succeeded") })
        #expect(seen.last?.contains("watched: succeeded, 2 tasks (2 succeeded)") == true)
        #expect(!seen.joined().contains("\u{1B}["), "no terminal codes in plain lines")
        // --json keeps working, and is JSON
        let json = qw(["status", "--json"], cwd: dir)
        #expect((parseJSON(json.stdout) as? [[String: Any]])?.first?["name"] as? String == "watched")
    }

    /// Eight tabs of one browser (more than the six connections a browser keeps to a
    /// server) all follow a workflow: they share one stream.
    @Test func manyTabsShareOneStream() throws {
        let (browser, why) = Browser.start()
        let b = try #require(browser, "\(why)")
        defer { b.quit() }
        let dir = makeTempDir()
        defer { removeTree(dir) }
        mkfifo(dir + "/go.fifo", 0o600)
        writeFile(dir + "/wf.lua", """
            local wf = qw.workflow("tabs")
            wf:task("gate", { "sh", "-c", "read line < go.fifo" })
            wf:run()
            """)
        let run = try #require(spawnQw(["run", "wf.lua"], in: dir))
        defer { stopHelper(run) }
        let d = try #require(DashboardProcess(state: dir + "/.qw/state.db", cwd: dir))
        defer { d.stop() }
        var handles: [String] = []
        for i in 0..<8 {
            if i > 0, let h = (b.command("POST", "/window/new", ["type": "tab"]) as? [String: Any])?["handle"] as? String {
                b.command("POST", "/window", ["handle": h])
            }
            if let h = b.command("GET", "/window") as? String { handles.append(h) }
            b.open("http://127.0.0.1:\(d.port)/workflows/tabs")
            #expect(b.waitFor("document.querySelector('tr[data-task=\"gate\"]') && document.querySelector('tr[data-task=\"gate\"]').dataset.status === 'running' && document.getElementById('conn').dataset.state === 'open'"),
                    "tab \(i + 1) is live")
        }
        #expect(Set(handles).count == 8)
        release(dir + "/go.fifo")
        for (i, h) in handles.enumerated() {
            b.command("POST", "/window", ["handle": h])
            #expect(b.waitFor("document.querySelector('tr[data-task=\"gate\"]').dataset.status === 'succeeded'"), "tab \(i + 1) saw it finish")
        }
    }

    /// In a real browser: a task goes from running to succeeded without a reload, a task
    /// named like markup shows as text, and the page carries on after the server restarts.
    @Test func aBrowserSeesTasksFinishLiveAndSurvivesARestart() throws {
        let (browser, why) = Browser.start()
        let b = try #require(browser, "\(why)")
        defer { b.quit() }
        let dir = makeTempDir()
        defer { removeTree(dir) }
        mkfifo(dir + "/go.fifo", 0o600)
        mkfifo(dir + "/go2.fifo", 0o600)
        let xss = "<img src=x onerror=\"window.__xss=1\">"
        writeFile(dir + "/wf.lua", """
            local wf = qw.workflow("live")
            wf:task([[\(xss)]], { "true" })
            wf:task("waiter", { "sh", "-c", "echo waiting-for-go; read line < go.fifo; echo released-now" })
            wf:task("after", { "true" }, { deps = { "waiter" } })
            wf:task("second", { "sh", "-c", "read line < go2.fifo" })
            wf:run()
            """)
        let run = try #require(spawnQw(["run", "wf.lua"], in: dir))
        defer { stopHelper(run) }
        var d = try #require(DashboardProcess(state: dir + "/.qw/state.db", cwd: dir))
        defer { d.stop() }
        b.open("http://127.0.0.1:\(d.port)/workflows/live?task=waiter")
        #expect(b.waitFor("document.querySelector('tr[data-task=\"waiter\"]') && document.querySelector('tr[data-task=\"waiter\"]').dataset.status === 'running'"),
                "the waiting task shows as running")
        // the open task's log, as far as it has got
        #expect(b.waitFor("document.getElementById('task-log') && document.getElementById('task-log').textContent.includes('waiting-for-go')"),
                "the running task's log shows")
        _ = b.run("window.__mark = 42; return 1;")
        release(dir + "/go.fifo")
        #expect(b.waitFor("document.querySelector('tr[data-task=\"after\"]') && document.querySelector('tr[data-task=\"after\"]').dataset.status === 'succeeded' && document.querySelector('tr[data-task=\"waiter\"]').dataset.status === 'succeeded'"),
                "the tasks turn succeeded in the page")
        #expect(b.run("return window.__mark;") as? Int == 42, "without a reload")
        #expect(b.waitFor("document.getElementById('task-log').textContent.includes('waiting-for-go\\nreleased-now')"),
                "and what it wrote next is added to it as it comes")
        // the name shows as text: no element was made of it, and nothing ran
        let rows = b.run("return [...document.querySelectorAll('tr[data-task]')].filter(r => r.dataset.task === arguments[0]).map(r => r.textContent);", [xss]) as? [String]
        #expect(rows?.count == 1)
        #expect(rows?.first?.contains("<img src=x onerror") == true)
        #expect(b.run("return document.querySelectorAll('#app img').length;") as? Int == 0)
        #expect(b.run("return window.__xss === undefined;") as? Bool == true)

        // the server goes away and comes back on the same port: the page reconnects
        let port = d.port
        d.stop()
        #expect(b.waitFor("document.getElementById('conn') && document.getElementById('conn').dataset.state !== 'open'"))
        d = try #require(DashboardProcess(state: dir + "/.qw/state.db", cwd: dir, port: port))
        #expect(b.waitFor("document.getElementById('conn').dataset.state === 'open'", timeout: 20), "the page reconnects")
        release(dir + "/go2.fifo")
        #expect(b.waitFor("document.querySelector('tr[data-task=\"second\"]').dataset.status === 'succeeded'"),
                "a change after the restart shows too")
        #expect(b.run("return window.__mark;") as? Int == 42, "still without a reload")
    }
}
