import Glibc
import QuantumwalaCore
import Testing

/// The fake Anthropic Messages API (Tests/FakeModel/fake_anthropic.py) on 127.0.0.1, one
/// per test process, with the scenarios the agent tests use. Only the model is fake: the
/// real Claude Code CLI runs against it.
final class FakeModel: @unchecked Sendable {
    let port: Int
    let log: String
    let pid: pid_t

    static let shared: FakeModel? = FakeModel()

    /// The project of the auto-progression test: the documents' paths in its scenarios are
    /// absolute, and the prompts that ask for them are qw's own (matched by `_routes`).
    let autoProject: String

    private init?() {
        let dir = makeTempDir()
        log = dir + "/requests.jsonl"
        let auto = dir + "/auto/proj"
        autoProject = auto
        writeFile(dir + "/scenarios.json", """
            {
              "hello": [{"text": "Hello from the fake", "usage": {"input_tokens": 100, "output_tokens": 20}}],
              "write": [{"tool_use": {"name": "Write", "input": {"file_path": "{{path}}", "content": "written by the agent\\n"}}},
                        {"text": "done writing"}],
              "denied": [{"status": 401, "error": {"type": "authentication_error", "message": "invalid x-api-key"}}],
              "textonly": [{"text": "no structured output here"}],
              "delegate": [{"tool_use": {"name": "Agent", "input": {"subagent_type": "code-reviewer", "description": "review it",
                                                                    "prompt": "[[fake:sub-review]] review the diff", "run_in_background": false}}},
                           {"tool_use": {"name": "Agent", "input": {"subagent_type": "spec-task-executor", "description": "do task 1",
                                                                    "prompt": "[[fake:sub-exec]] do task 1", "run_in_background": false}}},
                           {"text": "delegated"}],
              "sub-review": [{"text": "reviewed: nothing blocking"}],
              "sub-exec": [{"text": "task 1 done"}],
              "storm": {"first": 8, "reject": {"status": 429, "headers": {"retry-after": "1"},
                                                "error": {"type": "rate_limit_error", "message": "slow down"}},
                        "then": [{"text": "through"}]},
              "sleeper": [{"tool_use": {"name": "Bash", "input": {"command": "nohup python3 -c 'import time; time.sleep(100.4321)' >/dev/null 2>&1 &", "description": "start a sleeper"}}},
                          {"hang": true}],
              "sleeper-done": [{"tool_use": {"name": "Bash", "input": {"command": "nohup python3 -c 'import time; time.sleep(100.4322)' >/dev/null 2>&1 &", "description": "start a sleeper"}}},
                               {"text": "left it running"}],
              "resumable": [{"tool_use": {"name": "Write", "input": {"file_path": "{{path}}", "content": "first half\\n"}}},
                            {"hang": true}],
              "resumed": [{"text": "carried on"}],
              "stopcap": [{"text": "I think I am done"}],
              "hookstop": [{"tool_use": {"name": "Bash", "input": {"command": "echo hi", "description": "say hi"}}},
                           {"text": "after the tool"}],
              "interrupt": [{"tool_use": {"name": "Bash", "input": {"command": "kill -INT $PPID; sleep 5", "description": "interrupt"}}},
                            {"text": "not reached"}],
              "loop": [{"tool_use": {"name": "Bash", "input": {"command": "echo again", "description": "loop"}}}],
              "overloaded": [{"status": 529, "error": {"type": "overloaded_error", "message": "Overloaded"}}],
              "overloaded-2": [{"status": 529, "error": {"type": "overloaded_error", "message": "Overloaded"}}],
              "overloaded-3": [{"status": 529, "error": {"type": "overloaded_error", "message": "Overloaded"}}],
              "impl-1": [{"tool_use": {"name": "Bash", "input": {"command": "echo one > f1.txt && git add f1.txt && git commit -qm 'task 1'", "description": "task 1"}}},
                         {"text": "f1.txt holds one. STATUS: done"}],
              "impl-2": [{"tool_use": {"name": "Bash", "input": {"command": "echo two > f2.txt && echo two > shared.txt && git add -A && git commit -qm 'task 2'", "description": "task 2"}}},
                         {"text": "f2.txt and shared.txt. STATUS: done"}],
              "impl-3": [{"tool_use": {"name": "Bash", "input": {"command": "echo three > shared.txt && git add -A && git commit -qm 'task 3'", "description": "task 3"}}},
                         {"text": "shared.txt says three. STATUS: done"}],
              "impl-4": [{"tool_use": {"name": "Bash", "input": {"command": "cat f2.txt > f4.txt && git add -A && git commit -qm 'task 4'", "description": "task 4"}}},
                         {"text": "f4.txt copies f2.txt. STATUS: done"}],
              "req-doc": [{"tool_use": {"name": "Write", "input": {"file_path": "{{path}}", "content": "# Requirements\\n\\n### Requirement 1: Files\\n\\n1. WHEN asked THEN the system SHALL write f1.txt.\\n2. WHEN asked THEN the system SHALL write f2.txt.\\n"}}},
                          {"text": "requirements written. STATUS: done"}],
              "design-doc": [{"tool_use": {"name": "Write", "input": {"file_path": "{{path}}", "content": "# Design\\n\\n## Overview\\n\\nThree small files.\\n\\n### First (f1.txt)\\n\\nOne line.\\n"}}},
                             {"text": "design written. STATUS: done"}],
              "tasks-doc": [{"tool_use": {"name": "Write", "input": {"file_path": "{{path}}", "content": "# Tasks\\n\\n- [ ] 1. Base file [[fake:impl-1]]\\n  - _Requirements: 1.1_\\n- [ ] 2. Second file [[fake:impl-2]]\\n  - _Requirements: 1.2_\\n  - _Depends: 1_\\n- [ ] 3. Fourth file [[fake:impl-4]]\\n  - _Depends: 2_\\n"}}},
                            {"text": "tasks written. STATUS: done"}],
              "val-ok": [{"text": "Complete and testable. STATUS: done"}],
              "review-ok": [{"text": "All criteria are met. VERDICT: approve. STATUS: done"}],
              \(PythonProject.scenarios),
              \(AutoProgressionTests.scenarios(project: auto)),
              "tour": [{"tool_use": {"name": "Bash", "input": {"command": "echo hi", "description": "say hi"}}},
                       {"tool_use": {"name": "Bash", "input": {"command": "exit 3", "description": "fail"}}},
                       {"tool_use": {"name": "Agent", "input": {"subagent_type": "code-reviewer", "description": "review it",
                                                               "prompt": "[[fake:sub-review]] review the diff", "run_in_background": false}}},
                       {"text": "toured"}],
              "tour2": [{"tool_use": {"name": "Bash", "input": {"command": "cd /tmp && pwd", "description": "look elsewhere"}}},
                        {"text": "toured again"}],
              "rmrf": [{"tool_use": {"name": "Bash", "input": {"command": "rm -rf {{path}}", "description": "clean up"}}},
                       {"text": "after rm"}],
              "perm-write": [{"tool_use": {"name": "Write", "input": {"file_path": "{{path}}", "content": "permitted\\n"}}},
                             {"text": "tried to write"}],
              "stop-once": [{"text": "finished"}],
              "costly": [{"tool_use": {"name": "Bash", "input": {"command": "echo again", "description": "loop"}},
                          "usage": {"input_tokens": 100000, "output_tokens": 1000}}]
            }
            """)
        let argv = ["python3", repoRoot + "/Tests/FakeModel/fake_anthropic.py", "--scenarios", dir + "/scenarios.json", "--log", log]
        guard let (p, _, out) = spawnHelper(argv) else { return nil }
        pid = p
        // the first line it prints is its port
        guard let n = Int(firstLine(of: out)) else { kill(p, SIGKILL); return nil }
        port = n
        fakeModelPid = p
        atexit { if fakeModelPid > 0 { kill(fakeModelPid, SIGKILL) } }
    }

    /// The requests it received for a scenario, as raw JSON lines.
    /// What points the real CLI at this fake: its key and address, no retries of its own, and
    /// none of its own traffic (telemetry, update checks), which would leave the machine.
    var cliEnv: [(String, String)] {
        [("ANTHROPIC_API_KEY", "sk-test"), ("ANTHROPIC_BASE_URL", "http://127.0.0.1:\(port)"),
         ("CLAUDE_CODE_MAX_RETRIES", "0"), ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")]
    }

    func requests(_ scenario: String) -> [String] {
        (readText(log) ?? "").split(separator: "\n").map(String.init).filter { $0.contains("\"scenario\": \"\(scenario)\"") }
    }
}

nonisolated(unsafe) private var fakeModelPid: pid_t = 0

/// The Claude Code CLI that scripts/test installs (QW_CLAUDE), else its cache.
let claudeBinary: String? = {
    if let p = getenv("QW_CLAUDE").map({ String(cString: $0) }), access(p, X_OK) == 0 { return p }
    let home = getenv("HOME").map { String(cString: $0) } ?? "/root"
    let cached = home + "/.cache/qw/claude-2.1.332/claude"
    return access(cached, X_OK) == 0 ? cached : nil
}()

/// `qw.agent.run` with the real CLI against the fake model: success is judged from the
/// result event, whatever the exit code says.
@Suite(.serialized)
struct AgentRunTests {
    /// Runs a script in a fresh project (with the catalogue's developer agent), HOME and
    /// TMPDIR, pointed at the fake model.
    func run(_ code: String, setup: (String) -> Void = { _ in }) throws -> (Outcome, String) {
        try runQw { dir in
            setup(dir)
            // no stagger between starts: the tests would only wait
            writeFile(dir + "/run.lua", "qw.limits{ agent_stagger = 0 }\n" +
                      code.replacingOccurrences("OUT", dir + "/proj/out.txt").replacingOccurrences("[[TESTDIR]]", "'" + dir + "'"))
            return ["run", dir + "/run.lua"]
        }
    }

    /// Runs qw with the arguments `args(dir)` gives, in that set-up.
    func runQw(_ args: (String) -> [String]) throws -> (Outcome, String) {
        let dir = makeTempDir()
        let env = try agentEnv(dir)
        let r = qw(args(dir), env: env, cwd: dir + "/proj", timeout: 120)
        return (r, dir)
    }

    /// Makes the project, HOME and TMPDIR under `dir`; the environment that points qw and
    /// the CLI at them and at the fake model.
    func agentEnv(_ dir: String) throws -> [(String, String)] {
        let cli = try #require(claudeBinary, "no Claude Code CLI: scripts/test installs it (QW_CLAUDE or ~/.cache/qw)")
        let fake = try #require(FakeModel.shared, "the fake model did not start")
        qwShell("mkdir -p '\(dir)/proj/.claude/agents' '\(dir)/home' '\(dir)/tmp' && cp '\(repoRoot)'/.claude/agents/*.md '\(dir)/proj/.claude/agents/'")
        return [("QW_CLAUDE", cli), ("HOME", dir + "/home"), ("TMPDIR", dir + "/tmp")] + fake.cliEnv + [("API_TIMEOUT_MS", "5000")]
    }

    /// The CLI's cost of a resumed session counts the earlier runs again: the ledger keeps
    /// each run's own spend, and `qw cost` adds them up once.
    @Test func aResumedSessionIsCountedOnceInTheLedger() throws {
        let (r, dir) = try run("""
            local a = qw.agent.run{ agent = "developer", prompt = "[[fake:hello]] one" }
            local b = qw.agent.run{ agent = "developer", prompt = "[[fake:hello]] two", session = a.session_id }
            print(a.cost_usd, b.cost_usd, b.session_cost_usd, b.session_id == a.session_id)
            local g = qw.resources().agents
            print(g.running, g.probing, g.max_agents)
            """)
        defer { removeTree(dir) }
        // sonnet: 100 input tokens at $2/M and 20 output tokens at $10/M per run
        #expect(r.stdout == "0.0004\t0.0004\t0.0008\ttrue\n0\tfalse\t3\n", "\(r.stdout)\(r.stderr)")
        let report = qw(["cost", "--by", "agent", "--json"], cwd: dir + "/proj")
        #expect(report.code == 0, "\(report.stderr)")
        #expect(report.stdout.contains("\"agent\": \"developer\""), "\(report.stdout)")
        #expect(report.stdout.contains("\"runs\": 2"))
        #expect(report.stdout.contains("\"cost_usd\": 0.0008"))
        let byModel = qw(["cost", "--by", "model", "--since", "1h"], cwd: dir + "/proj")
        #expect(byModel.stdout.contains("claude-sonnet-5-5"), "\(byModel.stdout)")
        #expect(byModel.stdout.contains("$0.0008"))
        #expect(qw(["cost", "--since", "2999-01-01"], cwd: dir + "/proj").stdout.hasPrefix("no agent runs"))
        let bad = qw(["cost", "--by", "colour"], cwd: dir + "/proj")
        #expect(bad.code == 1 && bad.stderr.contains("--by must be agent, model, workflow, task or day"))
    }

    /// The CLI's Bash tool starts commands in sessions of their own: killing the CLI's
    /// process group leaves them running. Nothing of a run outlives it, timed out or not.
    @Test func noProcessOfAnAgentRunOutlivesIt() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ prompt = "[[fake:sleeper]] go", timeout = 4, allowed_tools = { "Bash" } }
            print(r.ok, r.timed_out)
            r = qw.agent.run{ prompt = "[[fake:sleeper-done]] go", allowed_tools = { "Bash" } }
            print(r.ok, r.text)
            """)
        defer { removeTree(dir) }
        #expect(r.stdout == "false\ttrue\ntrue\tleft it running\n", "\(r.stdout)\(r.stderr)")
        #expect(FakeModel.shared?.requests("sleeper").count == 2, "the sleeper was started (the Bash call went through)")
        #expect(noneLeft(matching: "100.4321"), "a timed-out run's background process")
        #expect(noneLeft(matching: "100.4322"), "a finished run's background process")
        #expect(qwShell("ls '\(dir)/tmp'").isEmpty, "each run's TMPDIR is removed")
    }

    /// Agent tasks in a workflow: one named, one routed; kept on the next run; the ledger
    /// knows their workflow and task; session = "resume" continues the task's conversation,
    /// and starts a new one when the CLI no longer knows it.
    @Test func agentTasksInAWorkflowAndResumedSessions() throws {
        let (r, dir) = try run("""
            local wf = qw.workflow("agents")
            wf:task("impl", { agent = "developer", prompt = "[[fake:write]] write [[path:OUT]]", permission_mode = "acceptEdits" })
            wf:task("check", { agent = qw.router.route, prompt = "[[fake:hello]] write tests for it" }, { deps = { "impl" } })
            local a = wf:run()
            local b = wf:run()
            print(a.ok, #a.succeeded, a.results.check.text, b.ok, #b.succeeded, b.results.impl.ok)
            local one = qw.agent.run{ prompt = "[[fake:hello]] one", task = "solo", session = "resume" }
            local two = qw.agent.run{ prompt = "[[fake:hello]] two", task = "solo", session = "resume" }
            print(one.resumed_from, two.resumed_from == one.session_id, two.session_cost_usd > two.cost_usd)
            local gone = qw.agent.run{ prompt = "[[fake:hello]] three", task = "solo", session = "resume", env = { HOME = DIR .. "/other-home" } }
            print(gone.ok, gone.resumed_from, gone.session_id ~= one.session_id)
            """.replacingOccurrences("DIR", "[[TESTDIR]]"))
        defer { removeTree(dir) }
        let lines = r.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 3, "\(r.stdout)\(r.stderr)")
        #expect(lines[0] == "true\t2\tHello from the fake\ttrue\t2\ttrue", "\(lines[0])")
        #expect(lines[1] == "nil\ttrue\ttrue")
        #expect(lines[2] == "true\tnil\ttrue")
        #expect(r.stderr.contains("is gone; starting a new one"))
        let byTask = qw(["cost", "--by", "task", "--json"], cwd: dir + "/proj")
        #expect(byTask.stdout.contains("\"task\": \"impl\"") && byTask.stdout.contains("\"task\": \"check\""), "\(byTask.stdout)")
        let byAgent = qw(["cost", "--by", "agent"], cwd: dir + "/proj")
        #expect(byAgent.stdout.contains("qa-engineer"), "the routed task ran as qa-engineer: \(byAgent.stdout)")
        // the ledger keeps each run's peak memory, which the next memory requests read
        let peak = try StateStore(path: dir + "/proj/.qw/state.db").agentPeakMemory(agent: "developer")
        #expect((peak ?? 0) > 50 << 20, "the CLI's peak: \(String(describing: peak))")
    }

    /// A workflow's budget keeps the third of five agent tasks from starting: two runs cost
    /// $0.0008 and the history says the next costs $0.0004, which would pass $0.001.
    @Test func aWorkflowBudgetStopsTheThirdTaskFromStarting() throws {
        let (r, dir) = try run("""
            local wf = qw.workflow("budgeted", { budget_usd = 0.001 })
            local prev
            for i = 1, 5 do
              wf:task("t" .. i, { agent = "developer", prompt = "[[fake:hello]] step " .. i }, { deps = prev and { prev } or nil })
              prev = "t" .. i
            end
            local r = wf:run()
            print(table.concat(r.succeeded, ","), table.concat(r.failed, ","), table.concat(r.skipped, ","), table.concat(r.not_started, ","))
            print(r.results.t3.error)
            -- the process's budget counts the workflow's $0.0008 too
            qw.limits{ budget_usd = 0.0013 }
            local a = qw.agent.run{ agent = "developer", prompt = "[[fake:hello]] a" }
            local b = qw.agent.run{ agent = "developer", prompt = "[[fake:hello]] b" }
            print(a.ok, b.ok, b.budget_exceeded, qw.limits().budget_usd)
            """)
        defer { removeTree(dir) }
        let lines = r.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 3, "\(r.stdout)\(r.stderr)")
        #expect(lines[0] == "t1,t2\tt3\tt4,t5\tt3")
        #expect(lines[1] == "not started: workflow 'budgeted''s budget of $0.0010 would be passed ($0.0008 spent, this run expects $0.0004)")
        #expect(lines[2] == "true\tfalse\ttrue\t0.0013")
        #expect(FakeModel.shared?.requests("hello").filter { $0.contains("step 3") }.isEmpty == true, "t3 never reached the model")
    }

    /// A 429 storm: 12 agent tasks, 4 at a time, against a model that rejects its first 8
    /// requests. The first refusal halves the window (the other three of the burst were in
    /// flight already); a refusal of a run started after it shuts the gate, which then lets
    /// one probe through at a time until one gets through: every task ends ok, none counts as
    /// failed, and while the gate is shut the requests reach the model one after another.
    @Test func aRateLimitStormClosesTheGateAndEveryTaskEndsOk() throws {
        let (r, dir) = try run("""
            qw.limits{ max_agents = 4, agent_backoff = 0.3 }
            local wf = qw.workflow("storm", { max_concurrent = 12 })
            for i = 1, 12 do wf:task("t" .. i, { prompt = "[[fake:storm]] task " .. i }) end
            local r = wf:run()
            local retried = 0
            for _, res in pairs(r.results) do retried = retried + (res.rate_limit_retries or 0) end
            print(r.ok, #r.succeeded, #r.failed, retried)
            """)
        defer { removeTree(dir) }
        #expect(r.stdout == "true\t12\t0\t8\n", "\(r.stdout)\(r.stderr)")
        // from the fake's log: after the first burst (at most 4 in flight before the gate
        // closed), the rejected probes and the first success come one at a time
        let log = (FakeModel.shared?.requests("storm") ?? []).compactMap { line -> (Double, Int)? in
            guard let at = line.firstRange(of: "\"at\": "), let st = line.firstRange(of: "\"status\": ") else { return nil }
            let t = Double(line[at.upperBound...].prefix { $0.isNumber || $0 == "." }) ?? 0
            let code = Int(line[st.upperBound...].prefix { $0.isNumber }) ?? 0
            return (t, code)
        }.sorted { $0.0 < $1.0 }
        #expect(log.filter { $0.1 == 429 }.count == 8)
        #expect(log.filter { $0.1 == 200 }.count == 12)
        let firstOk = try #require(log.firstIndex { $0.1 == 200 })
        #expect(firstOk == 8)
        // the burst of 4, then the halved window's 2; the gate is shut from the sixth refusal on
        let probes = Array(log[5...firstOk])
        for k in 1..<probes.count {
            #expect(probes[k].0 - probes[k - 1].0 >= 0.25, "probe \(k) came \(probes[k].0 - probes[k - 1].0) s after the one before")
        }
        let status = qw(["-e", "local g = qw.agent.gate() print(g.running, g.probing)"], cwd: dir + "/proj")
        #expect(status.stdout == "0\tfalse\n", "\(status.stdout)\(status.stderr)")
    }

    /// Runs the CLI calls a success that are not: a Stop hook that keeps blocking ends the run
    /// with an empty result, a PostToolUse hook that stops it ends it as `hook_stopped`, and
    /// an unknown slash command goes to the model as plain text. A known command is fine.
    @Test func exitZeroRunsThatDidNotDoTheWorkAreFailures() throws {
        let (r, dir) = try run("""
            local function show(r) print(r.ok, r.code, r.error) end
            show(qw.agent.run{ prompt = "[[fake:hello]] /nonexistent is not a command", cwd = DIR .. "/plain" })
            show(qw.agent.run{ prompt = "/nonexistent [[fake:hello]] hi", cwd = DIR .. "/plain" })
            show(qw.agent.run{ prompt = "/greet [[fake:hello]] world", cwd = DIR .. "/plain" })
            show(qw.agent.run{ prompt = "[[fake:stopcap]] go", cwd = DIR .. "/stopper" })
            show(qw.agent.run{ prompt = "[[fake:hookstop]] go", cwd = DIR .. "/stopper", allowed_tools = { "Bash" } })
            """.replacingOccurrences("DIR", "[[TESTDIR]]")) { dir in
            qwShell("mkdir -p '\(dir)/plain/.claude/commands' '\(dir)/stopper/.claude'")
            writeFile(dir + "/plain/.claude/commands/greet.md", "---\ndescription: Greets\n---\nGreet $ARGUMENTS politely.\n")
            writeFile(dir + "/stopper/.claude/settings.json", #"""
                {"hooks": {
                  "Stop": [{"hooks": [{"type": "command", "command": "echo '{\"decision\": \"block\", \"reason\": \"keep going\"}'"}]}],
                  "PostToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "echo '{\"continue\": false, \"stopReason\": \"enough\"}'"}]}]
                }}
                """#)
        }
        defer { removeTree(dir) }
        let lines = r.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 5, "\(r.stdout)\(r.stderr)")
        #expect(lines[0] == "true\t0\tnil")
        #expect(lines[1] == "false\t0\tunknown slash command /nonexistent (not in .claude/commands, nor one of the CLI's)")
        #expect(lines[2] == "true\t0\tnil")
        #expect(lines[3] == "false\t0\tthe agent ended with no answer (a hook stopped it)")
        #expect(lines[4] == "false\t0\tstopped: hook_stopped")
        // the Stop hook really blocked: the model was asked again and again
        #expect((FakeModel.shared?.requests("stopcap").count ?? 0) > 2)
    }

    /// More shapes of failure: the turn limit (exit 1), a SIGINT during a tool (exit 0 with
    /// `error_during_execution`; the model's Bash call sends it to the CLI), and an overload
    /// (529), which counts as a rate limit: the gate paces its starts after it.
    @Test func theTurnLimitAnInterruptAndAnOverloadAreFailures() throws {
        let (r, dir) = try run("""
            qw.agent.max_rate_limit_retries = 0
            local function show(r) print(r.ok, r.code, r.error) end
            show(qw.agent.run{ prompt = "[[fake:loop]] go", allowed_tools = { "Bash" }, max_turns = 2 })
            show(qw.agent.run{ prompt = "[[fake:interrupt]] go", allowed_tools = { "Bash" } })
            local o = qw.agent.run{ prompt = "[[fake:overloaded]] go" }
            print(o.ok, o.code, o.api_error_status, o.rate_limited, qw.agent.gate().window)
            """)
        defer { removeTree(dir) }
        let lines = r.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 3, "\(r.stdout)\(r.stderr)")
        #expect(lines[0] == "false\t1\tReached maximum number of turns (2)")
        #expect(lines[1].hasPrefix("false\t0\tinterrupted (error_during_execution): "), "\(lines[1])")
        #expect(lines[2] == "false\t1\t529\ttrue\t1.0", "the window is halved: \(lines[2])")
    }

    /// qw runs the CLI with CLAUDE_CODE_MAX_RETRIES=0 unless told otherwise, so that the
    /// gate, not each CLI on its own, waits out a rate limit: one request per run. A run's
    /// `env` (or the environment) that sets it wins.
    @Test func theCLIDoesNotRetryOnItsOwnUnlessTold() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let env = try agentEnv(dir).filter { $0.0 != "CLAUDE_CODE_MAX_RETRIES" }
        writeFile(dir + "/run.lua", """
            qw.limits{ agent_stagger = 0 }
            qw.agent.max_rate_limit_retries = 0
            print(qw.agent.run{ prompt = "[[fake:overloaded-2]] go" }.ok)
            print(qw.agent.run{ prompt = "[[fake:overloaded-3]] go", env = { CLAUDE_CODE_MAX_RETRIES = "1" } }.ok)
            """)
        let r = qw(["run", dir + "/run.lua"], env: env, cwd: dir + "/proj", timeout: 120)
        #expect(r.stdout == "false\nfalse\n", "\(r.stdout)\(r.stderr)")
        #expect(FakeModel.shared?.requests("overloaded-2").count == 1)
        #expect(FakeModel.shared?.requests("overloaded-3").count == 2)
    }

    /// A budget stop: the CLI's `usage` leaves the last turn out, so the tokens come from
    /// `modelUsage`: every turn of 100k input tokens is counted.
    @Test func aBudgetStopCountsTheTokensOfEveryTurn() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ prompt = "[[fake:costly]] spend", budget_usd = 0.5 }
            print(r.ok, r.subtype, r.input_tokens, r.output_tokens, r.cost_usd > 0.5)
            """)
        defer { removeTree(dir) }
        let turns = FakeModel.shared?.requests("costly").count ?? 0
        #expect(turns >= 2, "the budget stopped it after the turn that passed it")
        #expect(r.stdout == "false\terror_max_budget_usd\t\(turns * 100000)\t\(turns * 1000)\ttrue\n", "\(r.stdout)\(r.stderr)")
        let cost = qw(["cost", "--json"], cwd: dir + "/proj")
        #expect(cost.stdout.contains("\"input_tokens\": \(turns * 100000)"), "\(cost.stdout)")
    }

    /// `kill -9` of qw while an agent task runs: the CLI it started is left behind, and the
    /// session is in the store from the CLI's first line. The next run with session =
    /// "resume" ends that leftover and continues the conversation.
    @Test func aKillNineOfQwThenResumeContinuesTheConversation() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let env = try agentEnv(dir)
        let script = { (prompt: String) in """
            qw.limits{ agent_stagger = 0 }
            local wf = qw.workflow("crashing")
            wf:task("impl", { agent = "developer", prompt = "\(prompt)", session = "resume", permission_mode = "acceptEdits" })
            local r = wf:run()
            print(r.ok, r.results.impl.text, r.results.impl.resumed_from ~= nil, r.results.impl.error)
            """ }
        writeFile(dir + "/one.lua", script("[[fake:resumable]] write [[path:\(dir)/proj/half.txt]]"))
        writeFile(dir + "/two.lua", script("[[fake:resumed]] carry on"))
        var spec = CommandSpec(argv: [qwBinary, "run", dir + "/one.lua"])
        spec.env = qwTestEnv + env
        spec.cwd = dir + "/proj"
        let reactor = Reactor()
        var result: ProcessResult?
        let child = try #require(ChildProcess.start(spec, reactor: reactor) { result = $0 })
        // until the model is asked for the turn after the Write: the run is mid-conversation
        let deadline = monotonicSeconds() + 30
        while result == nil && monotonicSeconds() < deadline
            && !(FakeModel.shared?.requests("resumable").contains { $0.contains("\"turn\": 1") } ?? false) {
            reactor.runOnce(maxWait: 0.02)
        }
        try #require(result == nil, "qw ended before the kill: \(String(decoding: (result?.stdout ?? []) + (result?.stderr ?? []), as: UTF8.self))")
        kill(child.pid, SIGKILL)
        while result == nil { reactor.runOnce() }
        #expect(readText(dir + "/proj/half.txt") == "first half\n")
        // the CLI (its prompt came on stdin) carries the run's environment
        let cli = "QW_WORKFLOW=crashing"
        #expect(!livePids(matching: cli, inEnvironment: true).isEmpty, "the CLI outlives a kill -9 of qw")

        let two = qw(["run", dir + "/two.lua"], env: env, cwd: dir + "/proj", timeout: 120)
        #expect(two.stdout == "true\tcarried on\ttrue\tnil\n", "\(two.stdout)\(two.stderr)")
        #expect(livePids(matching: cli, inEnvironment: true).isEmpty, "the leftover CLI was ended")
        // the resumed request carries the first run's conversation: its Write and its result
        let resumed = try #require(FakeModel.shared?.requests("resumed").last)
        #expect(resumed.contains("first half") && resumed.contains("tool_result"), "\(resumed.prefix(400))")
    }

    /// A run that waits for its turn at the gate starts its CLI ahead (its prompt goes in on
    /// stdin), and the CLI asks the model only once the gate lets the run begin: here the gate
    /// was shut for 2 s by another qw process's rate limit.
    @Test func aCLIStartedAheadOfItsTurnWaitsForTheGate() throws {
        var closedUntil = 0.0
        let (r, dir) = try run("""
            qw.agent.prestart_within = 10
            local r = qw.agent.run{ prompt = "[[fake:hello]] ahead of its turn" }
            print(r.ok, r.text, r.started_ahead ~= nil and r.started_ahead > 1.5)
            """) { dir in
            qwShell("mkdir -p '\(dir)/proj/.qw'")
            guard let store = try? StateStore(path: dir + "/proj/.qw/state.db") else { return }
            let set = AgentGate.Settings(maxAgents: 3, stagger: 0, backoff: 1)
            _ = try? store.gateAcquire(run: "elsewhere", settings: set)
            try? store.gateRelease(run: "elsewhere", limited: true, retryAfter: 2, settings: set)
            closedUntil = (try? store.gateStatus().closedUntil) ?? 0
        }
        defer { removeTree(dir) }
        #expect(r.stdout == "true\tHello from the fake\ttrue\n", "\(r.stdout)\(r.stderr)")
        #expect(closedUntil > 0, "the set-up closed the gate")
        let request = try #require(FakeModel.shared?.requests("hello").first { $0.contains("ahead of its turn") })
        let at = try #require(request.firstRange(of: "\"at\": ").flatMap { Double(request[$0.upperBound...].prefix { $0.isNumber || $0 == "." }) })
        #expect(at >= closedUntil, "the request came \(closedUntil - at) s before the gate reopened")
    }

    /// While another run holds a place at the gate, a run's CLI takes its turn only once it
    /// has started (should the other meet a rate limit meanwhile, it then waits for the pace);
    /// a run alone takes its turn at once.
    @Test func aCLITakesItsTurnOnceStartedWhileAnotherRunHoldsAPlace() throws {
        let script = """
            local r = qw.agent.run{ prompt = "[[fake:hello]] at its turn" }
            print(r.ok, ("%.3f"):format(r.started_ahead or -1))
            """
        let (lone, loneDir) = try run(script)
        defer { removeTree(loneDir) }
        let (beside, besideDir) = try run(script) { dir in
            qwShell("mkdir -p '\(dir)/proj/.qw'")
            guard let store = try? StateStore(path: dir + "/proj/.qw/state.db") else { return }
            _ = try? store.gateAcquire(run: "elsewhere", settings: AgentGate.Settings(maxAgents: 3, stagger: 0, backoff: 1))
        }
        defer { removeTree(besideDir) }
        func ahead(_ r: Outcome) -> Double? {
            let f = r.stdout.split(whereSeparator: { $0 == "\t" || $0 == "\n" })
            return f.count == 2 && f[0] == "true" ? Double(f[1]) : nil
        }
        let a = try #require(ahead(lone), "\(lone.stdout)\(lone.stderr)")
        let b = try #require(ahead(beside), "\(beside.stdout)\(beside.stderr)")
        // the CLI's own start takes a few tenths of a second; the lone run did not wait for it
        #expect(b >= 0.2, "beside another run, its CLI was up \(b) s before its turn")
        #expect(a < b / 2, "alone, its CLI was up \(a) s before its turn (beside another: \(b) s)")
    }

    /// A CLI started ahead that is still waiting for its turn when its run is cancelled (here
    /// by a batch's fail_fast) is ended with it.
    @Test func aCLIWaitingForItsTurnEndsWhenItsRunIsCancelled() throws {
        let (r, dir) = try run("""
            qw.agent.prestart_within = 60
            local rs = qw.batch({
              function() return qw.agent.run{ prompt = "[[fake:hello]] never sent", env = { QW_TEST_MARK = "ahead-cancelled" } } end,
              function()
                for _ = 1, 400 do
                  if qw.exec{ "sh", "-c", "grep -lsz '^QW_TEST_MARK=ahead-cancelled$' /proc/[0-9]*/environ | grep -q ." }.ok then error("its CLI is up") end
                  qw.sleep(0.05)
                end
              end }, { fail_fast = true })
            print(rs[1].ok, rs[2].error)
            """) { dir in
            qwShell("mkdir -p '\(dir)/proj/.qw'")
            guard let store = try? StateStore(path: dir + "/proj/.qw/state.db") else { return }
            let set = AgentGate.Settings(maxAgents: 3, stagger: 0, backoff: 1)
            _ = try? store.gateAcquire(run: "elsewhere", settings: set)
            try? store.gateRelease(run: "elsewhere", limited: true, retryAfter: 60, settings: set)
        }
        defer { removeTree(dir) }
        #expect(r.stdout.hasPrefix("false\t") && r.stdout.contains("its CLI is up"), "\(r.stdout)\(r.stderr)")
        #expect(livePids(matching: "QW_TEST_MARK=ahead-cancelled", inEnvironment: true).isEmpty, "the waiting CLI was ended")
        #expect(!(FakeModel.shared?.requests("hello").contains { $0.contains("never sent") } ?? true), "its prompt never went out")
    }

    /// `qw resources` shows the shared gate: how many agents run, and that a rate limit shut it
    /// and when it reopens (here as another qw process left it in the store).
    @Test func qwResourcesShowsTheGate() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let store = try StateStore(path: dir + "/state.db")
        let set = AgentGate.Settings(maxAgents: 3, stagger: 0, backoff: 1)
        #expect(try store.gateAcquire(run: "a", settings: set).granted)
        try store.gateRelease(run: "a", limited: true, retryAfter: 90, settings: set)
        let table = qw(["--state", dir + "/state.db", "resources"])
        #expect(table.stdout.contains("agents running    0 of max_agents 3"), "\(table.stdout)")
        #expect(table.stdout.contains("agent gate        closed by a rate limit, reopens in 1m29s, window 1 at once")
                || table.stdout.contains("agent gate        closed by a rate limit, reopens in 1m30s, window 1 at once"),
                "\(table.stdout)")
        let json = qw(["--state", dir + "/state.db", "resources", "--json"])
        #expect(json.stdout.contains("\"closed_until\": "), "\(json.stdout)")
        // no store: the gate is open, and none is made just to say so
        let bare = qw(["--state", dir + "/none.db", "resources"])
        #expect(bare.stdout.contains("agent gate        open\n"))
        #expect(access(dir + "/none.db", F_OK) != 0)
    }

    /// An agent task asks admission for the CLI's measured peak (300 MB), or more when the
    /// ledger shows that the agent's last runs used more.
    @Test func agentMemoryRequestsComeFromTheLedger() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let store = try StateStore(path: dir + "/state.db")
        var big = StateStore.AgentRunRecord(startedAt: 1, finishedAt: 2, ok: true)
        big.agent = "architect"
        big.maxRSS = 500 << 20
        try store.recordAgentRun(big)
        var small = StateStore.AgentRunRecord(startedAt: 3, finishedAt: 4, ok: true)
        small.agent = "developer"
        small.maxRSS = 200 << 20
        try store.recordAgentRun(small)
        let r = qw(["--state", dir + "/state.db", "-e",
                    "for _, a in ipairs{ 'architect', 'developer', 'qa-engineer' } do print(a, qw.agent.memory_request(a).memory >> 20) end"])
        #expect(r.stdout == "architect\t600\ndeveloper\t300\nqa-engineer\t300\n", "\(r.stdout)\(r.stderr)")
    }

    /// The implementation phase on a real repository: four tasks in three waves, each agent
    /// (the real CLI; the fake model answers with Bash calls that write and commit) in a
    /// worktree of its own; merged one at a time with a check after each. Task 3 conflicts
    /// with task 2: it is reported with the file and kept, with its worktree, for a person;
    /// task 4, which needs only task 2, still runs. The checkboxes are the only change to
    /// tasks.md. A second call runs nothing that was merged.
    @Test func implementationRunsEachTaskInItsWorktreeAndMergesInOrder() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let env = try agentEnv(dir) + [("GIT_AUTHOR_NAME", "qw test"), ("GIT_AUTHOR_EMAIL", "qw@example.com"),
                                       ("GIT_COMMITTER_NAME", "qw test"), ("GIT_COMMITTER_EMAIL", "qw@example.com")]
        let tasks = """
            # Tasks

            - [ ] 1. Base file [[fake:impl-1]]
            - [ ] 2. Second file [[fake:impl-2]]
              - _Depends: 1_
            - [ ] 3. Third file [[fake:impl-3]]
              - _Depends: 1_
            - [ ] 4. Fourth file [[fake:impl-4]]
              - _Depends: 2_
              - _Validation: `test -f f4.txt`_

            """
        qwShell("mkdir -p '\(dir)/proj/.claude/specs/demo'")
        writeFile(dir + "/proj/.claude/specs/demo/tasks.md", tasks)
        writeFile(dir + "/proj/.gitignore", ".qw/\n")
        _ = qwShell("cd '\(dir)/proj' && git init -q -b main && git add -A && git -c user.email=t@example.com -c user.name=t commit -qm init")
        writeFile(dir + "/impl.lua", """
            qw.limits{ agent_stagger = 0, max_agents = 2 }
            local r = qw.spec.implement("demo", { agent = "spec-task-executor", check = { "sh", "-c", "test -f f1.txt" } })
            print(r.ok, table.concat(r.merged, ","), #r.failed, r.failed[1] and r.failed[1].id, r.failed[1] and table.concat(r.failed[1].files or {}, ","))
            print(r.failed[1] and r.failed[1].error)
            """)
        let r = qw(["run", dir + "/impl.lua"], env: env, cwd: dir + "/proj", timeout: 180)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 2, "\(r.stdout)\(r.stderr)")
        #expect(lines[0] == "false\t1,2,4\t1\t3\tshared.txt")
        #expect(lines[1] == "qw/demo/3 conflicts with main in shared.txt")
        let p = dir + "/proj"
        #expect(readText(p + "/f1.txt") == "one\n" && readText(p + "/f4.txt") == "two\n" && readText(p + "/shared.txt") == "two\n")
        #expect(readText(p + "/.claude/specs/demo/tasks.md") == tasks.replacingOccurrences("- [ ] 1.", "- [x] 1.")
                    .replacingOccurrences("- [ ] 2.", "- [x] 2.").replacingOccurrences("- [ ] 3.", "- [-] 3.")
                    .replacingOccurrences("- [ ] 4.", "- [x] 4."))
        // merged in order, one merge commit per task
        #expect(qwShell("cd '\(p)' && git log --merges --format=%s main") == "Merge task 4 of demo\nMerge task 2 of demo\nMerge task 1 of demo\n")
        // only the conflicting task's worktree and branch are left
        #expect(qwShell("cd '\(p)' && git worktree list | wc -l") == "2\n")
        #expect(qwShell("cd '\(p)' && git branch --format='%(refname:short)'") == "main\nqw/demo/3\n")
        let again = qw(["run", dir + "/impl.lua"], env: env, cwd: p, timeout: 180)
        #expect(again.stdout.hasPrefix("false\t\t1\t3\tshared.txt"), "only task 3 runs again: \(again.stdout)\(again.stderr)")
        #expect((FakeModel.shared?.requests("impl-1").count ?? 0) == 2, "task 1 was not run again")
    }

    /// A task whose agent fails leaves nothing behind: its worktree held no work, so it goes
    /// with its branch; a task whose `_Validation:` command fails is not merged.
    @Test func aFailedTaskLeavesNoEmptyWorktreeAndValidationGatesTheMerge() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let env = try agentEnv(dir) + [("GIT_AUTHOR_NAME", "qw test"), ("GIT_AUTHOR_EMAIL", "qw@example.com"),
                                       ("GIT_COMMITTER_NAME", "qw test"), ("GIT_COMMITTER_EMAIL", "qw@example.com")]
        let p = dir + "/proj"
        qwShell("mkdir -p '\(p)/.claude/specs/two'")
        writeFile(p + "/.claude/specs/two/tasks.md", """
            # Tasks

            - [ ] 1. Refused [[fake:denied]]
            - [ ] 2. Written but not valid [[fake:impl-1]]
              - _Validation: `test -f nothere.txt`_

            """)
        writeFile(p + "/.gitignore", ".qw/\n")
        _ = qwShell("cd '\(p)' && git init -q -b main && git add -A && git -c user.email=t@example.com -c user.name=t commit -qm init")
        writeFile(dir + "/two.lua", """
            qw.limits{ agent_stagger = 0 }
            local r = qw.spec.implement("two", { agent = "spec-task-executor" })
            for _, f in ipairs(r.failed) do print(f.id, f.error) end
            """)
        let r = qw(["run", dir + "/two.lua"], env: env, cwd: p, timeout: 120)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 2, "\(r.stdout)\(r.stderr)")
        #expect(lines[0].hasPrefix("1\tthe agent: "), "\(lines[0])")
        #expect(lines[1] == "2\tits validation `test -f nothere.txt` failed: exited with code 1")
        // task 1's empty worktree is gone, task 2's (a commit, not merged) is kept
        #expect(qwShell("cd '\(p)' && git branch --format='%(refname:short)'") == "main\nqw/two/2\n")
        #expect(qwShell("cd '\(p)' && git log --merges --oneline main").isEmpty)
    }

    /// `qw spec run` from requirements to review with `--approve auto`: every phase is a task
    /// of one workflow, each document written by its agent (the fake answers with Write),
    /// validated, approved (a record in the store), then the tasks implemented in worktrees
    /// and merged, tested and reviewed. A second run keeps every phase.
    @Test func aSpecRunGoesFromRequirementsToReview() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let env = try agentEnv(dir) + [("GIT_AUTHOR_NAME", "qw test"), ("GIT_AUTHOR_EMAIL", "qw@example.com"),
                                       ("GIT_COMMITTER_NAME", "qw test"), ("GIT_COMMITTER_EMAIL", "qw@example.com")]
        let p = dir + "/proj"
        let spec = p + "/.claude/specs/files"
        qwShell("mkdir -p '\(p)/.claude/steering'")
        writeFile(p + "/.claude/steering/product.md", "# Product\n\n## Overview\n\nA folder of files.\n")
        writeFile(p + "/.gitignore", ".qw/\n")
        _ = qwShell("cd '\(p)' && git init -q -b main && git add -A && git -c user.email=t@example.com -c user.name=t commit -qm init")
        writeFile(dir + "/run.lua", """
            qw.limits{ agent_stagger = 0 }
            local d = "\(p)/.qw/drafts/files"
            local r = qw.spec.run("files", { approve = "auto", check = { "sh", "-c", "test -f f1.txt" }, agent = "spec-task-executor",
              description = "three files", notes = {
                requirements = "[[fake:req-doc]] [[path:" .. d .. "/requirements.md]]",
                ["requirements-validation"] = "[[fake:val-ok]]", ["design-validation"] = "[[fake:val-ok]]", ["tasks-validation"] = "[[fake:val-ok]]",
                design = "[[fake:design-doc]] [[path:" .. d .. "/design.md]]",
                tasks = "[[fake:tasks-doc]] [[path:" .. d .. "/tasks.md]]",
                review = "[[fake:review-ok]]" } })
            print(r.ok, #r.succeeded, #r.failed, r.implementation and table.concat(r.implementation.merged, ","))
            for _, f in ipairs(r.failed) do print(f, r.results[f].error) end
            for _, d in ipairs{ "requirements", "design", "tasks" } do local a = qw.spec.approval("files", d) print(d, a.state, a.by) end
            """)
        let r = qw(["run", dir + "/run.lua"], env: env, cwd: p, timeout: 240)
        #expect(r.stdout == "true\t12\t0\t1,2,3\nrequirements\tapproved\tauto\ndesign\tapproved\tauto\ntasks\tapproved\tauto\n",
                "\(r.stdout)\(r.stderr)")
        #expect(readText(spec + "/tasks.md")?.contains("- [x] 3. Fourth file") == true)
        #expect(readText(p + "/f4.txt") == "two\n")
        #expect(qwShell("cd '\(p)' && git worktree list | wc -l") == "1\n", "no worktree is left")
        let before = FakeModel.shared?.requests("req-doc").count ?? 0
        let again = qw(["spec", "run", "files", "--approve", "auto", "--check", "test -f f1.txt"], env: env, cwd: p, timeout: 240)
        #expect(again.code == 0, "\(again.stdout)\(again.stderr)")
        #expect(again.stdout.contains("requirements             kept") && again.stdout.contains("review                   kept"), "\(again.stdout)")
        #expect(FakeModel.shared?.requests("req-doc").count == before, "nothing kept ran again")
    }

    /// `--approve ask`: the run waits, holding no agent, for `qw spec approve` from another
    /// process, then goes on; `--approve file`: for a file NAME/PHASE.approved naming who.
    /// `--until` stops it after the approval.
    @Test(arguments: ["ask", "file"])
    func aSpecRunWaitsForAnApprovalFromAnotherProcess(mode: String) throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let env = try agentEnv(dir)
        let p = dir + "/proj"
        qwShell("mkdir -p '\(p)/.claude/steering'")
        writeFile(p + "/.claude/steering/product.md", "# Product\n\n## Overview\n\nA folder of files.\n")
        writeFile(dir + "/ask.lua", """
            qw.limits{ agent_stagger = 0 }
            local d = "\(p)/.qw/drafts/asked"
            local r = qw.spec.run("asked", { approve = "\(mode)", poll = 0.05, ["until"] = "requirements-approval", notes = {
                requirements = "[[fake:req-doc]] [[path:" .. d .. "/requirements.md]]", ["requirements-validation"] = "[[fake:val-ok]] (approve \(mode))" } })
            print(r.ok, #r.succeeded, qw.spec.approval("asked", "requirements").by)
            """)
        var spec = CommandSpec(argv: [qwBinary, "run", dir + "/ask.lua"])
        spec.env = qwTestEnv + env
        spec.cwd = p
        let reactor = Reactor()
        var result: ProcessResult?
        _ = try #require(ChildProcess.start(spec, reactor: reactor) { result = $0 })
        // until the validation has run: the run is waiting for the approval
        let deadline = monotonicSeconds() + 60
        while result == nil && monotonicSeconds() < deadline
            && !(FakeModel.shared?.requests("val-ok").contains { $0.contains("(approve \(mode))") } ?? false) {
            reactor.runOnce(maxWait: 0.02)
        }
        try #require(result == nil, "it did not wait: \(String(decoding: result?.stdout ?? [], as: UTF8.self))")
        if mode == "ask" {
            let approve = qw(["spec", "approve", "asked", "requirements", "--by", "ana"], cwd: p)
            #expect(approve.code == 0, "\(approve.stderr)")
        } else {
            writeFile(p + "/.claude/specs/asked/requirements.approved", "ana\n")
        }
        while result == nil { reactor.runOnce() }
        let out = String(decoding: result!.stdout, as: UTF8.self)
        #expect(out == "true\t3\tana\n", "\(out)\(String(decoding: result!.stderr, as: UTF8.self))")
    }

    /// The whole catalogue loaded into the real CLI: every agent is offered to the model, and
    /// an Agent tool call reaches a subagent whose request carries that agent's prompt, model
    /// and only its tools.
    @Test func theCatalogueReachesTheRealCLIAndItsSubagents() throws {
        let (r, dir) = try runQw { _ in ["agent", "run", "-", "[[fake:delegate]] go"] }
        defer { removeTree(dir) }
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout == "delegated\n")
        let log = try #require(FakeModel.shared?.log)
        let names = qwShell("ls '\(repoRoot)/.claude/agents'").split(separator: "\n").map { String($0.dropLast(3)) }
        #expect(names.count == 21)
        let check = qw(["-e", """
            local names = { \(names.map { "\"\($0)\"" }.joined(separator: ", ")) }
            local offered, subs = {}, {}
            local function texts(v, out)
              if type(v) == "string" then out[#out + 1] = v elseif type(v) == "table" then for _, x in pairs(v) do texts(x, out) end end
              return out
            end
            for line in io.lines([[\(log)]]) do
              local e = qw.json.decode(line)
              local body = table.concat(texts(e.body, {}), "\\n")
              if e.scenario == "delegate" and e.turn == 0 then
                for _, n in ipairs(names) do if body:find("\\n%- " .. n:gsub("%-", "%%-") .. ":") then offered[#offered + 1] = n end end
              elseif e.scenario == "sub-review" or e.scenario == "sub-exec" then
                local tools = {}
                for _, t in ipairs(e.body.tools) do tools[#tools + 1] = t.name end
                table.sort(tools)
                subs[e.scenario] = e.body.model .. " " .. table.concat(tools, ",") .. " " ..
                  tostring(body:find("You are the code reviewer", 1, true) ~= nil or body:find("You execute one task of a spec", 1, true) ~= nil)
              end
            end
            print(#offered, subs["sub-review"], subs["sub-exec"])
            """])
        #expect(check.code == 0, "\(check.stderr)")
        // code-reviewer: opus, Read, Glob, Grep, Bash (Glob and Grep come only without Bash);
        // spec-task-executor: sonnet, Read, Write, Edit, Bash, Glob, Grep
        #expect(check.stdout == "21\tclaude-opus-5-5 Bash,Read true\tclaude-sonnet-5-5 Bash,Edit,Read,Write true\n", "\(check.stdout)")
    }

    @Test func qwAgentRunPrintsTheAnswerAndExitsByTheResult() throws {
        let (limit, dir0) = try runQw { _ in ["--max-agents", "2", "-e", "print(qw.limits().max_agents)"] }
        defer { removeTree(dir0) }
        #expect(limit.stdout == "2\n", "\(limit.stderr)")
        let (ok, dir) = try runQw { _ in ["agent", "run", "-", "[[fake:hello]] hi"] }
        defer { removeTree(dir) }
        #expect(ok.code == 0, "\(ok.stderr)")
        #expect(ok.stdout == "Hello from the fake\n")
        #expect(ok.stderr.hasPrefix("ok: completed, $0.0008, 100 in / 20 out tokens, 1 turns, session "), "\(ok.stderr)")
        let (bad, dir2) = try runQw { _ in ["agent", "run", "developer", "[[fake:denied]] hi", "--json"] }
        defer { removeTree(dir2) }
        #expect(bad.code == 1)
        #expect(bad.stdout.contains("\"api_error_status\":401"), "\(bad.stdout)")
        // options on either side of the two arguments; the prompt reaches the CLI as it is,
        // whatever it holds (it is never Lua code)
        let odd = "[[fake:hello]] ]==] os.exit(3) --[==[ verbatim-7f3"
        let (opts, dir3) = try runQw { _ in ["agent", "run", "--model", "claude-sonnet-5-5", "-", odd, "--max-turns", "2", "-v"] }
        defer { removeTree(dir3) }
        #expect(opts.code == 0, "\(opts.stderr)")
        #expect(opts.stdout == "Hello from the fake\n")
        let sent = try #require(FakeModel.shared?.requests("hello").last { $0.contains("verbatim-7f3") })
        #expect(sent.contains("]==] os.exit(3) --[==[ verbatim-7f3"))
        #expect(sent.contains("\"model\": \"claude-sonnet-5-5\""), "\(sent.prefix(300))")
        // a value of the wrong type is the argument parser's to report, as for every command
        let (wrong, dir4) = try runQw { _ in ["agent", "run", "-", "[[fake:hello]] hi", "--max-turns", "many"] }
        defer { removeTree(dir4) }
        #expect(wrong.code == 64)
        #expect(wrong.stderr.contains("The value 'many' is invalid for '--max-turns <max-turns>'"), "\(wrong.stderr)")
    }

    @Test func anAgentRunsWithItsModelAndToolsAndWritesRealFiles() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ agent = "developer", prompt = "[[fake:write]] write [[path:OUT]]", permission_mode = "acceptEdits" }
            print(r.ok, r.code, r.turns, r.text, r.input_tokens, r.output_tokens, r.cost_usd > 0, r.session_id ~= nil, r.terminal_reason)
            """)
        defer { removeTree(dir) }
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout == "true\t0\t2\tdone writing\t20\t10\ttrue\ttrue\tcompleted\n")
        #expect(readText(dir + "/proj/out.txt") == "written by the agent\n")
        let req = try #require(FakeModel.shared?.requests("write").first)
        #expect(req.contains("\"model\": \"claude-sonnet-5-5\""), "the developer agent's model")
        #expect(!req.contains("\"name\": \"WebFetch\""), "only the agent's tools")
    }

    /// An API error: the CLI says `subtype: success` with `is_error: true`.
    @Test func anAPIErrorIsAFailureWithItsStatus() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ prompt = "[[fake:denied]] hi" }
            print(r.ok, r.code, r.api_error_status, r.terminal_reason, (r.error or ""):find("Invalid API key", 1, true) ~= nil)
            """)
        defer { removeTree(dir) }
        #expect(r.stdout == "false\t1\t401\tapi_error\ttrue\n", "\(r.stderr)")
    }

    /// The CLI exits 0 when a json_schema run ends with text only: that is not a success.
    @Test func aMissingStructuredOutputIsAFailureThoughTheCLIExitsZero() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ prompt = "[[fake:textonly]] answer", json_schema = { type = "object", properties = { n = { type = "number" } } } }
            print(r.ok, r.code, r.error)
            """)
        defer { removeTree(dir) }
        #expect(r.stdout == "false\t0\tthe agent gave no structured output for the json_schema\n", "\(r.stderr)")
    }

    /// An unknown session to resume is a failure with the CLI's reason; a run that prints no
    /// result at all (bypass mode as root, without IS_SANDBOX) reports the CLI's stderr.
    @Test func failuresCarryTheCLIsOwnWords() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ prompt = "[[fake:hello]] hi", session = "00000000-0000-4000-8000-000000000000" }
            print(r.ok, r.code, r.error)
            r = qw.agent.run{ prompt = "[[fake:hello]] hi", permission_mode = "bypassPermissions" }
            print(r.ok, r.code, r.error)
            local ok, e = pcall(qw.agent.run, { agent = "nobody", prompt = "hi" })
            print(ok, e)
            """)
        defer { removeTree(dir) }
        let lines = r.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 3, "\(r.stdout)\(r.stderr)")
        #expect(lines[0] == "false\t1\tNo conversation found with session ID: 00000000-0000-4000-8000-000000000000")
        if getuid() == 0 {
            #expect(lines[1].hasPrefix("false\t1\tthe CLI gave no result: "), "\(lines[1])")
            #expect(lines[1].contains("cannot be used with root/sudo privileges"), "\(lines[1])")
        } else {
            #expect(lines[1] == "true\t0\tnil")
        }
        #expect(lines[2].hasPrefix("false\t") && lines[2].contains("no agent named 'nobody'"), "\(lines[2])")
    }
}
