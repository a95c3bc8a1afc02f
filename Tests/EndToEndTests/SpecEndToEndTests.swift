import Glibc
import QuantumwalaCore
import Testing

/// The spec workflow end to end on a small real Python package: `qw spec run` from
/// requirements to review with `--approve auto`, the real Claude Code CLI against the fake
/// model, which writes the documents and "implements" each task with a Bash call that writes
/// a module and its unittest and commits. Nine tasks in four waves; two of them are made to
/// conflict. qw is killed with -9 in the middle of the implementation and run again.
enum PythonProject {
    /// (id, module, depends, delay of the final answer): task 7 and 8 both write calc/shared.py.
    static let tasks: [(id: Int, module: String, depends: [Int], slow: Bool)] = [
        (1, "add", [], false), (2, "sub", [], false), (3, "mul", [1], false), (4, "neg", [2], false),
        (5, "square", [3], true), (6, "absval", [4], true), (7, "shared", [1], false), (8, "shared", [2], false),
        (9, "api", [5, 6], false),
    ]

    /// The shell command task `id` runs: its module and its test, committed.
    static func command(_ t: (id: Int, module: String, depends: [Int], slow: Bool)) -> String {
        let body: String
        switch t.module {
        case "add": body = "def add(a, b):\n    return a + b\n"
        case "sub": body = "def sub(a, b):\n    return a - b\n"
        case "mul": body = "from calc.add import add\n\ndef mul(a, b):\n    r = 0\n    for _ in range(b):\n        r = add(r, a)\n    return r\n"
        case "neg": body = "from calc.sub import sub\n\ndef neg(a):\n    return sub(0, a)\n"
        case "square": body = "from calc.mul import mul\n\ndef square(a):\n    return mul(a, a)\n"
        case "absval": body = "from calc.neg import neg\n\ndef absval(a):\n    return a if a >= 0 else neg(a)\n"
        case "api": body = "from calc.square import square\nfrom calc.absval import absval\n\ndef norm(a):\n    return square(absval(a))\n"
        default: body = "WHO = \(t.id)\n"
        }
        let check: String
        switch t.module {
        case "add": check = "from calc.add import add\n        self.assertEqual(add(2, 3), 5)"
        case "sub": check = "from calc.sub import sub\n        self.assertEqual(sub(5, 3), 2)"
        case "mul": check = "from calc.mul import mul\n        self.assertEqual(mul(4, 3), 12)"
        case "neg": check = "from calc.neg import neg\n        self.assertEqual(neg(4), -4)"
        case "square": check = "from calc.square import square\n        self.assertEqual(square(5), 25)"
        case "absval": check = "from calc.absval import absval\n        self.assertEqual(absval(-3), 3)"
        case "api": check = "from calc.api import norm\n        self.assertEqual(norm(-3), 9)"
        default: check = "import calc.shared\n        self.assertTrue(calc.shared.WHO)"
        }
        let test = "import unittest\n\nclass T(unittest.TestCase):\n    def test_it(self):\n        \(check)\n"
        return "cat > calc/\(t.module).py <<'PY'\n\(body)PY\ncat > tests/test_\(t.module)_\(t.id).py <<'PY'\n\(test)PY\n"
            + "git add -A && git commit -qm 'task \(t.id): \(t.module)'"
    }

    /// The scenarios of the fake model for this project.
    static var scenarios: String {
        var tasksDoc = "# Implementation Plan: calc\n\n"
        for t in tasks {
            tasksDoc += "- [ ] \(t.id). Module \(t.module) [[fake:py-\(t.id)]]\n  - _Requirements: 1.1_\n"
            if !t.depends.isEmpty { tasksDoc += "  - _Depends: \(t.depends.map(String.init).joined(separator: ", "))_\n" }
        }
        var out = """
            "py-tasks-doc": [{"tool_use": {"name": "Write", "input": {"file_path": "{{path}}", "content": \(jsonString(tasksDoc))}}},
                             {"text": "tasks written. STATUS: done"}]
            """
        for t in tasks {
            let final = t.slow ? "{\"delay\": 3, \"text\": \"done. STATUS: done\"}" : "{\"text\": \"done. STATUS: done\"}"
            out += ",\n\"py-\(t.id)\": [{\"tool_use\": {\"name\": \"Bash\", \"input\": {\"command\": \(jsonString(command(t))), \"description\": \"task \(t.id)\"}}}, \(final)]"
        }
        return out
    }
}

@Suite(.serialized)
struct SpecEndToEndTests {
    @Test func aSpecRunOnAPythonPackageSurvivesAKillAndMergesEveryTaskButTheConflict() throws {
        let cli = try #require(claudeBinary, "no Claude Code CLI: scripts/test installs it")
        let fake = try #require(FakeModel.shared)
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let p = dir + "/proj"
        qwShell("mkdir -p '\(dir)/home' '\(dir)/tmp' '\(p)/calc' '\(p)/tests' '\(p)/.claude/steering' && cp -R '\(repoRoot)/.claude/agents' '\(p)/.claude/'")
        writeFile(p + "/calc/__init__.py", "")
        writeFile(p + "/tests/__init__.py", "")
        writeFile(p + "/tests/test_base.py", "import unittest\n\nclass T(unittest.TestCase):\n    def test_import(self):\n        import calc\n")
        writeFile(p + "/.gitignore", ".qw/\n__pycache__/\n")
        writeFile(p + "/.claude/steering/product.md", "# Product\n\n## Overview\n\ncalc: small arithmetic in Python.\n")
        _ = qwShell("cd '\(p)' && git init -q -b main && git add -A && git -c user.email=t@example.com -c user.name=t commit -qm init")
        let drafts = p + "/.qw/drafts/calc"
        writeFile(dir + "/run.lua", """
            qw.limits{ agent_stagger = 0, max_agents = 3 }
            local d = "\(drafts)"
            local r = qw.spec.run("calc", { approve = "auto", agent = "spec-task-executor",
              check = { "python3", "-m", "unittest", "discover", "-s", "tests", "-t", ".", "-q" },
              notes = { requirements = "[[fake:req-doc]] [[path:" .. d .. "/requirements.md]]",
                        design = "[[fake:design-doc]] [[path:" .. d .. "/design.md]]",
                        tasks = "[[fake:py-tasks-doc]] [[path:" .. d .. "/tasks.md]]",
                        ["requirements-validation"] = "[[fake:val-ok]]", ["design-validation"] = "[[fake:val-ok]]",
                        ["tasks-validation"] = "[[fake:val-ok]]", review = "[[fake:review-ok]]" } })
            local im = r.implementation or { merged = {}, failed = {} }
            print(r.ok, table.concat(im.merged, ","), im.failed[1] and im.failed[1].id, im.failed[1] and table.concat(im.failed[1].files or {}, ","))
            """)
        let env: [(String, String)] = [("QW_CLAUDE", cli), ("HOME", dir + "/home"), ("TMPDIR", dir + "/tmp")] + fake.cliEnv + [
                                       ("API_TIMEOUT_MS", "10000"),
                                       ("GIT_AUTHOR_NAME", "qw test"), ("GIT_AUTHOR_EMAIL", "qw@example.com"),
                                       ("GIT_COMMITTER_NAME", "qw test"), ("GIT_COMMITTER_EMAIL", "qw@example.com")]
        // the first run: killed with -9 once tasks 5 and 6 (wave 3) have committed and wait for their last answer
        var spec = CommandSpec(argv: [qwBinary, "run", dir + "/run.lua"])
        spec.env = qwTestEnv + env
        spec.cwd = p
        let reactor = Reactor()
        var result: ProcessResult?
        let child = try #require(ChildProcess.start(spec, reactor: reactor) { result = $0 })
        let deadline = monotonicSeconds() + 120
        func atTurnOne(_ id: Int) -> Bool { fake.requests("py-\(id)").contains { $0.contains("\"turn\": 1") } }
        while result == nil && monotonicSeconds() < deadline && !(atTurnOne(5) && atTurnOne(6)) {
            reactor.runOnce(maxWait: 0.05)
        }
        try #require(result == nil, "qw ended before the kill: \(String(decoding: result?.stdout ?? [], as: UTF8.self))\(String(decoding: result?.stderr ?? [], as: UTF8.self))")
        kill(child.pid, SIGKILL)
        while result == nil { reactor.runOnce() }
        let mergedBefore = qwShell("cd '\(p)' && git log --merges --format=%s main")
        #expect(mergedBefore.contains("Merge task 1 of calc") && !mergedBefore.contains("Merge task 9"), "\(mergedBefore)")
        let counts = (1...9).map { fake.requests("py-\($0)").count }

        // the second run goes on where the first stopped
        let r = qw(["run", dir + "/run.lua"], env: env, cwd: p, timeout: 240)
        #expect(r.stdout == "false\t5,6,8,9\t7\tcalc/shared.py\n" || r.stdout == "false\t5,6,9\t8\tcalc/shared.py\n",
                "\(r.stdout)\(r.stderr)")
        for id in [1, 2, 3, 4] {
            #expect(fake.requests("py-\(id)").count == counts[id - 1], "merged task \(id) ran again")
        }
        // every task merged but the one of the conflicting pair that came second, in order,
        // and the project's tests pass on main
        let merges = qwShell("cd '\(p)' && git log --merges --reverse --format=%s main").split(separator: "\n").map { String($0.dropFirst("Merge task ".count).prefix { $0 != " " }) }
        #expect(merges.count == 8 && merges.prefix(2).sorted() == ["1", "2"] && merges.last == "9", "\(merges)")
        let tests = qwShell("cd '\(p)' && python3 -m unittest discover -s tests -t . -q 2>&1; echo rc=$?")
        #expect(tests.hasSuffix("rc=0\n"), "\(tests)")
        let tasks = readText(p + "/.claude/specs/calc/tasks.md") ?? ""
        #expect(tasks.components("- [x] ") == 8 && tasks.components("- [-] ") == 1, "\(tasks)")
        // no worktree leaked: only the conflicting task's, kept for a person
        let trees = qwShell("cd '\(p)' && git worktree list --porcelain | grep '^worktree' | wc -l")
        #expect(trees == "2\n", "\(qwShell("cd '\(p)' && git worktree list"))")
        // at most max_agents runs at once: a run spans its first to its last request
        var spans: [(Double, Double)] = []
        for id in 1...9 {
            let ats = fake.requests("py-\(id)").compactMap { line -> Double? in
                guard let at = line.firstRange(of: "\"at\": ") else { return nil }
                return Double(line[at.upperBound...].prefix { $0.isNumber || $0 == "." })
            }
            if let a = ats.min(), let b = ats.max() { spans.append((a, b)) }
        }
        let most = spans.map { s in spans.filter { $0.0 <= s.0 && s.0 <= $0.1 }.count }.max() ?? 0
        #expect(most <= 3, "\(most) runs at once")
    }
}
