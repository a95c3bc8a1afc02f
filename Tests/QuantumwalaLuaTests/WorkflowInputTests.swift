import Glibc
import LuaHost
@testable import QuantumwalaLua
import QuantumwalaCore
import Testing

/// Task inputs and outputs: a kept task runs again when the content of an input changed, an
/// input glob matches other files, or an output is gone; with real files, real commands and
/// the real store.
@Suite(.serialized)
struct WorkflowInputTests {
    let dir = tempDir()

    /// A workflow over files in `dir`: `gen` writes gen.txt from src/*.txt (a glob), `one`
    /// copies one.txt (a literal path), `both` reads what the other two wrote (so it depends
    /// on them through its inputs alone), and `free` has no inputs. Each run of a task adds a
    /// line to runs/<id>.
    var script: String {
        """
        local D = [[\(dir)]]
        local function step(id, cmd)
          return { "sh", "-c", ("echo run >> runs/%s; %s"):format(id, cmd), cwd = D }
        end
        local wf = qw.workflow("files")
        wf:task("gen", step("gen", "cat src/*.txt > gen.txt"), { cwd = D, inputs = { "src/*.txt" }, outputs = { "gen.txt" } })
        wf:task("one", step("one", "cp one.txt one.out"), { cwd = D, inputs = { "one.txt" }, outputs = { "one.out" } })
        wf:task("both", step("both", "cat gen.txt one.out > both.out"), { cwd = D, inputs = { "gen.txt", "one.out" } })
        wf:task("free", step("free", "true"))
        local mode = ...
        if mode == "dry" then
          local r = wf:run{ dry_run = true }
          local why = {}
          for _, d in ipairs(r.tasks) do why[d.id] = d.reason or "kept" end
          result = { why = why, run = table.concat(r.run, ","), keep = table.concat(r.keep, ",") }
        else
          local r = wf:run()
          result = { ok = r.ok, failed = table.concat(r.failed, ","), error = r.failed[1] and r.results[r.failed[1]].error }
        end
        """
    }

    func setUp() {
        _ = system("mkdir -p '\(dir)/src' '\(dir)/runs'; echo a > '\(dir)/src/a.txt'; echo b > '\(dir)/src/b.txt'; echo one > '\(dir)/one.txt'")
    }

    func run(_ mode: String = "run") throws -> (RunOutcome, LuaValue) {
        var opts = RuntimeOptions()
        opts.statePath = dir + "/state.db"
        return try runScript(script.replacingAll("local mode = ...", with: "local mode = \"\(mode)\""), options: opts)
    }

    func runs(_ id: String) -> Int { readAll(dir + "/runs/" + id).split(separator: "\n").count }

    func counts() -> [Int] { ["gen", "one", "both", "free"].map(runs) }

    @Test func editedInputRerunsTheTaskAndItsDependentsOnly() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        setUp()
        let (o, r) = try run()
        #expect(o.error == nil)
        #expect(r["ok"] == true)
        #expect(counts() == [1, 1, 1, 1])
        _ = try run()
        #expect(counts() == [1, 1, 1, 1], "nothing changed, nothing runs")

        _ = system("echo changed >> '\(dir)/one.txt'")
        let (_, dry) = try run("dry")
        #expect(dry["why"]?["one"] == "input changed: one.txt")
        #expect(dry["why"]?["both"] == "dependency re-run: one")
        #expect(dry["why"]?["gen"] == "kept")
        #expect(dry["run"] == "one,both")
        #expect(counts() == [1, 1, 1, 1], "a dry run runs nothing")
        _ = try run()
        #expect(counts() == [1, 2, 2, 1])
        #expect(readAll(dir + "/both.out") == "a\nb\none\nchanged\n")
    }

    @Test func deletedOutputRerunsTheTask() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        setUp()
        _ = try run()
        _ = system("rm '\(dir)/gen.txt'")
        let (_, dry) = try run("dry")
        #expect(dry["why"]?["gen"] == "output missing: gen.txt")
        _ = try run()
        #expect(counts() == [2, 1, 2, 1])
        #expect(access(dir + "/gen.txt", F_OK) == 0)
    }

    /// What git does on a checkout that brings a file back: the same bytes, a new mtime.
    @Test func restoredFileWithTheSameContentKeepsTheTask() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        setUp()
        _ = try run()
        _ = system("cd '\(dir)' && cp one.txt keep && rm one.txt && cp keep one.txt && touch -d '+1 minute' one.txt src/a.txt")
        let (_, dry) = try run("dry")
        #expect(dry["run"] == "")
        _ = try run()
        #expect(counts() == [1, 1, 1, 1])
    }

    @Test func aGlobThatMatchesOtherFilesRerunsTheTask() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        setUp()
        _ = try run()
        _ = system("echo c > '\(dir)/src/c.txt'")
        let (_, added) = try run("dry")
        #expect(added["why"]?["gen"] == "input added: src/c.txt")
        _ = try run()
        #expect(counts() == [2, 1, 2, 1])
        _ = system("rm '\(dir)/src/a.txt'")
        let (_, removed) = try run("dry")
        #expect(removed["why"]?["gen"] == "input removed: src/a.txt")
        _ = try run()
        #expect(readAll(dir + "/gen.txt") == "b\nc\n")
    }

    @Test func missingInputIsAnErrorBeforeAnythingRuns() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        setUp()
        _ = system("rm '\(dir)/one.txt'")
        let (o, _) = try run()
        #expect(o.error?.message == "test.lua:17: workflow 'files': task 'one': input 'one.txt' does not exist (in \(dir))")
        #expect(counts() == [0, 0, 0, 0], "nothing ran")
        // gen.txt and one.out are missing too, but other tasks declare them as outputs: no error
        _ = system("echo one > '\(dir)/one.txt'; rm -f '\(dir)'/src/*.txt")
        let (o2, _) = try run()
        #expect(o2.error?.message == "test.lua:17: workflow 'files': task 'gen': input 'src/*.txt' matches no file (in \(dir))")
        var opts = RuntimeOptions()
        opts.statePath = dir + "/state.db"
        let store = try StateStore(path: dir + "/state.db")
        #expect(try store.workflows().isEmpty, "the failed start left no workflow half begun")
    }

    @Test func computedInputsAndADeclaredOutputThatIsNotMade() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        setUp()
        var opts = RuntimeOptions()
        opts.statePath = dir + "/state.db"
        let code = """
            local D = [[\(dir)]]
            local calls = 0
            local wf = qw.workflow("computed")
            wf:task("list", { "sh", "-c", "echo run >> runs/list", cwd = D }, { cwd = D, inputs = function(id)
              calls = calls + 1
              local found = {}
              for line in io.popen("cd " .. D .. " && ls src"):lines() do found[#found + 1] = "src/" .. line end
              return found
            end })
            wf:task("liar", { "true" }, { cwd = D, outputs = { "never-made.txt" } })
            local r = wf:run()
            local _, plan = wf:plan()
            result = { calls = calls, failed = table.concat(r.failed, ","), error = r.results.liar.error,
                       again = plan[2].reason }
            """
        let (o, r) = try runScript(code, options: opts)
        #expect(o.error == nil)
        #expect(r["calls"] == 2)
        #expect(r["failed"] == "liar")
        #expect(r["error"] == "declared output 'never-made.txt' is missing after the task succeeded")
        #expect(r["again"] == "failed last time")
        _ = system("echo z > '\(dir)/src/z.txt'")
        let (_, r2) = try runScript(code, options: opts)
        #expect(r2["calls"] == 2)
        #expect(runs("list") == 2, "a new file in the computed list runs it again")
    }

    /// qw status NAME says what the next run would do, from the store and the files.
    @Test func statusSaysWhyATaskWouldRunAgain() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        setUp()
        _ = try run()
        _ = system("echo changed >> '\(dir)/src/b.txt'")
        let store = try StateStore(path: dir + "/state.db")
        let next = WorkflowRun.nextRun(try store.tasks(of: "files"), hashes: ContentHashes())
        #expect(next == ["gen": "input changed: src/b.txt", "both": "dependency re-run: gen"])
    }

    /// Hashes of files last changed (content or inode) more than a moment ago are kept for
    /// the next run, which then reads none of them. /bin/sh is such a file on any machine.
    @Test func hashesOfSettledFilesAreCached() throws {
        defer { _ = system("rm -rf '\(dir)'") }
        setUp()
        var opts = RuntimeOptions()
        opts.statePath = dir + "/state.db"
        let (o, _) = try runScript("""
            local wf = qw.workflow("settled")
            wf:task("sh", { "true" }, { inputs = { "/bin/sh" } })
            assert(wf:run().ok)
            """, options: opts)
        #expect(o.error == nil)
        let store = try StateStore(path: dir + "/state.db")
        #expect(try store.cachedHash("/bin/sh") != nil)
        // the next run reads nothing to know that /bin/sh is unchanged
        let (o2, r2) = try runScript("""
            local wf = qw.workflow("settled")
            wf:task("sh", { "true" }, { inputs = { "/bin/sh" } })
            local r = wf:run{ dry_run = true }
            result = { files = r.hashed.files, keep = r.keep[1] }
            """, options: opts)
        #expect(o2.error == nil)
        #expect(r2["files"] == 0)
        #expect(r2["keep"] == "sh")
        let cached = ContentHashes(lookup: { try? store.cachedHash($0) ?? nil })
        let again = cached.hash("/bin/sh")
        #expect(cached.filesRead == 0)
        let fresh = ContentHashes()
        #expect(fresh.hash("/bin/sh") == again)
        #expect(fresh.filesRead == 1)
        // a file changed just now is hashed, not cached: its stamp could hide a change made
        // within the clock's granularity
        _ = system("echo new > '\(dir)/one.txt'")
        _ = fresh.hash(dir + "/one.txt")
        #expect(!fresh.fresh.contains { $0.path == dir + "/one.txt" })
    }
}
