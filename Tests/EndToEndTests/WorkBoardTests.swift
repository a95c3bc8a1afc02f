import CSystem
import Glibc
import QuantumwalaCore
import Testing

/// `qw resources` shows what other running qw processes run and queue.
@Suite(.serialized) struct WorkBoardTests {
    private func jsonFiles(in dir: String) -> [String] {
        qwShell("ls -A '\(dir)'").split(separator: "\n").map(String.init).filter { $0.hasSuffix(".json") }
    }

    @Test func resourcesListsTheWorkOfARunningQw() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let board = dir + "/board"
        writeFile(dir + "/busy.lua", """
            qw.limits{ max_concurrent = 1 }
            qw.batch({ { "sleep", "1001.25" }, { "sh", "-c", "sleep 1001.5", resources = { memory = "64M" } } })
            """)
        var spec = CommandSpec(argv: [qwBinary, "run", dir + "/busy.lua"])
        spec.env = [("NO_COLOR", "1"), ("QW_RUNTIME_DIR", board)]
        spec.cwd = dir
        let reactor = Reactor()
        var result: ProcessResult?
        let child = try #require(ChildProcess.start(spec, reactor: reactor) { result = $0 })

        // the entry appears within the publishing interval (0.5 s) once the first sleep runs
        let env = [("QW_RUNTIME_DIR", board)]
        var shown = qw(["resources", "--json"], env: env)
        let deadline = monotonicSeconds() + 15
        while !(shown.stdout.contains("\"name\": \"sleep 1001.25\"") && shown.stdout.contains("\"rss\""))
            && monotonicSeconds() < deadline {
            reactor.runOnce(maxWait: 0.1)
            shown = qw(["resources", "--json"], env: env)
        }
        let json = shown.stdout
        #expect(json.contains("\"pid\": \(child.pid)"))
        #expect(json.contains("\"command\": \"qw run \(dir)/busy.lua\""))
        #expect(json.contains("\"running\": 1"))
        #expect(json.contains("\"queued\": 1"))
        #expect(json.contains("\"name\": \"sh -c sleep 1001.5\""))
        #expect(json.contains("\"memory\": 67108864"))
        #expect(json.contains("\"slots_total\": 1"))

        let table = qw(["resources"], env: env).stdout
        #expect(table.contains("qw processes      1"))
        #expect(table.contains("qw \(child.pid): qw run \(dir)/busy.lua  (in \(dir))"))
        #expect(table.contains("slots 1/1"))
        #expect(table.contains(try Regex(#"running  \d+ +[0-9.]+s +- +[0-9.]+ [KM]iB +sleep 1001\.25"#)), "\(table)")
        #expect(table.contains(try Regex(#"queued +[0-9.]+s +64\.0 MiB +sh -c sleep 1001\.5"#)))

        // SIGTERM: qw ends its work and takes its entry with it
        kill(child.pid, SIGTERM)
        while result == nil { reactor.runOnce() }
        #expect(result?.signal == SIGTERM)
        #expect(jsonFiles(in: board).isEmpty)
        #expect(livePids(matching: "1001.25").isEmpty)
        let after = qw(["resources", "--json"], env: env)
        #expect(after.stdout.contains("\"processes\": {}"))
        #expect(after.stdout.contains("\"running\": 0"))
    }

    @Test func entriesOfEndedProcessesAreSkippedAndRemoved() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        qwShell("mkdir -m 700 '\(dir)/board'")
        // a process that has ended, and a live pid whose start time does not match (reused)
        let ended = try #require(Int32(qwShell("sh -c 'echo $$'").filter { $0 != "\n" }))
        writeFile(dir + "/board/\(ended)-1.json", #"{"pid": \#(ended), "start_ticks": 1, "running": [], "queued": []}"#)
        writeFile(dir + "/board/\(getpid())-2.json", #"{"pid": \#(getpid()), "start_ticks": 1, "running": [], "queued": []}"#)
        writeFile(dir + "/board/broken.json", "{ not json")
        let shown = qw(["resources", "--json"], env: [("QW_RUNTIME_DIR", dir + "/board")])
        #expect(shown.code == 0)
        #expect(shown.stdout.contains("\"processes\": {}"))
        #expect(jsonFiles(in: dir + "/board") == ["broken.json"])  // not a qw entry: left alone
    }

    @Test func aBoardThatIsNotADirectoryOfOursIsNotUsed() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/file", "")
        let r = qw(["-e", "print(qw.exec{'true'}.ok)"], env: [("QW_RUNTIME_DIR", dir + "/file")])
        #expect(r.code == 0)
        #expect(r.stdout == "true\n")
        let shown = qw(["resources", "--json"], env: [("QW_RUNTIME_DIR", dir + "/file")])
        #expect(shown.code == 0)
        #expect(shown.stdout.contains("\"processes\": {}"))
    }
}
