import Glibc
import QuantumwalaCore
import Testing

/// `qw consume`: the allow-list and validation (nothing refused ever runs), at most once
/// across consumers, retries that end parked, a `kill -9` of a consumer, and a clean stop.
@Suite(.serialized)
struct ConsumeTests {
    /// A project with the catalogue's commands and small scripts a suggestion may run:
    /// mark.lua ID appends ID to marks; slow.lua ID says it started, waits for the file go,
    /// says it is done; fail.lua counts its attempts and fails.
    func project() -> String {
        let dir = makeTempDir()
        qwShell("mkdir -p '\(dir)/proj/.claude/commands' '\(dir)/proj/.qw' && cp '\(repoRoot)'/.claude/commands/*.md '\(dir)/proj/.claude/commands/'")
        writeFile(dir + "/proj/mark.lua", """
            local f = assert(io.open("marks", "a")); f:write(qw.args[1], "\\n"); f:close()
            """)
        writeFile(dir + "/proj/slow.lua", """
            local function say(s) local f = assert(io.open("runs", "a")); f:write(s, " ", qw.args[1], "\\n"); f:close() end
            say("start")
            while not io.open("go", "r") do qw.sleep(0.01) end
            say("done")
            """)
        writeFile(dir + "/proj/fail.lua", """
            local f = assert(io.open("attempts", "a")); f:write("x\\n"); f:close()
            io.stderr:write("it broke\\n")
            os.exit(3)
            """)
        writeFile(dir + "/proj/.qw/policy.lua", "qw.suggestions.backoff = 0\n")
        return dir
    }

    func suggest(_ argv: [String], in dir: String) -> Outcome {
        let words = argv.map { "\"" + $0.replacingOccurrences("\\", "\\\\").replacingOccurrences("\"", "\\\"").replacingOccurrences("\n", "\\n") + "\"" }
        return qw(["-e", "print(qw.suggest{ \(words.joined(separator: ", ")) })"], cwd: dir + "/proj")
    }

    func queue(_ dir: String) throws -> [SuggestionRecord] {
        try StateStore(path: dir + "/proj/.qw/state.db").suggestions()
    }

    /// Shell syntax, control characters, `..`, long words and commands outside the
    /// allow-list: each is refused with its reason, and nothing runs (a canary file proves it).
    @Test func injectionsAreRefusedAndNothingRuns() throws {
        let dir = project()
        defer { removeTree(dir) }
        let canary = dir + "/canary"
        writeFile(dir + "/outside.lua", "local f = io.open('\(canary)', 'w') f:write('ran') f:close()\n")
        let attempts: [([String], String)] = [
            (["/spec-design", "demo; touch \(canary)"], "shell character ';'"),
            (["/spec-design", "demo", "&&", "touch", canary], "shell character '&'"),
            (["qw", "spec", "run", "$(touch \(canary))"], "shell character '$'"),
            (["qw", "run", "`touch \(canary)`"], "shell character '`'"),
            (["/spec-design", "demo\ntouch \(canary)"], "control character"),
            (["qw", "run", "../outside.lua"], "'..' path part"),
            (["qw", "run", String(repeating: "a", count: 5000) + ".lua"], "bytes long"),
            (["/rm-everything", "now"], "not one of the project's commands"),
            (["touch", canary], "neither a slash command nor qw"),
            (["qw", "-e", "print"], "qw -e is not allowed"),
            (["qw", "run", dir + "/outside.lua"], "outside the project"),
            (["qw", "spec", "run", "demo", "--check", "touch"], "the option --check is not allowed"),
            (["/spec-design", "../../etc"], "'..' path part"),
        ]
        for (argv, _) in attempts {
            let r = suggest(argv, in: dir)
            #expect(r.code == 0, "\(r.stderr)")
        }
        // and through the file older tools write: each line split at spaces
        writeFile(dir + "/proj/.claude/next_command.txt", "/spec-design demo; rm -rf ~\n/spec-tasks demo\u{1B}[2J\n")
        let r = qw(["consume", "--once", "--json"], cwd: dir + "/proj")
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(readText(canary) == nil, "nothing ran")
        // those validation let through, the allow-list refused at the consumer
        #expect(r.stdout.hasPrefix("{") && r.stdout.contains("\"counts\":{\"ran\":0,\"refused\":5}") && r.stdout.components("\"reason\":") == 5, "\(r.stdout)")
        #expect(readText(dir + "/proj/.claude/next_command.txt") == nil, "the file was taken in")
        let q = try queue(dir)
        #expect(q.count == attempts.count + 2, "\(q.map(\.argv))")
        #expect(q.allSatisfy { $0.state == "refused" }, "\(q.map { ($0.argv, $0.state, $0.error) })")
        for (i, (_, reason)) in attempts.enumerated() {
            #expect(q[i].error?.contains(reason) == true, "#\(i): \(q[i].argv): \(q[i].error ?? "no reason")")
        }
        #expect(q[attempts.count].error?.contains("shell character ';'") == true)
        #expect(q[attempts.count + 1].error?.contains("control character") == true)
        // a dry run of an allowed one says so and runs nothing
        _ = suggest(["qw", "run", "mark.lua", "dry"], in: dir)
        let dry = qw(["consume", "--dry-run"], cwd: dir + "/proj")
        #expect(dry.stdout.contains("would run  qw run mark.lua dry"), "\(dry.stdout)")
        #expect(readText(dir + "/proj/marks") == nil)
    }

    /// Two consumers and 200 suggestions: each runs exactly once; a suggestion queued again
    /// while pending is the same one.
    @Test func twoConsumersRunEachOfTwoHundredSuggestionsOnce() throws {
        let dir = project()
        defer { removeTree(dir) }
        let add = qw(["-e", """
            local n = 0
            for i = 1, 200 do local _, added = qw.suggest{ "qw", "run", "mark.lua", tostring(i) }; if added then n = n + 1 end end
            local _, again = qw.suggest{ "qw", "run", "mark.lua", "7" }
            print(n, again)
            """], cwd: dir + "/proj")
        #expect(add.stdout == "200\tfalse\n", "\(add.stdout)\(add.stderr)")
        let reactor = Reactor()
        var results: [ProcessResult?] = [nil, nil]
        for i in 0..<2 {
            var spec = CommandSpec(argv: [qwBinary, "consume", "--once"])
            spec.env = qwTestEnv
            spec.cwd = dir + "/proj"
            _ = ChildProcess.start(spec, reactor: reactor) { results[i] = $0 }
        }
        while results.contains(where: { $0 == nil }) { reactor.runOnce() }
        #expect(results.allSatisfy { $0?.code == 0 }, "\(results.map { String(decoding: $0?.stderr ?? [], as: UTF8.self) })")
        let marks = (readText(dir + "/proj/marks") ?? "").split(separator: "\n").map(String.init)
        #expect(marks.count == 200, "\(marks.count) runs")
        #expect(Set(marks) == Set((1...200).map(String.init)), "each ran once")
        let q = try queue(dir)
        #expect(q.count == 200 && q.allSatisfy { $0.state == "done" && $0.attempts == 1 })
        let byConsumer = Dictionary(grouping: q, by: { $0.consumer ?? "-" })
        #expect(byConsumer.count == 2, "both consumers took some: \(byConsumer.mapValues(\.count))")
    }

    /// A failing suggestion is tried max_attempts times, then parked as failed with its error.
    @Test func aFailingSuggestionIsRetriedThenParked() throws {
        let dir = project()
        defer { removeTree(dir) }
        _ = suggest(["qw", "run", "fail.lua"], in: dir)
        let r = qw(["consume", "--once"], cwd: dir + "/proj")
        #expect(r.code == 1)
        #expect(r.stderr.contains("failed 3 times; parked"), "\(r.stderr)")
        #expect((readText(dir + "/proj/attempts") ?? "").split(separator: "\n").count == 3)
        let q = try queue(dir)
        #expect(q.count == 1 && q[0].state == "failed" && q[0].attempts == 3)
        #expect(q[0].error?.contains("it broke") == true, "\(q[0].error ?? "")")
        let again = qw(["consume", "--once"], cwd: dir + "/proj")
        #expect(again.stdout == "nothing to run\n", "a parked suggestion stays parked: \(again.stdout)")
        #expect((readText(dir + "/proj/attempts") ?? "").split(separator: "\n").count == 3)
    }

    /// Waits (running the reactor) until `done()` or 20 s.
    func wait(_ reactor: Reactor, _ done: () -> Bool) -> Bool {
        let deadline = monotonicSeconds() + 20
        while !done() && monotonicSeconds() < deadline { reactor.runOnce(maxWait: 0.005) }
        return done()
    }

    /// `kill -9` of a consumer in the middle of a run: the next consumer takes the
    /// suggestion again at once (the first one's process is gone), ends what the first one
    /// left running, and completes it.
    @Test func aKilledConsumersSuggestionIsTakenAgainAndCompletes() throws {
        let dir = project()
        defer { removeTree(dir) }
        _ = suggest(["qw", "run", "slow.lua", "k9"], in: dir)
        let reactor = Reactor()
        var first: ProcessResult?
        var spec = CommandSpec(argv: [qwBinary, "consume", "--continuous"])
        spec.env = qwTestEnv
        spec.cwd = dir + "/proj"
        let a = try #require(ChildProcess.start(spec, reactor: reactor) { first = $0 })
        let runs = dir + "/proj/runs"
        #expect(wait(reactor) { readText(runs) == "start k9\n" })
        kill(a.pid, SIGKILL)
        #expect(wait(reactor) { first != nil })
        #expect(livePids(matching: "slow.lua").count == 1, "the killed consumer's run is orphaned")
        var second: ProcessResult?
        spec.argv = [qwBinary, "consume", "--once"]
        _ = ChildProcess.start(spec, reactor: reactor) { second = $0 }
        #expect(wait(reactor) { readText(runs) == "start k9\nstart k9\n" })
        #expect(livePids(matching: "slow.lua").count == 1, "the orphan was ended before the run again")
        writeFile(dir + "/proj/go", "")
        #expect(wait(reactor) { second != nil })
        #expect(second?.code == 0, "\(String(decoding: second?.stderr ?? [], as: UTF8.self))")
        #expect(readText(runs) == "start k9\nstart k9\ndone k9\n")
        let q = try queue(dir)
        #expect(q.count == 1 && q[0].state == "done" && q[0].attempts == 2, "\(q)")
    }

    /// `--continuous` picks up a new suggestion without being told, and Ctrl-C (SIGINT) stops
    /// it after ending its children; what it held goes back to the queue. SIGTERM ends it too.
    @Test func continuousPicksUpNewSuggestionsAndStopsCleanly() throws {
        let dir = project()
        defer { removeTree(dir) }
        _ = qw(["-e", "qw.state.set('x', 1)"], cwd: dir + "/proj")  // the store exists
        let reactor = Reactor()
        var spec = CommandSpec(argv: [qwBinary, "consume", "--continuous"])
        spec.env = qwTestEnv
        spec.cwd = dir + "/proj"
        for sig in [SIGINT, SIGTERM] {
            let id = sig == SIGINT ? "int" : "term"
            var result: ProcessResult?
            let c = try #require(ChildProcess.start(spec, reactor: reactor) { result = $0 })
            _ = suggest(["qw", "run", "slow.lua", id], in: dir)
            #expect(wait(reactor) { (readText(dir + "/proj/runs") ?? "").contains("start \(id)\n") }, "picked up")
            kill(c.pid, sig)
            #expect(wait(reactor) { result != nil })
            if sig == SIGTERM { #expect(result?.signal == SIGTERM, "\(String(describing: result))") }
            #expect(noneLeft(matching: "slow.lua"), "its child ended with it")
            let q = try queue(dir).last
            if sig == SIGINT {
                #expect(q?.state == "pending" && q?.error == "the consumer stopped", "\(String(describing: q))")
            } else {
                #expect(q?.state == "running", "left for the next consumer, which takes it at once")
            }
        }
        #expect(!(readText(dir + "/proj/runs") ?? "").contains("done"))
    }
}
