import Glibc
import Testing

/// `qw init`: what it installs, what it keeps, the hook registrations it merges into
/// .claude/settings.json, and the checks of agents, commands and settings; and a slash command
/// of the catalogue run by the real CLI, whose `!` line runs qw.
struct InitTests {
    func files(_ dir: String) -> [String] {
        qwShell("cd '\(dir)' && find .claude .qw -type f 2>/dev/null | sort").split(separator: "\n").map(String.init)
    }

    @Test func installsKeepsWhatTheUserChangedAndSaysWhat() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let dry = qw(["init", "--dry-run"], cwd: dir)
        #expect(dry.code == 0)
        #expect(dry.stdout.hasSuffix("37 would write (dry run: nothing written)\n"), "\(dry.stdout)")
        #expect(files(dir).isEmpty, "a dry run writes nothing")

        let first = qw(["init"], cwd: dir)
        #expect(first.stdout.contains("wrote                .claude/commands/spec-status.md"))
        #expect(first.stdout.contains("wrote                .claude/settings.json\n"))
        #expect(first.stdout.hasSuffix("37 wrote\n"), "\(first.stdout)")
        let installed = files(dir)
        #expect(installed.filter { $0.hasPrefix(".claude/agents/") }.count == 21)
        #expect(installed.filter { $0.hasPrefix(".claude/commands/") }.count == 10)
        #expect(installed.contains(".claude/steering/tech.md") && installed.contains(".qw/installed.json"))
        // a hook policy to start from, and what of .qw git leaves alone
        #expect(readText(dir + "/.qw/hooks.lua")?.contains("\nqw.hooks.enable(\"permissions\")\n") == true)
        _ = qw(["-e", "qw.state.set('x', 1)"], cwd: dir)
        let tracked = qwShell("cd '\(dir)' && git init -q && git status --porcelain --untracked-files=all .qw")
        #expect(tracked == "?? .qw/.gitignore\n?? .qw/hooks.lua\n?? .qw/installed.json\n", "\(tracked)")
        #expect(readText(dir + "/.claude/commands/planning.md") == readText(repoRoot + "/.claude/commands/planning.md"))
        #expect(readText(dir + "/.claude/settings.json") == readText(repoRoot + "/.claude/settings.template.json"),
                "a project without settings gets the template")
        #expect(!(readText(dir + "/.qw/installed.json") ?? "").contains("settings"), "the settings file is never in the manifest")

        #expect(qw(["init"], cwd: dir).stdout == "37 unchanged\n")
        // a file the user changed, and one qw did not install, are kept
        writeFile(dir + "/.claude/commands/planning.md", "---\ndescription: mine\n---\nmy own planning\n")
        let again = qw(["init"], cwd: dir)
        #expect(again.stdout == "kept                 .claude/commands/planning.md  (changed since qw installed it; --force replaces it)\n1 kept, 36 unchanged\n",
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
        #expect(qw(["init", "--check"], cwd: dir).stdout == "agents, commands and settings: no problems\n")
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

    /// What the Lua JSON decoder of qw (not the merge's own reader) finds in a settings file:
    /// per event, the commands of its hooks joined by "|", and the matchers.
    func hookCommands(_ dir: String, _ file: String = ".claude/settings.json") -> String {
        qw(["-e", """
            local s = qw.json.decode(io.open('\(file)'):read('a'))
            local names = {}
            for name in pairs(s.hooks) do names[#names + 1] = name end
            table.sort(names)
            for _, name in ipairs(names) do
              local cmds = {}
              for _, g in ipairs(s.hooks[name]) do
                for _, h in ipairs(g.hooks) do cmds[#cmds + 1] = (g.matcher and g.matcher .. '=' or '') .. h.command end
              end
              print(name .. ': ' .. table.concat(cmds, '|'))
            end
            """], cwd: dir).stdout
    }

    /// The offset of `needle` in `text` (-1 when it is not there).
    func offset(_ needle: String, in text: String) -> Int {
        guard let r = text.firstRange(of: needle) else { return -1 }
        return text.distance(from: text.startIndex, to: r.lowerBound)
    }

    static let userSettings = #"""
        {"permissions": {"allow": ["Bash(make:*)"], "deny": []}, "model": "sonnet",
         "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "/opt/bin/notify \"done\\n\u00e9\"", "timeout": 1.50}]}],
           "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "./guard.sh"}]}],
           "SessionStart": [{"hooks": [{"type": "command", "command": "/usr/local/bin/qw hook"}]}]},
         "env": {"QW_X": "1", "EMPTY": null}, "zeta": {}}

        """#

    @Test func mergesTheHookRegistrationsIntoTheUsersSettingsAndKeepsABackup() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/.claude'")
        let settings = dir + "/.claude/settings.json"
        writeFile(settings, Self.userSettings)

        let dry = qw(["init", "--dry-run"], cwd: dir)
        #expect(dry.code == 0)
        #expect(dry.stdout.contains("would merge          .claude/settings.json  (would add qw hook on 10 events)\n"), "\(dry.stdout)")
        #expect(dry.stdout.hasSuffix("36 would write, 1 would merge (dry run: nothing written)\n"), "\(dry.stdout)")
        #expect(readText(settings) == Self.userSettings && readText(settings + ".bak") == nil, "a dry run writes nothing")

        let r = qw(["init"], cwd: dir)
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("merged               .claude/settings.json  (added qw hook on 10 events; the old file is .claude/settings.json.bak)\n"),
                "\(r.stdout)")
        #expect(r.stdout.hasSuffix("36 wrote, 1 merged\n"), "\(r.stdout)")
        #expect(readText(settings + ".bak") == Self.userSettings, "the backup is the old file")
        let merged = try #require(readText(settings))
        // the user's hooks are all there, ours come after them; SessionStart already ran qw hook
        #expect(hookCommands(dir) == """
            PermissionRequest: *=qw hook
            PostToolUse: *=qw hook
            PostToolUseFailure: *=qw hook
            PreToolUse: Bash=./guard.sh|*=qw hook
            SessionEnd: qw hook
            SessionStart: /usr/local/bin/qw hook
            Stop: /opt/bin/notify "done\\né"|qw hook
            SubagentStart: qw hook
            SubagentStop: qw hook
            UserPromptExpansion: qw hook
            UserPromptSubmit: qw hook

            """, "\(merged)")
        // every other key and value, in the user's order, written as the user wrote it
        let keys = ["\"permissions\"", "\"model\": \"sonnet\"", "\"hooks\"", "\"env\"", "\"EMPTY\": null", "\"zeta\": {}"]
        let at = keys.map { offset($0, in: merged) }
        #expect(!at.contains(-1) && at == at.sorted(), "\(at)\n\(merged)")
        #expect(merged.contains(#""command": "/opt/bin/notify \"done\\n\u00e9\"","#) && merged.contains("\"timeout\": 1.50"))
        #expect(merged.contains("\"allow\": [\n      \"Bash(make:*)\"\n    ],\n    \"deny\": []"), "2-space indentation: \(merged)")
        #expect(qw(["init", "--check"], cwd: dir).code == 0)

        // a second run changes nothing and makes no backup
        let again = qw(["init"], cwd: dir)
        #expect(again.stdout == "37 unchanged\n", "\(again.stdout)")
        #expect(readText(settings) == merged)
        #expect(qwShell("ls -A '\(dir)/.claude'") == "agents\ncommands\nsettings.json\nsettings.json.bak\nsteering\n")

        // the user removes qw's hooks: the next run adds them back, and keeps a second backup
        writeFile(settings, "{\"hooks\": {}}\n")
        #expect(qw(["init"], cwd: dir).stdout.contains("(added qw hook on 11 events; the old file is .claude/settings.json.bak.1)"))
        #expect(readText(settings + ".bak.1") == "{\"hooks\": {}}\n" && readText(settings + ".bak") == Self.userSettings)
        #expect(readText(settings) == readText(repoRoot + "/.claude/settings.template.json"))
    }

    @Test func settingsThatAreNotJSONAreReportedAndLeftAlone() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/.claude'")
        let broken = "{\n  \"model\": \"x\",\n  \"hooks\": {\n    \"Stop\": [],\n  }\n}\n"
        writeFile(dir + "/.claude/settings.json", broken)
        let r = qw(["init"], cwd: dir)
        #expect(r.code == 1)
        #expect(r.stdout.contains(".claude/settings.json:4: not valid JSON: a ',' before '}'; qw init did not change it\n"), "\(r.stdout)")
        #expect(r.stdout.hasSuffix("36 wrote, 1 invalid\n"), "the other files are installed: \(r.stdout)")
        #expect(readText(dir + "/.claude/settings.json") == broken)
        #expect(qwShell("ls -A '\(dir)/.claude'") == "agents\ncommands\nsettings.json\nsteering\n", "no backup, no temporary file")

        writeFile(dir + "/.claude/settings.json", "{\"hooks\": {\"Stop\": {\"hooks\": []}}}")
        let shape = qw(["init"], cwd: dir)
        #expect(shape.code == 1)
        #expect(shape.stdout.hasPrefix(".claude/settings.json:1: the value of 'Stop' is not an array; qw init did not change it\n"), "\(shape.stdout)")
        #expect(readText(dir + "/.claude/settings.json") == "{\"hooks\": {\"Stop\": {\"hooks\": []}}}")
    }

    @Test func checkReportsBrokenHookSettingsWithFileAndLine() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/.claude'")
        writeFile(dir + "/.claude/settings.json", """
            {
              "someSetting": true,
              "hooks": {
                "Stopp": [],
                "Stop": [
                  {
                    "matchr": "*",
                    "hooks": [
                      {"type": "command", "command": "qw hook", "timeout": 0, "bogus": 1},
                      {"type": "shell", "command": "x"},
                      {"type": "command"},
                      {"command": "x"},
                      "echo",
                      {"type": "command", "command": "x", "timeout": "10", "async": "yes"}
                    ]
                  },
                  {"matcher": 5, "hooks": []},
                  {"matcher": "*"}
                ],
                "PreToolUse": {"matcher": "*"},
                "SessionEnd": [{"hooks": [{"type": "prompt", "prompt": "p"}, {"type": "http", "url": "http://x"}]}]
              }
            }
            """)
        writeFile(dir + "/.claude/settings.local.json", "{\"hooks\": [\n")
        let r = qw(["init", "--check"], cwd: dir)
        #expect(r.code == 1)
        #expect(r.stdout == """
            .claude/settings.json:4: unknown hook event 'Stopp' (the CLI ignores this entry)
            .claude/settings.json:7: unknown key 'matchr' in a hook group (the CLI ignores the key)
            .claude/settings.json:9: 'timeout' is not a positive number (the CLI ignores this entry)
            .claude/settings.json:9: unknown key 'bogus' in a 'command' hook (the CLI ignores the key)
            .claude/settings.json:10: unknown hook type "shell" (known: command, prompt, agent, http, mcp_tool) (the CLI ignores this entry)
            .claude/settings.json:11: a 'command' hook without 'command' (the CLI ignores this entry)
            .claude/settings.json:12: a hook without a 'type' (one of command, prompt, agent, http, mcp_tool) (the CLI ignores this entry)
            .claude/settings.json:13: a hook that is not an object (the CLI ignores this entry)
            .claude/settings.json:14: 'timeout' is not a positive number (the CLI ignores this entry)
            .claude/settings.json:14: 'async' is not true or false (the CLI ignores this entry)
            .claude/settings.json:17: 'matcher' is not a string (the CLI ignores this group)
            .claude/settings.json:18: a hook group without a 'hooks' array (the CLI ignores this group)
            .claude/settings.json:20: the value of 'PreToolUse' is not an array (on PreToolUse the CLI ignores this whole file)
            .claude/settings.local.json:2: not valid JSON: the text ends where a value should be (the CLI ignores this whole file)
            14 problem(s)

            """, "\(r.stdout)")

        writeFile(dir + "/.claude/settings.json", "{\"hooks\": {\"PermissionRequest\": [{\"matcher\": null, \"hooks\": []}]}}")
        writeFile(dir + "/.claude/settings.local.json", "{\n  \"env\": {},\n  \"hooks\": [1]\n}\n")
        let again = qw(["init", "--check"], cwd: dir)
        #expect(again.code == 1)
        #expect(again.stdout == """
            .claude/settings.json:1: 'matcher' is not a string (on PermissionRequest the CLI ignores this whole file)
            .claude/settings.local.json:3: 'hooks' is not an object (the CLI ignores every hook in this file)
            2 problem(s)

            """, "\(again.stdout)")
    }

    /// This repository has no active settings file; the template it ships is valid, registers
    /// `qw hook` on the events qw handles, and a matcher only on the tool events.
    @Test func theRepositoryShipsATemplateAndNoActiveSettings() throws {
        #expect(access(repoRoot + "/.claude/settings.json", F_OK) != 0)
        #expect(access(repoRoot + "/.claude/settings.local.json", F_OK) != 0)
        let template = try #require(readText(repoRoot + "/.claude/settings.template.json"))
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/.claude'")
        writeFile(dir + "/.claude/settings.json", template)
        let check = qw(["init", "--check"], cwd: dir)
        #expect(check.stdout == "agents, commands and settings: no problems\n" && check.code == 0, "\(check.stdout)")
        #expect(hookCommands(dir) == """
            PermissionRequest: *=qw hook
            PostToolUse: *=qw hook
            PostToolUseFailure: *=qw hook
            PreToolUse: *=qw hook
            SessionEnd: qw hook
            SessionStart: qw hook
            Stop: qw hook
            SubagentStart: qw hook
            SubagentStop: qw hook
            UserPromptExpansion: qw hook
            UserPromptSubmit: qw hook

            """)
        #expect(!template.contains("\t") && template.contains("\n    \"SessionStart\": [\n      {\n        \"hooks\": ["), "2-space indentation")
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
                   env: [("QW_CLAUDE", cli), ("HOME", dir + "/home"), ("PATH", path)] + fake.cliEnv,
                   cwd: dir + "/proj", timeout: 120)
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        let request = try #require(fake.requests("hello").last { $0.contains("<command-name>/planning</command-name>") })
        #expect(request.contains("wave 7: 10"), "the plan qw printed is in the prompt: \(request.prefix(600))")
        #expect(request.contains("haiku") || request.contains("sonnet"), "the command's model alias")
    }
}
