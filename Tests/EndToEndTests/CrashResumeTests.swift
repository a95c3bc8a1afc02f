import Glibc
import QuantumwalaCore
import Testing

/// A `kill -9` of `qw run` in the middle of a workflow, then a rerun: what the store says had
/// succeeded is not run again, the rest completes, and the database is sound.
@Suite(.serialized)
struct CrashResumeTests {
    static let script = """
        local dir = ...
        local wf = qw.workflow("crashy", { max_concurrent = 3 })
        local function step(id) return { "sh", "-c", ("sleep 0.1; echo %s >> %s/runs"):format(id, dir) } end
        for i = 1, 6 do wf:task("a" .. i, step("a" .. i)) end
        for i = 1, 6 do wf:task("b" .. i, step("b" .. i), { deps = { "a" .. i, "a" .. (i % 6 + 1) } }) end
        for i = 1, 4 do wf:task("c" .. i, step("c" .. i), { deps = { "b" .. i, "b" .. (i + 2) } }) end
        wf:task("end", step("end"), { deps = { "c1", "c2", "c3", "c4" } })
        local report = wf:run()
        os.exit(report.ok and 0 or 1)
        """

    func counts(_ dir: String) -> [String: Int] {
        var c: [String: Int] = [:]
        for line in (readText(dir + "/runs") ?? "").split(separator: "\n") { c[String(line), default: 0] += 1 }
        return c
    }

    /// Kills qw once `finished` steps have written their line (0: once the first step runs).
    @Test(arguments: [0, 2, 5, 9])
    func killNineThenRerun(afterSteps finished: Int) throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/wf.lua", Self.script)
        let db = dir + "/state.db"
        var spec = CommandSpec(argv: [qwBinary, "--state", db, "run", dir + "/wf.lua", dir])
        spec.env = qwTestEnv
        let reactor = Reactor()
        var result: ProcessResult?
        let child = try #require(ChildProcess.start(spec, reactor: reactor) { result = $0 })
        let steps = dir + "/runs"  // in every step's command line
        let deadline = monotonicSeconds() + 30
        while result == nil && monotonicSeconds() < deadline
            && (finished == 0 ? livePids(matching: steps).isEmpty : counts(dir).values.reduce(0, +) < finished) {
            reactor.runOnce(maxWait: 0.005)
        }
        kill(child.pid, SIGKILL)  // qw alone: its children are orphaned
        while result == nil { reactor.runOnce() }
        #expect(result?.signal == SIGKILL)
        #expect(noneLeft(matching: steps), "orphaned steps finish writing")
        let store = try StateStore(path: db)
        let succeeded = Set(try store.tasks(of: "crashy").filter { $0.status == "succeeded" }.map(\.id))
        let before = counts(dir)
        #expect(finished < 9 || !succeeded.isEmpty, "killed late enough that some tasks had succeeded")
        #expect(try store.integrityCheck() == "ok")
        // the counts the run kept are those of the rows it left (written in the same transactions)
        func countsMatch() throws -> Bool {
            guard let kept = try store.keptTaskCounts(of: "crashy") else { return try store.tasks(of: "crashy").isEmpty }
            return kept.map { "\($0.0)=\($0.1)" } == (try store.taskCountsFromRows(of: "crashy")).map { "\($0.0)=\($0.1)" }
        }
        #expect(try countsMatch())

        let rerun = qw(["--state", db, "run", dir + "/wf.lua", dir])
        #expect(rerun.code == 0, "\(rerun.stderr)")
        let after = counts(dir)
        for id in succeeded {
            #expect(after[id] == before[id], "\(id) had succeeded and ran again")
        }
        let all = (1...6).flatMap { ["a\($0)", "b\($0)"] } + (1...4).map { "c\($0)" } + ["end"]
        for id in all { #expect((after[id] ?? 0) >= 1, "\(id) never ran") }
        #expect(try store.integrityCheck() == "ok")
        #expect(try store.tasks(of: "crashy").allSatisfy { $0.status == "succeeded" })
        #expect(try countsMatch())
    }
}
