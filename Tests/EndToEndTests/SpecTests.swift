import Glibc
import Testing

/// The task grammar, lint and planning of specs (stdlib/qw/spec.lua), through the real
/// binary, on the fixtures in Tests/Fixtures/specs: a Kiro-style spec in .claude/specs, a
/// spec-kit folder, a dependency graph, file overlaps and a broken file.
struct SpecTests {
    let project = repoRoot + "/Tests/Fixtures/specs/project"
    let broken = repoRoot + "/Tests/Fixtures/specs/broken"

    func lua(_ code: String, in dir: String) -> Outcome {
        let file = makeTempDir() + "/check.lua"
        writeFile(file, code)
        defer { removeTree(String(file.dropLast("/check.lua".count))) }
        return qw(["run", file], cwd: dir)
    }

    @Test func listsTheSpecsOfEveryLayout() {
        let r = qw(["spec", "list"], cwd: project)
        #expect(r.code == 0)
        let names = r.stdout.split(separator: "\n").map { $0.split(separator: " ").first.map(String.init) ?? "" }
        #expect(names == ["demo", "ledger", "overlap", "refs", "graphs", "photos"], "\(r.stdout)")
        #expect(r.stdout.contains("spec-kit  ./specs/001-photos"))
    }

    /// Every rule of the grammar on one file: ids with dots, bold, escapes; states x, -, ~;
    /// an optional task; [P] and (P); children at any indent; requirement ranges and titles;
    /// Files, Leverage, Depends, a Prompt over two lines, localised labels, Validates; a
    /// fenced example skipped; a `#### Task` heading with its checkbox below.
    @Test func readsTheTaskShapesPeopleWrite() {
        let r = lua("""
            local p = qw.spec.parse("demo")
            for _, t in ipairs(p.tasks) do
              print(t.id, t.state, t.parent or "-", t.optional and "opt" or "", t.parallel and "P" or "",
                    table.concat(t.requirements, ","), table.concat(t.depends, ","), table.concat(t.files, ","),
                    table.concat(t.leverage, ","), t.line)
            end
            local t = p.by_id["3.1"]
            print(t.prompt)
            print(p.by_id["3.2"].priority, p.by_id["3.2"].story, p.by_id["4.1"].title, p.by_id["4.1"].purpose, #p.warnings)
            """, in: project)
        #expect(r.stdout == """
            1\t \t-\t\t\t\t\t\t\t3
            1.1\tx\t1\t\t\t1.1\t\tMakefile,src/parse.h\t\t4
            1.2\t-\t1\t\tP\t1.1,1.2,1.3\t\t\tsrc/parse.h\t7
            1.3\t \t1\t\tP\t1\t\ttests/test_parse.c\t\t10
            2\t \t-\topt\t\tN/A\t\t\t\t14
            3\t~\t-\t\t\t\t\t\t\t17
            3.1\t \t3\t\t\t2.1\t1.2\t\t\t18
            3.2\t \t3\t\t\t2.2\t\tsrc/error.c\t\t23
            4.1\t \t-\t\t\t\t\t\t\t31
            Role: developer. Task: add line and column
            to every error, then run the tests.
            P0\tUS2\tDocument the API\tusers can call it\t0

            """, "\(r.stdout)\(r.stderr)")
    }

    /// spec-kit: T-ids with suffixes, X for done, [P] and [US1], phases, `(depends on ...)`
    /// and `T004 blocks T006` prose: the plan follows all of it.
    @Test func readsSpecKitTasksAndPlansByPhaseAndProse() {
        let tasks = qw(["spec", "tasks", "photos"], cwd: project)
        #expect(tasks.stdout.contains("[X] T001     Create the project structure"), "\(tasks.stdout)")
        #expect(tasks.stdout.contains("[ ] T031-MIN Minimal smoke test  (after T005, T006)"), "\(tasks.stdout)")
        let plan = qw(["spec", "plan", "photos"], cwd: project)
        #expect(plan.code == 0)
        let waves = plan.stdout.split(separator: "\n").filter { $0.hasPrefix("wave") }
        #expect(waves == ["wave 1: T002, T003", "wave 2: T004", "wave 3: T005, T006", "wave 4: T031-MIN"], "\(plan.stdout)")
        #expect(plan.stdout.contains("T004     after phase 'Phase 1: Setup'"), "\(plan.stdout)")
        let json = qw(["spec", "tasks", "photos", "--json"], cwd: project)
        #expect(json.stdout.contains("\"story\":\"US1\"") || json.stdout.contains("\"story\": \"US1\""), "\(json.stdout)")
    }

    /// A `## Task Dependency Graph` block of waves, and files named by two tasks.
    @Test func plansFromAGraphAndKeepsTasksOnOneFileApart() {
        let graph = qw(["spec", "plan", "graphs"], cwd: project)
        #expect(graph.stdout.split(separator: "\n").filter { $0.hasPrefix("wave") } == ["wave 1: 1, 2", "wave 2: 3", "wave 3: 4"],
                "\(graph.stdout)")
        let overlap = qw(["spec", "plan", "overlap"], cwd: project)
        #expect(overlap.stdout.split(separator: "\n").filter { $0.hasPrefix("wave") } == ["wave 1: 1, 3", "wave 2: 2, 4"], "\(overlap.stdout)")
        #expect(overlap.stdout.contains("2        not with 1: both name src/a.c"))
        // document order when a file states no dependencies: one after another
        let demoPlan = lua("""
            local plan = qw.spec.plan(qw.spec.parse("demo"))
            print(#plan, table.concat(plan[1], ","))
            """, in: project)
        #expect(demoPlan.stdout == "2\t1.2,1.3,2,3.2,4.1\n", "\(demoPlan.stdout)")
    }

    /// What is wrong, as file:line: a done parent with an open child, references to
    /// requirements and criteria that do not exist, a cycle, a duplicate id, an unknown
    /// dependency, bytes that are not UTF-8 and a NUL. Nothing crashes; the exit code says it.
    @Test func lintSaysWhatIsWrongAndWhere() {
        let r = qw(["spec", "lint", "tasks.md"], cwd: broken)
        #expect(r.code == 1)
        #expect(r.stdout == """
            tasks.md:3: task 1 is marked done but its subtask 1.1 (line 4) is not
            tasks.md:5: task 1.1 references requirement 1.5, which does not exist (requirement 1 has 2 acceptance criteria)
            tasks.md:5: task 1.1 references requirement 7, which is not in ./requirements.md
            tasks.md:9: dependency cycle: 2 -> 3 -> 2
            tasks.md:10: duplicate task id 2 (first at line 6)
            tasks.md:12: task 4 depends on 9, which is not a task here
            tasks.md:13: the file is not valid UTF-8 (from byte 224); it is read as it is
            tasks.md:14: the file holds NUL bytes; they are read as spaces

            """, "\(r.stdout)\(r.stderr)")
        let plan = qw(["spec", "plan", "tasks.md"], cwd: broken)
        #expect(plan.code == 1)
        #expect(plan.stdout.contains("not placed (a cycle, see qw spec lint): 2, 3"), "\(plan.stdout)")
        #expect(qw(["spec", "lint", "demo"], cwd: project).code == 0)
    }

    /// Setting a checkbox changes that one character, whatever the file's shape (CRLF lines,
    /// a heading task's checkbox on its own line), atomically; a task without a checkbox or
    /// a line that no longer holds the task is refused and changes nothing.
    @Test func aCheckboxRewriteChangesOneCharacter() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let original = Array((readText(project + "/.claude/specs/demo/tasks.md") ?? "").utf8)
        let crlf = original.flatMap { $0 == 10 ? [13, 10] : [$0] }
        writeFile(dir + "/tasks.md", String(decoding: crlf, as: UTF8.self))
        let r = lua("""
            print(qw.spec.set_state("tasks.md", "3.1", "x"), qw.spec.set_state("tasks.md", "4.1", "-"))
            print(pcall(qw.spec.set_state, "tasks.md", "1", "yy"))
            """, in: dir)
        #expect(r.stdout.hasPrefix(" \t \nfalse\t"), "\(r.stdout)\(r.stderr)")
        let after = Array((readText(dir + "/tasks.md") ?? "").utf8)
        #expect(after.count == crlf.count)
        let changed = zip(after, crlf).enumerated().filter { $0.element.0 != $0.element.1 }
        #expect(changed.count == 2)
        #expect(changed.map { after[$0.offset] } == [UInt8(ascii: "x"), UInt8(ascii: "-")])
        #expect(qwShell("ls -A '\(dir)'") == "tasks.md\n", "no temporary file is left: \(qwShell("ls -A '\(dir)'"))")
        // a parent heading has no checkbox
        writeFile(dir + "/h.md", "### 1. Parent\n- [ ] 1.1 Child\n")
        let h = lua("print(pcall(qw.spec.set_state, 'h.md', '1', 'x'))", in: dir)
        #expect(h.stdout.contains("false") && h.stdout.contains("h.md:1: task 1 has no checkbox"), "\(h.stdout)")
    }

    /// Two processes set forty checkboxes at once, twenty each: every one is set, and the
    /// rest of the file is as it was.
    @Test func twoWritersAtOnceLoseNothing() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        func file(_ state: String) -> String {
            (1...40).reduce("# Tasks\n\n") { $0 + "- [\(state)] \($1). Task number \($1)\n  - _Requirements: N/A_\n" }
        }
        let text = file(" ")
        writeFile(dir + "/tasks.md", text)
        writeFile(dir + "/w.lua", "for i = tonumber(qw.args[1]), tonumber(qw.args[2]) do qw.spec.set_state('tasks.md', tostring(i), 'x') end\n")
        let out = qwShell("cd '\(dir)' && ('\(qwBinary)' run w.lua 1 20 & '\(qwBinary)' run w.lua 21 40 & wait) 2>&1")
        #expect(out.isEmpty, "\(out)")
        let after = readText(dir + "/tasks.md") ?? ""
        #expect(after == file("x"))
    }

    /// A task's context: the task, the requirement sections it references (whole, with all
    /// their acceptance criteria, each once), the design sections that name its files, the
    /// steering summaries; never the rest. A task that references nothing gets the design's
    /// overview. What the tasks before it produced comes last.
    @Test func aTasksContextKeepsWhatItReferencesWhole() {
        let r = lua("""
            local text, st = qw.spec.context("ledger", "4", { results = { ["2"] = "money.py: parse_amount and fmt" } })
            local function has(s) return text:find(s, 1, true) ~= nil end
            print(has("### Requirement 3: Balanced transactions"), has("both."), has("### Requirement 2: Chart of accounts"),
                  has("### Requirement 1: Money"), has("### Transactions (src/ledger/journal.py)"), has("### Parser"),
                  has("Python 3.11 or later"), has("money.py: parse_amount and fmt"))
            print(st.referenced, st.kept_referenced, #st.missing, st.bytes < st.full_bytes, st.tokens == math.ceil(st.bytes / 4))
            local _, count = text:gsub("### Requirement 3", "")
            print(count)
            local none, ns = qw.spec.context("ledger", "1")
            print(none:find("## Overview\\n\\nSix modules", 1, true) ~= nil, none:find("### Money", 1, true) == nil, ns.referenced)
            """, in: project)
        #expect(r.stdout == "true\ttrue\ttrue\tfalse\ttrue\tfalse\ttrue\ttrue\n5\t5\t0\ttrue\ttrue\n1\ntrue\ttrue\t0\n",
                "\(r.stdout)\(r.stderr)")
        let stats = qw(["spec", "context", "ledger", "7", "--stats"], cwd: project)
        #expect(stats.code == 0)
        #expect(stats.stdout.contains("references: 3, kept whole: 3"), "\(stats.stdout)")
        #expect(stats.stdout.contains("  kept requirements.md: Requirement 5: Balances"), "\(stats.stdout)")
        #expect(stats.stdout.contains("  kept design.md: Reports (src/ledger/reports.py)"), "\(stats.stdout)")
        // a reference that resolves to nothing is named, not dropped in silence
        let missing = qw(["spec", "context", "tasks.md", "1.1", "--stats"], cwd: broken)
        #expect(missing.stdout.contains("not found: 1.5, 7"), "\(missing.stdout)")
    }

    /// Approvals are durable records (who, when, the document's hash) that any qw process
    /// sees; an approved document that is edited needs approval again.
    @Test func anApprovalHoldsUntilTheDocumentChanges() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        _ = qwShell("cp -R '\(project)/.claude' '\(dir)/'")
        func line(_ doc: String) -> String {
            qw(["spec", "status", "ledger"], cwd: dir).stdout.split(separator: "\n").first { $0.contains("  " + doc + " ") }.map(String.init) ?? ""
        }
        #expect(line("requirements").hasSuffix("(not approved)"))
        #expect(access(dir + "/.qw", F_OK) != 0, "asking makes no store")
        let ok = qw(["spec", "approve", "ledger", "requirements", "--by", "ana"], cwd: dir)
        // and what follows is queued for qw consume
        #expect(ok.stdout == "approved requirements of ledger (./.claude/specs/ledger/requirements.md) by ana\nqueued #1 /spec-design ledger\n",
                "\(ok.stdout)\(ok.stderr)")
        #expect(line("requirements").hasSuffix("(approved)"))
        #expect(line("design").hasSuffix("(not approved)"))
        let who = qw(["-e", "local a = qw.spec.approval('ledger', 'requirements') print(a.state, a.by, a.at > 0)"], cwd: dir)
        #expect(who.stdout == "approved\tana\ttrue\n")
        _ = qwShell("echo '4. WHEN more THEN more.' >> '\(dir)/.claude/specs/ledger/requirements.md'")
        #expect(line("requirements").hasSuffix("(changed since it was approved: needs approval again)"))
        #expect(qw(["spec", "approve", "ledger", "requirements"], env: [("QW_USER", "bo")], cwd: dir).code == 0)
        #expect(qw(["-e", "print(qw.spec.approval('ledger', 'requirements').by)"], cwd: dir).stdout == "bo\n")
        let bad = qw(["spec", "approve", "ledger", "plan"], cwd: dir)
        #expect(bad.code == 1 && bad.stderr.contains("phase 'plan' has no document to approve (requirements, design, tasks)"))
    }

    /// `* [ ]` bullets, `1.2.` and `2\.` ids, references by id (REQ-4), by title and to a
    /// design section (`_Design:_`), `All`, and a `_Validation:` command.
    @Test func referencesByIdTitleAndDesignResolve() {
        let r = lua("""
            local p = qw.spec.parse("refs")
            for _, t in ipairs(p.tasks) do print(t.id, t.state, table.concat(t.requirements, ","), t.validation or "-") end
            local _, st = qw.spec.context("refs", "1.3")
            print(st.referenced, st.kept_referenced, table.concat(st.sections, "|"):find("design.md: Sessions store", 1, true) ~= nil)
            local _, all = qw.spec.context("refs", "2")
            print(all.referenced, all.kept_referenced)
            """, in: project)
        #expect(r.stdout == "1.2\t \tREQ-4\t`test -f src/login.c`\n1.3\tx\tSessions,Login\t-\n2\t \tAll\t-\n3\t3\ttrue\n2\t2\n",
                "\(r.stdout)\(r.stderr)")
        #expect(qw(["spec", "lint", "refs"], cwd: project).stdout == "")
    }

    @Test func badInvocationsSayWhatIsMissing() {
        let none = qw(["spec", "tasks", "nosuch"], cwd: project)
        #expect(none.code == 1)
        #expect(none.stderr == "qw spec: no spec named 'nosuch' (qw spec list shows them)\n", "\(none.stderr)")
        let noName = qw(["spec", "plan"], cwd: project)
        #expect(noName.code == 2)
        #expect(noName.stderr.contains("which spec?"))
        let unknown = qw(["spec", "frobnicate", "demo"], cwd: project)
        #expect(unknown.code == 2)
        #expect(unknown.stderr.contains("unknown action 'frobnicate'"))
    }
}
