import Glibc
import QuantumwalaCore
import Testing

/// The REPL driven through a real pseudo-terminal.
@Suite(.serialized)
struct ReplTests {
    let dir = makeTempDir()
    var history: String { dir + "/history" }

    @Test func printsExpressionsAndTables() throws {
        defer { removeTree(dir) }
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("1 + 2\r")
        #expect(t.expect("qw> ").contains("3\r\n"))
        t.send("{ name = 'x', list = { 1, 2, 3 } }\r")
        #expect(t.expect("qw> ").contains("{ list = { 1, 2, 3 }, name = \"x\" }"))
        t.send("'a', nil, 2.0\r")
        #expect(t.expect("qw> ").contains("\"a\"\tnil\t2.0"))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }

    @Test func multiLineChunks() throws {
        defer { removeTree(dir) }
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("function sq(x)\r")
        t.expect("..> ")
        t.send("return x * x\r")
        t.expect("..> ")
        t.send("end\r")
        t.expect("qw> ")
        t.send("sq(12)\r")
        #expect(t.expect("qw> ").contains("144"))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }

    @Test func tabCompletesQwNames() throws {
        defer { removeTree(dir) }
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("qw.jso\t")
        t.expect("qw.json")
        t.send(".enc\t")
        t.expect("encode")
        t.send("({1, 2})\r")
        #expect(t.expect("qw> ").contains("\"[1,2]\""))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }

    @Test func ctrlCCancelsARunningCommand() throws {
        defer { removeTree(dir) }
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("qw.exec{'sleep', '1004.5'}\r")
        let deadline = monotonicSeconds() + 10
        while livePids(matching: "1004.5").isEmpty && monotonicSeconds() < deadline { usleep(10_000) }
        #expect(!livePids(matching: "1004.5").isEmpty)
        t.send("\u{3}")
        let shown = t.expect("qw> ")
        #expect(shown.contains("interrupted"))
        #expect(!shown.contains("traceback") && !shown.contains("stdlib"), "one line, no stack: \(shown)")
        #expect(noneLeft(matching: "1004.5"))
        // the REPL is still alive and the state is intact
        t.send("40 + 2\r")
        #expect(t.expect("qw> ").contains("42"))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }

    @Test func ctrlCReturnsLeasesAndSlots() throws {
        defer { removeTree(dir) }
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("qw.batch({ function() qw.acquire{ slots = 2 }; qw.exec{ 'sleep', '1007.5' } end, { 'sleep', '1007.5' } })\r")
        let deadline = monotonicSeconds() + 10
        while livePids(matching: "1007.5").count < 2 && monotonicSeconds() < deadline { usleep(10_000) }
        t.send("\u{3}")
        #expect(t.expect("qw> ").contains("interrupted"))
        #expect(noneLeft(matching: "1007.5"))
        t.send("qw.resources().slots_used, qw.resources().running\r")
        #expect(t.expect("qw> ").contains("0\t0"))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }

    @Test func ctrlCStopsARunawayLoop() throws {
        defer { removeTree(dir) }
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("n = 0; while true do n = n + 1 end\r")
        usleep(200_000)
        t.send("\u{3}")
        let shown = t.expect("qw> ")
        #expect(shown.contains("interrupted"))
        #expect(!shown.contains("traceback"), "one line, no stack: \(shown)")
        t.send("n > 0\r")
        #expect(t.expect("qw> ").contains("true"))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }

    @Test func ctrlCAtThePromptClearsTheLine() throws {
        defer { removeTree(dir) }
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("this is not lua")
        t.expect("not lua")
        t.send("\u{3}")
        t.expect("qw> ")
        t.send("7 * 6\r")
        let out = t.expect("qw> ")
        #expect(out.contains("42"))
        #expect(!out.contains("syntax error"))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }

    @Test func historyIsKeptAcrossSessions() throws {
        defer { removeTree(dir) }
        do {
            let t = try Terminal([], env: ["QW_HISTORY=" + history])
            t.expect("qw> ")
            t.send("marker_value = 1234 * 2\r")
            t.expect("qw> ")
            t.send("\u{4}")
            #expect(t.waitExit() == 0)
        }
        #expect(readText(history)?.contains("marker_value = 1234 * 2") == true)
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("\u{1B}[A")  // Up: the previous session's line
        t.expect("marker_value = 1234 * 2")
        t.send("\r")
        t.expect("qw> ")
        t.send("marker_value\r")
        #expect(t.expect("qw> ").contains("2468"))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }

    @Test func commandsHelpLoadReload() throws {
        defer { removeTree(dir) }
        writeFile(dir + "/lib.lua", "loaded_from_file = 'yes'\n")
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send(":help\r")
        #expect(t.expect("qw> ").contains(":reload"))
        t.send(":load \(dir)/lib.lua\r")
        t.expect("qw> ")
        t.send("loaded_from_file\r")
        #expect(t.expect("qw> ").contains("\"yes\""))
        t.send("qw.marker = 1\r")
        t.expect("qw> ")
        t.send(":reload\r")
        #expect(t.expect("qw> ").contains("reloaded"))
        t.send("qw.marker == nil and type(qw.exec)\r")
        #expect(t.expect("qw> ").contains("\"function\""))
        t.send(":quit\r")
        #expect(t.waitExit() == 0)
    }

    @Test func batchProgressLineOnATerminal() throws {
        defer { removeTree(dir) }
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("#qw.batch({ 'true', 'true', 'false' }, { progress = true })\r")
        let out = t.expect("qw> ")
        #expect(out.contains("] 3/3 (1 failed)"))
        #expect(out.contains("3\r\n"))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }

    @Test func errorsKeepTheReplAlive() throws {
        defer { removeTree(dir) }
        let t = try Terminal([], env: ["QW_HISTORY=" + history])
        t.expect("qw> ")
        t.send("error('oops')\r")
        #expect(t.expect("qw> ").contains("stdin:1: oops"))
        t.send("x = = 1\r")
        #expect(t.expect("qw> ").contains("stdin:1: unexpected symbol"))
        t.send("'still here'\r")
        #expect(t.expect("qw> ").contains("still here"))
        t.send("\u{4}")
        #expect(t.waitExit() == 0)
    }
}
