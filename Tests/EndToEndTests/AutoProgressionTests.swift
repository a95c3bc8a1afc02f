import Glibc
import QuantumwalaCore
import Testing

/// The loop that makes a spec progress by itself: with the hooks `qw init` installs and
/// `qw consume --continuous` running, one `claude -p "/spec-create demo ..."` leads through
/// requirements, design and tasks to the implementation, each phase a real CLI run against
/// the fake model, and `qw spec status` says where it is all along.
@Suite(.serialized)
struct AutoProgressionTests {
    static let requirements = "# Requirements: demo\n\n## Introduction\n\nThree small files.\n\n### Requirement 1: Files\n\n"
        + "**User story:** As a user, I want files, so that I can read them.\n\n#### Acceptance criteria\n\n"
        + "1. WHEN asked THEN the system SHALL write f1.txt.\n2. WHEN asked THEN the system SHALL write f2.txt.\n"
    static let design = "# Design: demo\n\n## Overview\n\nThree small files, one task each.\n\n### First (f1.txt)\n\nOne line.\n"
    static let tasks = "# Tasks: demo\n\n- [ ] 1. Base file [[fake:auto-impl-1]]\n  - _Requirements: 1.1_\n"
        + "- [ ] 2. Second file [[fake:auto-impl-2]]\n  - _Requirements: 1.2_\n  - _Depends: 1_\n- [ ] 3. Fourth file [[fake:auto-impl-3]]\n  - _Depends: 2_\n"

    /// The fake model's part: the slash commands' and qw's own prompts name no scenario, so
    /// routes find them by their words.
    static func scenarios(project p: String) -> String {
        func write(_ path: String, _ text: String, _ said: String) -> String {
            "[{\"tool_use\": {\"name\": \"Write\", \"input\": {\"file_path\": \(jsonString(path)), \"content\": \(jsonString(text))}}}, {\"text\": \"\(said) STATUS: done\"}]"
        }
        func bash(_ command: String, _ said: String) -> String {
            "[{\"tool_use\": {\"name\": \"Bash\", \"input\": {\"command\": \(jsonString(command)), \"description\": \"the task\"}}}, {\"text\": \"\(said) STATUS: done\"}]"
        }
        return """
            "_routes": [["Write the design of the spec `demo`", "auto-design"], ["Write `.claude/specs/demo/tasks.md`", "auto-tasks"],
                        ["Run the project's tests on the integration branch for the spec 'demo'", "auto-tested"],
                        ["Review the implementation of the spec 'demo'", "auto-reviewed"]],
            "auto-create": \(write(p + "/.claude/specs/demo/requirements.md", requirements, "requirements written.")),
            "auto-design": \(write(p + "/.claude/specs/demo/design.md", design, "design written.")),
            "auto-tasks": \(write(p + "/.claude/specs/demo/tasks.md", tasks, "tasks written.")),
            "auto-tested": [{"text": "The tests pass. STATUS: done"}],
            "auto-reviewed": [{"text": "All criteria are met. VERDICT: approve. STATUS: done"}],
            "auto-impl-1": \(bash("echo one > f1.txt && git add f1.txt && git commit -qm 'task 1'", "f1.txt holds one.")),
            "auto-impl-2": \(bash("echo two > f2.txt && git add -A && git commit -qm 'task 2'", "f2.txt holds two.")),
            "auto-impl-3": \(bash("cat f2.txt > f4.txt && git add -A && git commit -qm 'task 3'", "f4.txt copies f2.txt."))
            """
    }

    @Test func oneSlashCommandLeadsToTheImplementation() throws {
        let cli = try #require(claudeBinary, "no Claude Code CLI: scripts/test installs it")
        let fake = try #require(FakeModel.shared)
        let p = fake.autoProject
        let dir = String(p[..<p.lastIndex(of: "/")!])
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/home' '\(dir)/tmp' '\(p)'")
        let env = try AgentRunTests().agentEnv(dir) + [
            ("GIT_AUTHOR_NAME", "qw test"), ("GIT_AUTHOR_EMAIL", "qw@example.com"), ("GIT_COMMITTER_NAME", "qw test"),
            ("GIT_COMMITTER_EMAIL", "qw@example.com"), ("PATH", qwDir + ":" + (getenv("PATH").map { String(cString: $0) } ?? "/usr/bin")),
        ]
        // the agents, the commands and the hook settings, as a user installs them
        let initialized = qw(["init"], env: env, cwd: p)
        #expect(initialized.code == 0 && initialized.stdout.contains("wrote                .claude/settings.json"), "\(initialized.stdout)\(initialized.stderr)")
        writeFile(p + "/.claude/steering/product.md", "# Product\n\n## Overview\n\nA folder of files.\n")
        writeFile(p + "/.gitignore", ".qw/\n")
        // the policy qw init wrote (headless runs may write the spec documents), and no person:
        // a complete document is approved by the policy
        let policy = try #require(readText(p + "/.qw/hooks.lua"))
        writeFile(p + "/.qw/hooks.lua", policy + "qw.hooks.approvals = \"auto\"\n")
        writeFile(p + "/.qw/policy.lua", "qw.limits{ agent_stagger = 0 }\n")
        _ = qwShell("cd '\(p)' && git init -q -b main && git add -A && git -c user.email=t@example.com -c user.name=t commit -qm init")

        var spec = CommandSpec(argv: [qwBinary, "consume", "--continuous"])
        spec.env = qwTestEnv + env
        spec.cwd = p
        let reactor = Reactor()
        var consumer: ProcessResult?
        let c = try #require(ChildProcess.start(spec, reactor: reactor) { consumer = $0 })
        defer {
            kill(c.pid, SIGTERM)
            while consumer == nil { reactor.runOnce() }
        }
        var cliSpec = CommandSpec(argv: [cli, "-p", "/spec-create demo [[fake:auto-create]] three small files", "--output-format", "json"])
        cliSpec.env = env
        cliSpec.cwd = p
        var created: ProcessResult?
        _ = ChildProcess.start(cliSpec, reactor: reactor) { created = $0 }

        // where it stands, as qw spec status says it, until the implementation is merged
        var seen: [String] = []
        var statusLines: [String] = []
        let deadline = monotonicSeconds() + 180
        var last = ""
        func look() -> String {
            let st = qw(["spec", "status", "demo"], cwd: p)
            guard st.code == 0 else { return "" }
            let phase = st.stdout.split(separator: "\n").first { $0.hasPrefix("  phase ") }.map {
                $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().prefix(2).joined(separator: " ")
            } ?? "-"
            if phase != last { seen.append(phase); last = phase; statusLines.append(st.stdout) }
            return st.stdout
        }
        while monotonicSeconds() < deadline && consumer == nil {
            reactor.runOnce(maxWait: 0.05)
            let now = look()
            if now.contains("3 done, 0 in progress, 0 open"),
               try StateStore(path: p + "/.qw/state.db").suggestions(states: ["pending", "running"]).isEmpty { break }
        }
        _ = look()  // the last change may have come after the reading above
        #expect(created?.code == 0, "\(String(decoding: created?.stdout ?? [], as: UTF8.self))")
        #expect(consumer == nil, "the consumer keeps running: \(String(decoding: consumer?.stderr ?? [], as: UTF8.self))")
        let queue = try StateStore(path: p + "/.qw/state.db").suggestions()
        #expect(queue.map(\.argv) == [#"["/spec-design","demo"]"#, #"["/spec-tasks","demo"]"#,
                                      #"["qw","spec","run","demo","--from","implementation"]"#], "\(queue.map { ($0.argv, $0.state, $0.error) })")
        #expect(queue.allSatisfy { $0.state == "done" && $0.attempts == 1 }, "\(queue.map { ($0.state, $0.error) })")
        // the phases, in order, as they were seen
        let order = ["requirements started", "requirements complete", "requirements approved", "design started", "design complete",
                     "design approved", "tasks started", "tasks complete", "tasks approved", "implementation started",
                     "implementation complete", "testing started", "testing complete", "review started", "review complete"]
        let ranks = seen.compactMap { order.firstIndex(of: $0) }
        #expect(ranks == ranks.sorted(), "seen out of order: \(seen)")
        #expect(seen.count >= 4 && seen.contains("implementation started"), "qw spec status followed it: \(seen)")
        #expect(seen.last == "review complete", "\(seen)")
        #expect(statusLines.last?.contains("phase         review complete (qw spec run") == true, "\(statusLines.last ?? "")")
        for doc in ["requirements", "design", "tasks"] {
            let a = qw(["-e", "print(qw.spec.approval('demo', '\(doc)').by)"], cwd: p)
            #expect(a.stdout == "auto\n", "\(doc): \(a.stdout)\(a.stderr)")
        }
        #expect(readText(p + "/f4.txt") == "two\n", "the implementation was merged")
        #expect(readText(p + "/.claude/specs/demo/tasks.md")?.contains("- [x] 3. Fourth file") == true)
        let hooks = try StateStore(path: p + "/.qw/state.db").hookEvents(event: "UserPromptExpansion")
        #expect(Set(hooks.compactMap(\.detail).compactMap { d in ["spec-create", "spec-design", "spec-tasks"].first { d.contains("\"\($0)\"") } })
                == ["spec-create", "spec-design", "spec-tasks"], "each phase was a run of its slash command")
    }
}
