import Glibc
import Testing

/// `qw init`: what it installs, what it keeps, and the checks of agents and commands; and a
/// slash command of the catalogue run by the real CLI, whose `!` line runs qw.
struct InitTests {
    func files(_ dir: String) -> [String] {
        qwShell("cd '\(dir)' && find .claude .qw -type f 2>/dev/null | sort").split(separator: "\n").map(String.init)
    }

    @Test func installsKeepsWhatTheUserChangedAndSaysWhat() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let dry = qw(["init", "--dry-run"], cwd: dir)
        #expect(dry.code == 0)
        #expect(dry.stdout.hasSuffix("34 would write (dry run: nothing written)\n"), "\(dry.stdout)")
        #expect(files(dir).isEmpty, "a dry run writes nothing")

        let first = qw(["init"], cwd: dir)
        #expect(first.stdout.contains("wrote                .claude/commands/spec-status.md"))
        #expect(first.stdout.hasSuffix("34 wrote\n"), "\(first.stdout)")
        let installed = files(dir)
        #expect(installed.filter { $0.hasPrefix(".claude/agents/") }.count == 21)
        #expect(installed.filter { $0.hasPrefix(".claude/commands/") }.count == 10)
        #expect(installed.contains(".claude/steering/tech.md") && installed.contains(".qw/installed.json"))
        #expect(readText(dir + "/.claude/commands/planning.md") == readText(repoRoot + "/.claude/commands/planning.md"))

        #expect(qw(["init"], cwd: dir).stdout == "34 unchanged\n")
        // a file the user changed, and one qw did not install, are kept
        writeFile(dir + "/.claude/commands/planning.md", "---\ndescription: mine\n---\nmy own planning\n")
        let again = qw(["init"], cwd: dir)
        #expect(again.stdout == "kept                 .claude/commands/planning.md  (changed since qw installed it; --force replaces it)\n1 kept, 33 unchanged\n",
                "\(again.stdout)")
        #expect(readText(dir + "/.claude/commands/planning.md") == "---\ndescription: mine\n---\nmy own planning\n")
        let forced = qw(["init", "--force"], cwd: dir)
        #expect(forced.stdout.hasPrefix("overwrote            .claude/commands/planning.md"), "\(forced.stdout)")
        #expect(readText(dir + "/.claude/commands/planning.md") == readText(repoRoot + "/.claude/commands/planning.md"))
        #expect(!qwShell("ls -A '\(dir)/.claude/commands'").contains(".qw-new"), "no temporary file is left")
    }

    @Test func checkReportsBrokenAgentsAndCommandsWithFileAndLine() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        #expect(qw(["init"], cwd: dir).code == 0)
        #expect(qw(["init", "--check"], cwd: dir).stdout == "agents and commands: no problems\n")
        writeFile(dir + "/.claude/commands/bad.md", """
            ---
            description: A command with mistakes
            allowed-tools: Read, Bsh(git:*)
            color: blue
            ---
            !`make test`
            Run it.
            """)
        writeFile(dir + "/.claude/commands/noyaml.md", "---\ndescription: [unclosed\n---\nbody\n")
        let r = qw(["init", "--check"], cwd: dir)
        #expect(r.code == 1)
        #expect(r.stdout == """
            .claude/commands/bad.md:3: unknown tool 'Bsh(git:*)' in allowed-tools
            .claude/commands/bad.md:4: unknown key 'color' in a command (the CLI ignores it)
            .claude/commands/bad.md:6: the body runs !`make test`, which allowed-tools does not permit (add Bash(make:*))
            .claude/commands/noyaml.md:2: bad YAML in the front matter: did not find expected ',' or ']' (while parsing a flow sequence that starts here)
            4 problem(s)

            """, "\(r.stdout)")
    }

    /// The real CLI loads an installed command: its front matter (the model alias, Bash(qw:*)),
    /// `$0`, and the `!` line, which runs qw and puts its output into the prompt the model gets.
    @Test func anInstalledSlashCommandRunsQwInsideTheRealCLI() throws {
        let cli = try #require(claudeBinary, "no Claude Code CLI: scripts/test installs it")
        let fake = try #require(FakeModel.shared)
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/home' '\(dir)/proj' && cp -R '\(repoRoot)/Tests/Fixtures/specs/project/.claude' '\(dir)/proj/'")
        #expect(qw(["init"], cwd: dir + "/proj").code == 0)
        let bin = String(qwBinary.dropLast(3))
        let path = bin + ":" + (getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin")
        let r = qw(["agent", "run", "-", "/planning ledger [[fake:hello]]"],
                   env: [("QW_CLAUDE", cli), ("HOME", dir + "/home"), ("PATH", path), ("ANTHROPIC_API_KEY", "sk-test"),
                         ("ANTHROPIC_BASE_URL", "http://127.0.0.1:\(fake.port)"), ("CLAUDE_CODE_MAX_RETRIES", "0")],
                   cwd: dir + "/proj", timeout: 120)
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        let request = try #require(fake.requests("hello").last { $0.contains("<command-name>/planning</command-name>") })
        #expect(request.contains("wave 7: 10"), "the plan qw printed is in the prompt: \(request.prefix(600))")
        #expect(request.contains("haiku") || request.contains("sonnet"), "the command's model alias")
    }
}
