import ArgumentParser
import CReadline
import Glibc
import LuaHost
import QuantumwalaCore
import QuantumwalaLua

/// The REPL that readline's C callbacks reach (readline has one global state too).
nonisolated(unsafe) private var activeSession: ReplSession?
nonisolated(unsafe) private var pendingLine: String?
nonisolated(unsafe) private var gotLine = false
nonisolated(unsafe) private var completions: [String] = []

private let lineHandler: @convention(c) (UnsafeMutablePointer<CChar>?) -> Void = { line in
    gotLine = true
    qwrl_handler_remove()  // or readline shows the prompt again before the line runs
    if let line {
        pendingLine = String(cString: line)
        free(line)
    } else {
        pendingLine = nil  // end of input (Ctrl-D)
    }
}

private let completionGenerator: @convention(c) (UnsafePointer<CChar>?, Int32) -> UnsafeMutablePointer<CChar>? = { text, state in
    if state == 0 {
        qwrl_no_append()
        completions = activeSession?.runtime.completions(for: text.map { String(cString: $0) } ?? "") ?? []
    }
    guard !completions.isEmpty else { return nil }
    return strdup(completions.removeFirst())
}

/// The interactive shell: readline editing and history, completion, multi-line chunks,
/// printed results, Ctrl-C that cancels the running line.
final class ReplSession {
    let runtime: Runtime
    let historyPath: String?

    init(runtime: Runtime) {
        self.runtime = runtime
        historyPath = Self.historyFile()
        loadEveryModule()
    }

    /// stdlib loads its modules on first use; Tab completion needs their names now.
    private func loadEveryModule() {
        _ = try? runtime.lua.run("qw._load_lazy()", name: "=repl")
    }

    /// `QW_HISTORY`, else `$XDG_STATE_HOME/qw/history`, else `~/.local/state/qw/history`.
    static func historyFile() -> String? {
        if let p = getenv("QW_HISTORY") { return String(cString: p) }
        var base: String
        if let x = getenv("XDG_STATE_HOME"), x.pointee != 0 {
            base = String(cString: x)
        } else if let h = getenv("HOME") {
            base = String(cString: h) + "/.local/state"
        } else {
            return nil
        }
        base += "/qw"
        var path = ""
        for part in base.split(separator: "/") {
            path += "/" + part
            mkdir(path, 0o700)
        }
        return base + "/history"
    }

    func run() throws {
        var why: UnsafePointer<CChar>?
        guard qwrl_load(&why) == 0 else {
            writeAll(2, "qw: the REPL needs GNU readline (Debian: libreadline8): \(why.map { String(cString: $0) } ?? "not found")\n")
            throw ExitCode(1)
        }
        activeSession = self
        defer { activeSession = nil }
        qwrl_setup("qw", completionGenerator)
        if let h = historyPath { qwrl_read_history(h) }
        runtime.setArguments(script: nil, [])
        let color = useColor(fd: 1)
        writeAll(1, "Quantumwala \(quantumwalaVersion) (Lua 5.4) :help for help, Ctrl-D to leave\n")
        // \u{1}...\u{2} tell readline the escape codes take no room on the screen
        let prompt = color ? "\u{1}\u{1B}[36m\u{2}qw>\u{1}\u{1B}[0m\u{2} " : "qw> "
        let more = color ? "\u{1}\u{1B}[36m\u{2}..>\u{1}\u{1B}[0m\u{2} " : "..> "
        var buffer = ""
        runtime.idleInterrupt = {
            // Ctrl-C at the prompt drops what was typed, as a shell does.
            buffer = ""
            qwrl_cancel_line()
            qwrl_set_prompt(prompt)
            qwrl_redisplay()
        }
        defer { runtime.idleInterrupt = nil }
        while true {
            guard let line = readLine(prompt: buffer.isEmpty ? prompt : more) else {
                writeAll(1, "\n")
                break
            }
            if buffer.isEmpty && line.hasPrefix(":") {
                if !command(line) { break }
                continue
            }
            buffer += buffer.isEmpty ? line : "\n" + line
            switch compile(buffer) {
            case .incomplete:
                continue
            case .error(let msg):
                remember(buffer)
                writeAll(2, msg + "\n")
            case .ready:
                remember(buffer)
                report(runtime.runPrinting())
            }
            buffer = ""
        }
        qwrl_handler_remove()
    }

    private func remember(_ chunk: String) {
        guard !chunk.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\n" }) else { return }
        qwrl_add_history(chunk)
        if let h = historyPath {
            if access(h, F_OK) != 0 { qwrl_write_history(h) } else { qwrl_append_history(1, h) }
            qwrl_history_truncate_file(h, 1000)
        }
    }

    enum Compiled { case ready, incomplete, error(String) }

    /// Compiles a line as `return <line>` first (so expressions print), then as statements;
    /// a chunk that ends too early waits for more lines. A ready chunk stays on the stack.
    private func compile(_ code: String) -> Compiled {
        let lua = runtime.lua
        if (try? lua.load(Array(("return " + code).utf8), name: "=stdin")) != nil { return .ready }
        do {
            try lua.load(Array(code.utf8), name: "=stdin")
            return .ready
        } catch {
            if error.message.hasSuffix("<eof>") { return .incomplete }
            return .error(error.message)
        }
    }

    private func report(_ outcome: RunOutcome) {
        if case .failed(let e) = outcome {
            let head = useColor(fd: 2) ? "\u{1B}[31m" + e.message + "\u{1B}[0m" : e.message
            writeAll(2, head + "\n" + (e.traceback.map { $0 + "\n" } ?? ""))
        }
    }

    /// Runs a `:command`; false to leave.
    private func command(_ line: String) -> Bool {
        let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
        let arg = parts.count > 1 ? parts[1].trimmingSpaces() : ""
        remember(line)
        switch parts[0] {
        case ":help", ":h", ":?":
            report(runtime.runChunk("print(require('qw.repl').help)", name: "=help"))
        case ":load", ":l":
            guard !arg.isEmpty else {
                writeAll(2, ":load needs a file name\n")
                return true
            }
            report(runtime.loadAndRun(arg))
        case ":reload", ":r":
            report(runtime.reload())
            loadEveryModule()
            writeAll(1, "reloaded stdlib and project modules\n")
        case ":quit", ":q", ":exit":
            return false
        default:
            writeAll(2, "unknown command \(parts[0]) (try :help)\n")
        }
        return true
    }

    /// Reads a line with readline while the event loop keeps background work going.
    private func readLine(prompt: String) -> String? {
        gotLine = false
        pendingLine = nil
        qwrl_handler_install(prompt, lineHandler)
        runtime.waitForInput(fd: 0, until: { gotLine }) { qwrl_read_char() }
        return pendingLine
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
