import Glibc
import QuantumwalaCore
import Testing

/// `qw hook` with the real CLI firing real hooks against the fake model: what is recorded,
/// what a policy's answers do to the run, and that nothing in qw breaks an agent's run.
@Suite(.serialized)
struct HookTests {
    let agents = AgentRunTests()

    /// The hook events `qw init` registers, each running `qw hook`.
    static let events = ["SessionStart", "UserPromptSubmit", "UserPromptExpansion", "PreToolUse", "PermissionRequest",
                         "PostToolUse", "PostToolUseFailure", "Stop", "SubagentStart", "SubagentStop", "SessionEnd"]

    /// A settings file that registers `qw hook` (with extra words) for every event.
    static func settings(command: String = "qw hook") -> String {
        let tools: Set = ["PreToolUse", "PermissionRequest", "PostToolUse", "PostToolUseFailure"]
        let entries = events.map { e in
            "\"\(e)\": [{\(tools.contains(e) ? "\"matcher\": \"*\", " : "")\"hooks\": [{\"type\": \"command\", \"command\": \"\(command)\", \"timeout\": 10}]}]"
        }
        return "{\"hooks\": {\n  " + entries.joined(separator: ",\n  ") + "\n}}\n"
    }

    /// Runs `code` in a project with the hooks registered and `.qw/hooks.lua` holding `policy`.
    func run(_ code: String, policy: String = "", setup: @escaping (String) -> Void = { _ in }) throws -> (Outcome, String) {
        try agents.run(code) { dir in
            qwShell("mkdir -p '\(dir)/proj/.claude' '\(dir)/proj/.qw'")
            writeFile(dir + "/proj/.claude/settings.json", HookTests.settings())
            if !policy.isEmpty { writeFile(dir + "/proj/.qw/hooks.lua", policy) }
            setup(dir)
        }
    }

    func events(_ dir: String) throws -> [HookEventRecord] {
        try StateStore(path: dir + "/proj/.qw/state.db").hookEvents()
    }

    /// Each event that fires in a headless run reaches `qw hook` and is recorded with its
    /// session, the run that qw started, the tool, its input, the paths and the duration.
    @Test func eachHeadlessEventIsRecordedWithItsFields() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ prompt = "[[fake:tour]] go", allowed_tools = { "Bash", "Agent" },
                                    workflow = "tour", task = "t1" }
            print(r.ok, r.text, r.session_id)
            """)
        defer { removeTree(dir) }
        let out = r.stdout.split(separator: "\t").map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
        try #require(out.count == 3 && out[0] == "true", "\(r.stdout)\(r.stderr)")
        #expect(out[1] == "toured")
        let session = out[2]
        let all = try events(dir)
        let names = all.map(\.event)
        for e in ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolUseFailure", "SubagentStart",
                  "SubagentStop", "Stop", "SessionEnd"] {
            #expect(names.contains(e), "\(e) was not recorded: \(names)")
        }
        #expect(names.first == "SessionStart" && names.last == "SessionEnd", "\(names)")
        #expect(all.allSatisfy { $0.session == session }, "every event names the session")
        let runs = Set(all.compactMap(\.run))
        #expect(runs.count == 1 && all.allSatisfy { $0.run != nil }, "every event names the qw run: \(runs)")
        #expect(all.allSatisfy { $0.workflow == "tour" && $0.task == "t1" })
        #expect(all.allSatisfy { $0.outcome == "ok" }, "\(all.map { ($0.event, $0.outcome, $0.reason) })")
        let bash = try #require(all.first { $0.event == "PostToolUse" && $0.tool == "Bash" })
        #expect(bash.summary == "echo hi")
        #expect(bash.durationMS != nil)
        let failed = try #require(all.first { $0.event == "PostToolUseFailure" })
        #expect(failed.summary == "exit 3" && (failed.detail ?? "").contains("Exit code 3"), "\(failed)")
        let sub = try #require(all.first { $0.event == "SubagentStart" })
        #expect(sub.agent == "code-reviewer")
        #expect(all.first { $0.event == "PreToolUse" && $0.tool == "Agent" }?.summary == "code-reviewer: review it")
        #expect(all.allSatisfy { ($0.latencyMS ?? 999) < 1000 })
        #expect((all.first { $0.event == "SessionStart" }?.detail ?? "").contains("\"source\":\"startup\""))
    }

    /// The rarer events that fire in headless runs reach `qw hook` too when registered:
    /// InstructionsLoaded (a CLAUDE.md), UserPromptExpansion and PreSkillShellCommand (a slash
    /// command with a `!` line), CwdChanged, PostToolBatch, MessageDisplay, PreCompact and
    /// PostCompact (`/compact` of a session), Setup (`--init-only`). WorktreeCreate is left
    /// out: a hook for it replaces git's worktree creation.
    @Test func theRarerHeadlessEventsAreRecordedToo() throws {
        let all = ["PreToolUse", "PostToolUse", "PostToolUseFailure", "PostToolBatch", "Notification", "UserPromptSubmit",
                   "UserPromptExpansion", "SessionStart", "SessionEnd", "Stop", "StopFailure", "SubagentStart", "SubagentStop",
                   "PreCompact", "PostCompact", "PermissionRequest", "PermissionDenied", "Setup", "InstructionsLoaded", "CwdChanged",
                   "MessageDisplay", "PreSkillShellCommand"]
        let settings = "{\"hooks\": {" + all.map { "\"\($0)\": [{\"hooks\": [{\"type\": \"command\", \"command\": \"qw hook\", \"timeout\": 10}]}]" }
            .joined(separator: ", ") + "}}\n"
        let (r, dir) = try agents.run("""
            local a = qw.agent.run{ prompt = "/greet [[fake:tour2]] you", allowed_tools = { "Bash" } }
            print(a.ok, a.text)
            local c = qw.agent.run{ prompt = "/compact", session = a.session_id }
            print(c.ok, c.error, c.turns)
            """) { dir in
            qwShell("mkdir -p '\(dir)/proj/.claude/commands'")
            writeFile(dir + "/proj/.claude/settings.json", settings)
            writeFile(dir + "/proj/CLAUDE.md", "# Notes\n\nBe brief.\n")
            writeFile(dir + "/proj/.claude/commands/greet.md", "---\ndescription: Greets\nallowed-tools: Bash(echo:*)\n---\nToday: !`echo sunny`\n\nGreet $ARGUMENTS.\n")
        }
        defer { removeTree(dir) }
        #expect(r.stdout == "true\ttoured again\ntrue\tnil\t0\n", "\(r.stdout)\(r.stderr)")
        let env = try agents.agentEnv(dir)
        let cli = try #require(claudeBinary)
        let setup = runProgram([cli, "--init-only"], env: env + [("PATH", qwDir + ":" + (getenv("PATH").map { String(cString: $0) } ?? "/usr/bin"))],
                               cwd: dir + "/proj", timeout: 60)
        #expect(setup.code == 0, "\(setup.stderr)")
        let names = Set(try events(dir).map(\.event))
        for e in ["InstructionsLoaded", "UserPromptExpansion", "PreSkillShellCommand", "CwdChanged", "PostToolBatch", "MessageDisplay",
                  "PreCompact", "PostCompact", "Setup"] {
            #expect(names.contains(e), "\(e) was not recorded: \(names.sorted())")
        }
        let expansion = try events(dir).first { $0.event == "UserPromptExpansion" }
        #expect(expansion?.detail?.contains("\"command_name\":\"greet\"") == true, "\(expansion?.detail ?? "")")
        let cd = try events(dir).first { $0.event == "CwdChanged" }
        #expect(cd?.detail?.contains("\"new_cwd\":\"/tmp\"") == true, "\(cd?.detail ?? "")")
        let recorded = try events(dir)
        #expect(recorded.allSatisfy { $0.outcome == "ok" }, "\(recorded.filter { $0.outcome != "ok" }.map { ($0.event, $0.reason) })")
    }

    /// The shipped guard_rm policy denies `rm -rf` of a folder outside the project: the
    /// model gets the reason, the folder survives, the run goes on.
    @Test func aPreToolUsePolicyDeniesRmRfOutsideTheProject() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ prompt = "[[fake:rmrf]] clean [[path:" .. DIR .. "/victim]]", allowed_tools = { "Bash" } }
            print(r.ok, r.text, #r.permission_denials)
            """.replacingOccurrences("DIR", "[[TESTDIR]]"), policy: "qw.hooks.enable(\"guard_rm\")\n") { dir in
            qwShell("mkdir -p '\(dir)/victim' && echo keep > '\(dir)/victim/file'")
        }
        defer { removeTree(dir) }
        #expect(r.stdout == "true\tafter rm\t1\n", "\(r.stdout)\(r.stderr)")
        #expect(readText(dir + "/victim/file") == "keep\n", "the folder survives")
        let asked = FakeModel.shared?.requests("rmrf").filter { $0.contains(dir + "/victim") } ?? []
        #expect(asked.contains { $0.contains("qw policy guard_rm: rm -r of \(dir)/victim, which is outside the project") },
                "the model got the denial reason")
        let denied = try #require(try events(dir).first { $0.event == "PreToolUse" && $0.tool == "Bash" && $0.summary?.contains("victim") == true })
        #expect(denied.outcome == "deny")
        #expect(denied.reason?.contains("guard_rm") == true)
    }

    /// A PermissionRequest policy lets a tool run in the default permission mode, where the
    /// CLI alone refuses it.
    @Test func aPermissionRequestPolicyLetsAToolRunHeadless() throws {
        let (r, dir) = try run("""
            local a = qw.agent.run{ prompt = "[[fake:perm-write]] write [[path:" .. DIR .. "/proj/notes/refused.txt]]" }
            print(a.ok, #(a.permission_denials or {}))
            """.replacingOccurrences("DIR", "[[TESTDIR]]"), policy: """
            -- the second run is allowed by the file below, written between the runs
            if io.open(".qw/allow", "r") then qw.hooks.enable("permissions", { allow = { "Write(notes/*.txt)" } }) end
            """) { dir in qwShell("mkdir -p '\(dir)/proj/notes'") }
        defer { removeTree(dir) }
        #expect(r.stdout == "true\t1\n", "\(r.stdout)\(r.stderr)")
        #expect(readText(dir + "/proj/notes/refused.txt") == nil, "without the policy the CLI refuses the write")
        writeFile(dir + "/proj/.qw/allow", "")
        let env = try agents.agentEnv(dir)
        let second = qw(["-e", """
            local b = qw.agent.run{ prompt = "[[fake:perm-write]] write [[path:\(dir)/proj/notes/allowed.txt]]" }
            print(b.ok, #(b.permission_denials or {}))
            """], env: env, cwd: dir + "/proj", timeout: 120)
        #expect(second.stdout == "true\t0\n", "\(second.stdout)\(second.stderr)")
        #expect(readText(dir + "/proj/notes/allowed.txt") == "permitted\n")
        let answered = try events(dir).filter { $0.event == "PermissionRequest" }
        #expect(answered.map(\.outcome) == ["ok", "allow"], "\(answered.map { ($0.outcome, $0.summary) })")
    }

    /// A Stop policy that blocks once continues the run exactly once.
    @Test func aStopPolicyThatBlocksOnceContinuesTheRunOnce() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ prompt = "[[fake:stop-once]] go [[path:" .. DIR .. "]]" }
            print(r.ok, r.text, r.turns)
            """.replacingOccurrences("DIR", "[[TESTDIR]]"), policy: """
            qw.hooks.on("Stop", function(ev)
              if not ev.stop_hook_active then return { block = "check the tests once more" } end
            end)
            """)
        defer { removeTree(dir) }
        #expect(r.stdout == "true\tfinished\t2\n", "\(r.stdout)\(r.stderr)")
        let asked = FakeModel.shared?.requests("stop-once").filter { $0.contains(dir) } ?? []
        #expect(asked.count == 2, "asked once, then once more after the block: \(asked.count)")
        #expect(asked.last?.contains("check the tests once more") == true)
        let stops = try events(dir).filter { $0.event == "Stop" }
        #expect(stops.map(\.outcome) == ["block", "ok"])
    }

    /// A policy with an error, or a store that another process holds locked, leave the
    /// agent's run successful; each says so in one line, and the events the locked store could
    /// not take are imported by the next hook.
    @Test func aBrokenPolicyAndALockedStoreLeaveTheRunSuccessful() throws {
        let (r, dir) = try run("""
            local r = qw.agent.run{ prompt = "[[fake:tour]] go", allowed_tools = { "Bash", "Agent" } }
            print(r.ok, r.text)
            """, policy: """
            qw.hooks.on("PreToolUse", function(ev) return ev.tool_input.nothing.here end)
            """)
        defer { removeTree(dir) }
        #expect(r.stdout == "true\ttoured\n", "\(r.stdout)\(r.stderr)")
        let pre = try events(dir).filter { $0.event == "PreToolUse" }
        #expect(!pre.isEmpty && pre.allSatisfy { $0.outcome == "error" && ($0.reason ?? "").contains(".qw/hooks.lua:1:") },
                "\(pre.map { ($0.outcome, $0.reason) })")

        // a syntax error in the policy file, and the store locked by another process
        writeFile(dir + "/proj/.qw/hooks.lua", "qw.hooks.on(\"Stop\", function(ev) return { block = end)\n")
        let store = dir + "/proj/.qw/state.db"
        let before = try events(dir).count
        let locker = try #require(StoreLocker(store))
        let env = try agents.agentEnv(dir)
        let cli = try #require(claudeBinary)
        let run = runProgram([cli, "-p", "[[fake:tour]] go", "--output-format", "json", "--allowedTools", "Bash,Agent"],
                             env: env + [("QW_HOOK_WAIT", "0.2"), ("PATH", qwDir + ":" + (getenv("PATH").map { String(cString: $0) } ?? "/usr/bin"))],
                             cwd: dir + "/proj", timeout: 120)
        locker.release()
        #expect(run.code == 0 && run.stdout.contains("\"result\":\"toured\""), "\(run.stdout)\(run.stderr)")
        let pending = readText(dir + "/proj/.qw/hooks-pending.jsonl") ?? ""
        #expect(pending.split(separator: "\n").count >= 9, "the events were kept aside: \(pending)")
        #expect(try events(dir).count == before, "nothing reached the locked store")
        // the next hook takes them in
        let next = qw(["hook"], stdin: #"{"session_id": "later", "hook_event_name": "SessionEnd", "reason": "other"}"#, cwd: dir + "/proj")
        #expect(next.code == 0 && next.stdout.isEmpty)
        #expect(next.stderr.contains("qw hook: policy: .qw/hooks.lua:1:"), "\(next.stderr)")
        let after = try events(dir)
        #expect(after.count >= before + 10, "\(after.count) after \(before)")
        #expect(readText(dir + "/proj/.qw/hooks-pending.jsonl") == nil)
        #expect(after.contains { $0.event == "SessionEnd" && $0.session != "later" })
    }

    /// The phase policy on an edit outside a spec session (a person in an interactive
    /// session): a complete requirements.md is noticed once, waits for its approval (the
    /// default), and `qw spec approve` queues the design; a document with template
    /// placeholders left is not complete.
    @Test func aCompleteDocumentWaitsForItsApprovalThenTheNextStepIsQueued() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/.claude/specs/demo'")
        writeFile(dir + "/.claude/specs/demo/requirements.md", AutoProgressionTests.requirements)
        let edit = #"{"session_id": "person", "hook_event_name": "PostToolUse", "tool_name": "Write", "tool_input": {"file_path": "DIR/.claude/specs/demo/requirements.md", "content": "..."}, "tool_response": {}}"#
            .replacingOccurrences("DIR", dir)
        for _ in 0..<2 { #expect(qw(["hook"], stdin: edit, cwd: dir).stderr.isEmpty) }
        let store = try StateStore(path: dir + "/.qw/state.db")
        #expect(try store.specPhases(spec: "demo").map { "\($0.phase) \($0.state)" } == ["requirements complete"], "noticed once")
        #expect(try store.suggestions().isEmpty, "waiting for the approval")
        let approve = qw(["spec", "approve", "demo", "requirements", "--by", "ana"], cwd: dir)
        #expect(approve.stdout.hasSuffix("queued #1 /spec-design demo\n"), "\(approve.stdout)\(approve.stderr)")
        #expect(try store.suggestions().map(\.argv) == [#"["/spec-design","demo"]"#])
        // written for tools that read the file too; qw consume knows it is queued already
        #expect(readText(dir + "/.claude/next_command.txt") == "/spec-design demo\n")
        let dry = qw(["consume", "--dry-run"], cwd: dir)
        #expect(dry.stdout.contains("would refuse  /spec-design demo  (/spec-design is not one of the project's commands"), "\(dry.stdout)")
        #expect(readText(dir + "/.claude/next_command.txt") == nil)
        #expect(try store.suggestions().count == 1, "the file's line is the queued suggestion")
        // a design with the template's placeholders is not complete
        writeFile(dir + "/.claude/specs/demo/design.md", "# Design\n\n## Overview\n\n<what is built>\n")
        _ = qw(["hook"], stdin: edit.replacingOccurrences("requirements.md", "design.md"), cwd: dir)
        #expect(try store.specPhases(spec: "demo").map { "\($0.phase) \($0.state)" } == ["requirements complete", "requirements approved"])
        let status = qw(["spec", "status", "demo"], cwd: dir)
        #expect(status.stdout.contains("  phase         requirements approved (qw spec approve"), "\(status.stdout)")
        #expect(status.stdout.contains("  queued        #1 /spec-design demo (pending)"))
    }

    /// The shipped policies' verdicts on payloads as the CLI sends them: guard_rm,
    /// guard_writes, the permissions allow-list (a compound command is not covered by a
    /// prefix rule), and task_context for a run qw started.
    @Test func theShippedPoliciesVerdicts() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/proj/.qw' '\(dir)/proj/src'")
        let p = dir + "/proj"
        writeFile(p + "/.qw/hooks.lua", """
            qw.hooks.enable("guard_rm")
            qw.hooks.enable("guard_writes")
            qw.hooks.enable("permissions", { allow = { "Bash(git status:*)", "Edit(src/**)" }, deny = { "Bash(git push:*)" } })
            qw.hooks.enable("task_context")
            """)
        func verdict(_ event: String, _ tool: String, _ input: String, env: [(String, String)] = []) -> String {
            let payload = #"{"session_id": "v", "hook_event_name": "\#(event)", "cwd": "\#(p)", "tool_name": "\#(tool)", "tool_input": \#(input), "source": "startup"}"#
            let r = qw(["hook"], stdin: payload, env: env + [("CLAUDE_PROJECT_DIR", p)], cwd: p)
            if r.code == 2 { return "exit 2" }
            for (needle, word) in [("\"permissionDecision\":\"deny\"", "deny"), ("\"behavior\":\"deny\"", "deny"),
                                   ("\"behavior\":\"allow\"", "allow"), ("additionalContext", "context")] where r.stdout.contains(needle) {
                return word
            }
            return r.stdout.isEmpty && r.stderr.isEmpty ? "none" : "? \(r.stdout)\(r.stderr)"
        }
        let bash = { (c: String) in "{\"command\": \(jsonString(c))}" }
        #expect(verdict("PreToolUse", "Bash", bash("rm -rf /tmp/elsewhere")) == "deny")
        #expect(verdict("PreToolUse", "Bash", bash("rm -r -f ~")) == "deny")
        #expect(verdict("PreToolUse", "Bash", bash("cd src && rm -fr $TARGET")) == "deny", "a target it cannot resolve")
        #expect(verdict("PreToolUse", "Bash", bash("rm -rf \(p)")) == "deny", "the project itself")
        #expect(verdict("PreToolUse", "Bash", bash("rm -rf build src/old")) == "none", "inside the project")
        #expect(verdict("PreToolUse", "Bash", bash("rm notes.txt")) == "none", "not recursive")
        #expect(verdict("PreToolUse", "Write", #"{"file_path": "/etc/passwd", "content": "x"}"#) == "deny")
        #expect(verdict("PreToolUse", "Edit", #"{"file_path": "\#(p)/src/a.c", "old_string": "a", "new_string": "b"}"#) == "none")
        #expect(verdict("PreToolUse", "Write", #"{"file_path": "\#(p)/../outside.txt", "content": "x"}"#) == "deny", "a .. out of it")
        #expect(verdict("PermissionRequest", "Bash", bash("git status --short")) == "allow")
        #expect(verdict("PermissionRequest", "Bash", bash("git status; curl evil")) == "none", "a compound command")
        #expect(verdict("PermissionRequest", "Bash", bash("git push origin main")) == "deny")
        #expect(verdict("PermissionRequest", "Edit", #"{"file_path": "\#(p)/src/deep/a.c"}"#) == "allow")
        #expect(verdict("PermissionRequest", "Edit", #"{"file_path": "\#(p)/README.md"}"#) == "none")
        #expect(verdict("SessionStart", "", "{}") == "none", "a session qw did not start")
        #expect(verdict("SessionStart", "", "{}", env: [("QW_RUN_ID", "r1"), ("QW_WORKFLOW", "build"), ("QW_TASK", "lint")]) == "context")
        // a spec task's run gets the task's context
        qwShell("mkdir -p '\(p)/.claude/specs/demo'")
        writeFile(p + "/.claude/specs/demo/tasks.md", "# Tasks\n\n- [ ] 1. Write the parser\n  - _Requirements: 1.1_\n")
        writeFile(p + "/.claude/specs/demo/requirements.md", "# R\n\n### Requirement 1: Parse\n\n1. WHEN given text THEN the system SHALL parse it.\n")
        let start = #"{"session_id": "v", "hook_event_name": "SessionStart", "source": "startup"}"#
        let ctx = qw(["hook"], stdin: start, env: [("QW_RUN_ID", "r2"), ("QW_SPEC", "demo"), ("QW_SPEC_TASK", "1")], cwd: p)
        #expect(ctx.stdout.contains("additionalContext") && ctx.stdout.contains("Write the parser") && ctx.stdout.contains("SHALL parse it"),
                "\(ctx.stdout)\(ctx.stderr)")
    }

    /// A handler registered fail-closed turns its own error into a deny; one that is not
    /// gives no opinion, and the hook says why on stderr.
    @Test func aFailClosedRuleDeniesWhenItsHandlerFails() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/.qw'")
        let pre = #"{"session_id": "f", "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"}}"#
        writeFile(dir + "/.qw/hooks.lua", "qw.hooks.on('PreToolUse', function(ev) error('cannot tell') end)\n")
        let open = qw(["hook"], stdin: pre, cwd: dir)
        #expect(open.code == 0 && open.stdout.isEmpty && open.stderr.contains(".qw/hooks.lua:1: cannot tell"), "\(open.stdout)\(open.stderr)")
        writeFile(dir + "/.qw/hooks.lua", "qw.hooks.on('PreToolUse', function(ev) error('cannot tell') end, { fail = 'closed' })\n")
        let closed = qw(["hook"], stdin: pre, cwd: dir)
        #expect(closed.code == 0 && closed.stdout.contains("\"permissionDecision\":\"deny\"") && closed.stdout.contains("cannot tell"),
                "\(closed.stdout)\(closed.stderr)")
        let bad = qw(["-e", "qw.hooks.on('PreToolUse', print, { fail = 'sometimes' })"], cwd: dir)
        #expect(bad.code == 1 && bad.stderr.contains("(command line):1: qw.hooks.on: fail is 'open' or 'closed' (got 'sometimes')"), "\(bad.stderr)")
    }

    /// Input that is not a hook payload: exit 0, one line on stderr, recorded.
    @Test func badInputIsReportedAndRecordedNeverFatal() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        for (input, says) in [("{not json", "the hook input is not a JSON object"), (#"{"hook_event_name": "Bogus"}"#, "unknown hook event 'Bogus'"),
                              ("", "the hook input is not a JSON object")] {
            let r = qw(["hook"], stdin: input, cwd: dir)
            #expect(r.code == 0 && r.stdout.isEmpty)
            #expect(r.stderr.hasPrefix("qw hook: " + says) && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        }
        // fields of the wrong type are no reason to fail either
        let odd = qw(["hook"], stdin: #"{"session_id": "o", "hook_event_name": "PostToolUse", "cwd": {"x": 1}, "tool_name": 7, "tool_input": {"file_path": ["a"]}, "duration_ms": "slow"}"#, cwd: dir)
        #expect(odd.code == 0 && odd.stdout.isEmpty && odd.stderr.isEmpty, "\(odd.stderr)")
        let named = qw(["hook", "Stop"], stdin: #"{"session_id": "s", "hook_event_name": "Stop"}"#, cwd: dir)
        #expect(named.code == 0 && named.stderr.isEmpty, "\(named.stderr)")
        let all = try StateStore(path: dir + "/.qw/state.db").hookEvents()
        #expect(all.map(\.outcome) == ["error", "error", "error", "ok", "ok"], "\(all.map { ($0.event, $0.outcome) })")
    }
}

/// What `qw hook` leaves in the store's files.
@Suite struct HookStoreTests {
    /// Where hooks are all that runs, no other qw empties the WAL as it exits; a hook that
    /// finds it large empties it itself, or every later hook would read all of it. While
    /// another process has the store open, the hook leaves it to the last one.
    @Test func aHookThatFindsALargeWALEmptiesItAsItExitsUnlessTheStoreIsOpenElsewhere() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let made = qw(["-e", "qw.state.set('k', 1)"], cwd: dir)
        #expect(made.code == 0, "\(made.stderr)")
        let path = dir + "/.qw/state.db"
        // a writer that leaves 6 MB of WAL behind, as a process that is killed does
        let leave = runProgram(["python3", "-c", """
            import os, sqlite3, sys
            c = sqlite3.connect(sys.argv[1], isolation_level=None)
            c.execute('PRAGMA wal_autocheckpoint = 0')
            c.execute('PRAGMA synchronous = OFF')  # one transaction, no fsync: the other tests' disk
            c.execute('BEGIN')
            c.execute('CREATE TABLE scratch(b)')
            for i in range(1500): c.execute('INSERT INTO scratch VALUES (randomblob(4000))')
            c.execute('COMMIT')
            os._exit(0)
            """, path])
        #expect(leave.code == 0, "\(leave.stderr)")
        func wal() -> Int {
            var st = stat()
            return stat(path + "-wal", &st) == 0 ? Int(st.st_size) : 0
        }
        #expect(wal() > 6 << 20, "the WAL is \(wal()) bytes")
        func hook(_ session: String) {
            let r = qw(["hook"], stdin: #"{"session_id": "\#(session)", "hook_event_name": "Stop"}"#, cwd: dir)
            #expect(r.code == 0 && r.stderr.isEmpty, "\(r.stderr)")
        }
        // another process with the store open (it goes without closing it, as if killed)
        let script = """
            import os, sqlite3, sys
            c = sqlite3.connect(sys.argv[1], isolation_level=None)
            c.execute('SELECT count(*) FROM sqlite_master').fetchall()
            print('open', flush=True)
            sys.stdin.read()
            os._exit(0)
            """
        let (pid, input, out) = try #require(spawnHelper(["python3", "-c", script, path], withStdin: true))
        #expect(firstLine(of: out) == "open")
        hook("while-open")
        #expect(wal() > 6 << 20, "the hook emptied the WAL while the store was open elsewhere")
        close(input)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        hook("alone")
        #expect(wal() == 0, "the hook left \(wal()) bytes of WAL")
        let store = try StateStore(path: path)
        #expect(try store.hookEvents().map(\.session) == ["while-open", "alone"])
        #expect(try store.get("k")?.json == Array("1".utf8))
    }
}

/// Holds a store's write lock from another process until released (an exclusive
/// transaction in python3's sqlite3), as a busy or stuck writer would.
final class StoreLocker {
    let pid: pid_t
    let input: Int32

    init?(_ path: String) {
        let script = """
            import sqlite3, sys
            c = sqlite3.connect(sys.argv[1], isolation_level=None)
            c.execute('BEGIN EXCLUSIVE')
            print('locked', flush=True)
            sys.stdin.read()
            c.execute('COMMIT')
            """
        guard let (p, input, out) = spawnHelper(["python3", "-c", script, path], withStdin: true) else { return nil }
        pid = p
        self.input = input
        // the lock is held once it says so
        guard firstLine(of: out) == "locked" else { close(input); return nil }
    }

    /// Ends the transaction and waits for the process.
    func release() {
        close(input)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// The folder of the qw binary under test (for PATH, where hooks find `qw`).
let qwDir = String(qwBinary[..<qwBinary.lastIndex(of: "/")!])
