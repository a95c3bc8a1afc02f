import Glibc
import QuantumwalaCore
import Testing

/// `qw agents` and `qw.agents()`: agent files read with a strict YAML parser, and every
/// problem the real CLI passes over in silence reported as `path:line: message`.
@Suite(.serialized)
struct AgentDefinitionTests {
    /// A project with one good agent and one of each kind of broken file, and a home with a
    /// user agent that the project's shadows.
    func makeProject() -> String {
        let dir = makeTempDir()
        qwShell("mkdir -p '\(dir)/p/.claude/agents' '\(dir)/home/.claude/agents'")
        let a = dir + "/p/.claude/agents/"
        writeFile(a + "reviewer.md", "---\nname: reviewer\ndescription: Reviews a diff.\ntools: Read, Grep\nmodel: haiku\npermissionMode: plan\n---\nYou review code.\n")
        writeFile(a + "badtools.md", "---\nname: badtools\ndescription: Bad tools.\ntools: file_edit, Read, bash\nmodel: gpt-4\n---\nBody.\n")
        writeFile(a + "nodesc.md", "---\nname: nodesc\ntools:\n  - Read\n  - Writ\n---\nBody.\n")
        writeFile(a + "badyaml.md", "---\nname: badyaml\ndescription: [unclosed\n---\n")
        writeFile(a + "nofront.md", "Just a prompt.\n")
        writeFile(a + "unclosed.md", "---\nname: unclosed\ndescription: never closed\n")
        writeFile(a + "renamed.md", "---\nname: other\ndescription: Named otherwise.\nfrobnicate: yes\npermissionMode: sometimes\n---\n")
        writeFile(a + "dupkeys.md", "---\nname: dupkeys\ndescription: one\ndescription: two\n---\n")
        writeFile(dir + "/home/.claude/agents/reviewer.md", "---\nname: reviewer\ndescription: The user's own.\nmodel: opus\n---\nUser prompt.\n")
        writeFile(dir + "/home/.claude/agents/helper.md", "---\nname: helper\ndescription: A user agent.\n---\nHelp.\n")
        return dir
    }

    @Test func checkReportsEveryProblemWithItsLine() {
        let dir = makeProject()
        defer { removeTree(dir) }
        let r = qw(["agents", "--check"], env: [("HOME", dir + "/home")], cwd: dir + "/p")
        #expect(r.code == 1)
        let a = ".claude/agents/"
        let expected = [
            a + "badtools.md:4: unknown tool 'file_edit' in tools (the CLI keeps it, and the agent cannot use it)",
            a + "badtools.md:4: unknown tool 'bash' in tools (the CLI keeps it, and the agent cannot use it); did you mean 'Bash'?",
            a + "badtools.md:5: unknown model 'gpt-4' (sonnet, opus, haiku, fable, inherit, or a full id such as claude-sonnet-5-5)",
            a + "dupkeys.md:",
            a + "nodesc.md:1: no 'description' in the front matter (the CLI ignores this file)",
            a + "nodesc.md:5: unknown tool 'Writ' in tools (the CLI keeps it, and the agent cannot use it); did you mean 'Write'?",
            a + "nofront.md:1: no front matter: the file must start with a '---' line",
            a + "renamed.md:2: name 'other' differs from the file name 'renamed.md'",
            a + "renamed.md:4: unknown key 'frobnicate' (the CLI ignores it)",
            a + "renamed.md:5: unknown permissionMode 'sometimes'",
            a + "unclosed.md:1: the front matter is not closed: no '---' line after line 1 (the CLI ignores this file)",
        ]
        let lines = r.stdout.split(separator: "\n").map(String.init)
        for e in expected {
            #expect(lines.contains { $0.hasPrefix(e) }, "missing: \(e)\n\(r.stdout)")
        }
        #expect(lines.contains { $0.hasPrefix(a + "badyaml.md:3: bad YAML in the front matter") }, "\(r.stdout)")
        #expect(lines.contains { $0.hasPrefix(a + "dupkeys.md:") && $0.contains("duplicate key 'description'") }, "\(r.stdout)")
        #expect(!lines.contains { $0.contains("reviewer.md") }, "the good agent has no problem")
        #expect(lines.last?.hasSuffix("problems") == true)
    }

    @Test func agentsAreWhatTheCLIWouldLoadAndTheProjectWins() throws {
        let dir = makeProject()
        defer { removeTree(dir) }
        let r = qw(["-e", """
            local a = qw.agents()
            local names = {}
            for name in pairs(a) do names[#names + 1] = name end
            table.sort(names)
            print(table.concat(names, ","))
            print(a.reviewer.model, table.concat(a.reviewer.tools, "+"), a.reviewer.permission_mode, a.reviewer.source)
            print(a.reviewer.prompt, a.helper.source, a.helper.tools)
            """], env: [("HOME", dir + "/home")], cwd: dir + "/p")
        #expect(r.code == 0, "\(r.stderr)")
        // badtools is kept (the CLI keeps unknown tools); other (renamed.md) is loaded by its name
        #expect(r.stdout == "badtools,helper,other,reviewer\nhaiku\tRead+Grep\tplan\tproject\nYou review code.\n\tuser\tnil\n")
        let json = qw(["agents", "--json", "--no-user"], env: [("HOME", dir + "/home")], cwd: dir + "/p")
        #expect(json.code == 0)
        #expect(json.stdout.contains("\"name\":\"reviewer\""))
        #expect(!json.stdout.contains("helper"))
        let list = qw(["agents"], env: [("HOME", dir + "/home")], cwd: dir + "/p")
        #expect(list.stdout.hasPrefix("NAME"))
        #expect(list.stdout.contains("reviewer"))
    }

    /// The catalogue that ships in this repository: every agent of the spec workflow, each
    /// valid, and those that change code able to run tests and edit files.
    @Test func theShippedCatalogueIsCompleteAndValid() {
        let check = qw(["agents", "--check", "--no-user"], cwd: repoRoot)
        #expect(check.code == 0, "\(check.stdout)\(check.stderr)")
        let r = qw(["-e", """
            local a = qw.agents{ user = false }
            local out = {}
            for _, n in ipairs({ "chief-product-manager", "product-manager", "business-analyst", "architect", "uiux-designer",
                                 "developer", "qa-engineer", "code-reviewer", "security-engineer", "devops-engineer",
                                 "data-engineer", "genai-engineer", "api-integration-specialist", "performance-optimizer",
                                 "codebase-analyst", "steering-context-manager", "spec-requirements-validator",
                                 "spec-design-validator", "spec-task-validator", "spec-task-executor",
                                 "spec-implementation-reviewer" }) do
              local x = a[n]
              if not x then out[#out + 1] = "missing " .. n
              elseif not x.model or #x.prompt < 400 or not x.prompt:find("STATUS: done", 1, true) then out[#out + 1] = "thin " .. n end
            end
            local function has(n, tool) for _, t in ipairs(a[n].tools) do if t == tool then return true end end end
            for _, n in ipairs({ "developer", "qa-engineer", "spec-task-executor" }) do
              if not (has(n, "Bash") and has(n, "Edit")) then out[#out + 1] = n .. " cannot run tests and edit" end
            end
            print(#out == 0 and "ok" or table.concat(out, "; "))
            """], cwd: repoRoot)
        #expect(r.stdout == "ok\n", "\(r.stdout)\(r.stderr)")
    }

    /// A project replaces the routing rules from .qw/policy.lua, without recompiling.
    @Test func routingRulesComeFromThePolicyFile() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/.qw'")
        writeFile(dir + "/.qw/policy.lua", "qw.router.clear()\nqw.router.rule{ match = '%f[%a]tests?%f[%A]', agent = 'test-writer' }\nqw.router.default = 'generalist'\n")
        let r = qw(["-e", "print((qw.router.route('write tests')), (qw.router.route('anything else')))"], cwd: dir)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout == "test-writer\tgeneralist\n")
    }

    @Test func aCleanCatalogPasses() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -p '\(dir)/.claude/agents'")
        writeFile(dir + "/.claude/agents/dev.md", "---\nname: dev\ndescription: Writes code.\ntools: [Bash, Edit, Read, Write, mcp__github__create_pr, \"Bash(git *)\"]\nmodel: claude-sonnet-5-5\n---\nYou write code.\n")
        let r = qw(["agents", "--check", "--no-user"], cwd: dir)
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout == "1 agent, no problems\n")
    }
}
