import Glibc
import QuantumwalaCore

/// `qw status --watch [NAME]`: the store, live, in a terminal.
///
/// On a terminal the view is redrawn in place when the store changes (and every second, for
/// the clocks): each workflow's progress, its running tasks with how long they have run,
/// cost, and the agent gate. Elsewhere (a pipe, a log file) it appends plain lines instead:
/// each event as it happens and a workflow's summary when it changes; watching one workflow
/// there ends when that workflow finishes, with its status as the exit code. With `json`,
/// one JSON document per change (what `qw status --json` prints). `NO_COLOR` turns colour off.
struct StatusWatcher {
    let store: StateStore
    let name: String?
    let json: Bool
    /// The JSON document of `qw status --json [NAME]`.
    let document: () throws -> String

    let tty = isatty(1) == 1
    let color = isatty(1) == 1 && getenv("NO_COLOR").map { $0.pointee == 0 } ?? true
    let unicode = ["LC_ALL", "LC_CTYPE", "LANG"].lazy.compactMap { (k: String) -> String? in
        guard let v = getenv(k), v.pointee != 0 else { return nil }
        return String(cString: v)
    }.first?.uppercased().contains("UTF") ?? false

    /// Watches until interrupted (or, off a terminal, until the watched workflow finishes).
    func run() throws -> Int32 {
        if tty && !json {
            // hide the cursor while drawing; show it again however this ends
            writeAll(1, "\u{1B}[?25l\u{1B}[2J")
            signal(SIGINT) { _ in _ = "\u{1B}[?25h\n".withCString { write(1, $0, 7) }; _exit(0) }
            signal(SIGTERM) { _ in _ = "\u{1B}[?25h\n".withCString { write(1, $0, 7) }; _exit(0) }
        }
        var version: Int64 = -1
        var lastDraw = 0.0
        var lastDoc = ""
        var lastEvent = (try? store.logPositions().events) ?? 0
        var summaries: [String: String] = [:]
        if !tty && !json, let name {
            // the workflow as it is when the watch starts
            let line = try summaryLine(name)
            summaries[name] = line
            writeAll(1, line + "\n")
        }
        while true {
            let now = monotonicWallClock()
            let v = try store.dataVersion()
            let changed = v != version
            version = v
            if json {
                if changed {
                    let doc = try document()
                    if doc != lastDoc {
                        writeAll(1, doc + "\n")
                        lastDoc = doc
                    }
                }
            } else if tty {
                if changed || now - lastDraw >= 1 {
                    draw(try frame(now: now))
                    lastDraw = now
                }
            } else if changed {
                // plain lines: the new events, then summaries that changed
                let events = try store.engineEvents(afterID: lastEvent, limit: 5000)
                if let last = events.last { lastEvent = last.id }
                var ended: String?
                for e in events where name == nil || e.workflow == name {
                    writeAll(1, eventLine(e) + "\n")
                    if e.kind == "workflow finished", e.workflow == name { ended = e.detail }
                }
                for w in Set(events.compactMap(\.workflow)) where name == nil || w == name {
                    let line = try summaryLine(w)
                    if summaries[w] != line {
                        summaries[w] = line
                        writeAll(1, line + "\n")
                    }
                }
                if let ended { return ended.contains("succeeded") ? 0 : 1 }
            }
            usleep(100_000)
        }
    }

    // MARK: plain lines

    private func clock(_ t: Double) -> String {
        var tt = time_t(t)
        var tmv = tm()
        localtime_r(&tt, &tmv)
        return String(format2d(Int(tmv.tm_hour))) + ":" + format2d(Int(tmv.tm_min)) + ":" + format2d(Int(tmv.tm_sec))
    }

    private func format2d(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

    private func eventLine(_ e: StateStore.EventView) -> String {
        var line = clock(e.at) + " " + (e.workflow ?? "-") + ": " + e.kind
        if let t = e.task { line += " " + t }
        if e.kind == "task failed", let d = e.detail, let err = StateStore.stringField(d, "error") { line += " (" + err + ")" }
        if e.kind == "workflow finished", let d = e.detail { line += " " + d.filter { $0 != "\"" } }
        return line
    }

    private func summaryLine(_ w: String) throws -> String {
        guard let view = try store.workflowViews().first(where: { $0.name == w }) else {
            return "\(clock(monotonicWallClock())) \(w): not in \(store.path) yet"
        }
        let counts = try store.taskCounts(of: w)
        let total = counts.reduce(0) { $0 + $1.1 }
        let status: String = { if case .string(let s)? = view.fields.first(where: { $0.0 == "status" })?.1 { return s }; return "?" }()
        let parts = counts.map { "\($0.1) \($0.0)" }.joined(separator: ", ")
        return "\(clock(monotonicWallClock())) \(w): \(status), \(total) task\(total == 1 ? "" : "s")" + (parts.isEmpty ? "" : " (\(parts))")
    }

    // MARK: the terminal view

    private func paint(_ s: String, _ code: String) -> String { color ? "\u{1B}[\(code)m" + s + "\u{1B}[0m" : s }

    private static let stateColor = ["succeeded": "32", "failed": "31", "running": "34", "skipped": "90", "cancelled": "33"]

    private func frame(now: Double) throws -> [String] {
        var lines: [String] = []
        let title = paint("qw status", "1") + "  " + store.path + "  " + clock(now)
        lines.append(title + "   (Ctrl-C stops)")
        let gate = try store.gateView()
        func field(_ k: String) -> JSONValue? { gate.first { $0.0 == k }?.1 }
        func number(_ v: JSONValue?) -> Double? {
            switch v { case .number(let d)?: d; case .int(let i)?: Double(i); default: nil }
        }
        let running: Int = { if case .int(let r)? = field("running") { return r }; return 0 }()
        let words = gateWords(closedUntil: number(field("closed_until")), probing: { if case .bool(true)? = field("probing") { return true }; return false }(),
                              rate: number(field("rate")), window: number(field("window")), now: now)
        let queue = try store.suggestions(states: ["pending", "running"]).count
        let cost = try store.costTotals()
        let spent = number(cost["total_usd"]) ?? 0
        lines.append("agents \(running) running, gate \(words); suggestions queued \(queue); spent $" + money(spent))
        lines.append("")
        var workflows = try store.workflowViews()
        if let name {
            workflows = workflows.filter { $0.name == name }
            if workflows.isEmpty { lines.append("no workflow named '\(name)' yet") }
        } else if workflows.isEmpty {
            lines.append("no workflows in \(store.path) yet")
        }
        let width = terminalSize().cols
        let height = terminalSize().rows
        let barWidth = max(10, min(30, width - 70))
        for w in workflows {
            func f(_ k: String) -> JSONValue? { w.fields.first { $0.0 == k }?.1 }
            let status: String = { if case .string(let s)? = f("status") { return s }; return "?" }()
            let counts = try store.taskCounts(of: w.name)
            let total = counts.reduce(0) { $0 + $1.1 }
            let done = counts.filter { $0.0 == "succeeded" || $0.0 == "failed" || $0.0 == "skipped" }.reduce(0) { $0 + $1.1 }
            let started = number(f("started_at")), finished = number(f("finished_at"))
            let elapsed = started.map { (status == "running" ? now : (finished ?? now)) - $0 }
            let pct = total > 0 ? done * 100 / total : 0
            var line = paint(pad(w.name, 20), "1") + " " + paint(pad(status, 10), Self.stateColor[status] ?? "0") + " "
            line += bar(counts, total: total, width: barWidth) + " " + pad("\(pct)%", 4) + " "
            line += counts.map { paint("\($0.1) \($0.0)", Self.stateColor[$0.0] ?? "0") }.joined(separator: " ")
            line += "  " + (elapsed.map(seconds) ?? "-") + "  $" + money(number(f("cost_usd")) ?? 0)
            lines.append(line)
            let runningTasks = try store.tasks(of: w.name, inState: "running", limit: name == nil ? 5 : max(5, height - 12))
            for t in runningTasks {
                lines.append("  " + paint(unicode ? "▶" : ">", "34") + " " + pad(t.id, 40) + " " + (t.startedAt.map { seconds(now - $0) } ?? ""))
            }
            if name != nil {
                let failed = try store.tasks(of: w.name, inState: "failed", limit: 5)
                if !failed.isEmpty { lines.append("  failed:") }
                for t in failed { lines.append("  " + paint(unicode ? "✗" : "x", "31") + " " + pad(t.id, 40) + " " + (t.error ?? "")) }
            }
        }
        let agents = try store.liveAgents()
        if !agents.isEmpty {
            lines.append("")
            lines.append("agents now:")
            for a in agents.prefix(10) {
                func s(_ k: String) -> String { if case .string(let v)? = a[k] { return v }; return "-" }
                lines.append("  " + pad(s("agent"), 24) + " " + pad(s("workflow") + "/" + s("task"), 40) + " " + (number(a["started_at"]).map { seconds(now - $0) } ?? ""))
            }
        }
        return Array(lines.prefix(max(3, height - 1))).map { clip($0, width) }
    }

    private func money(_ v: Double) -> String {
        if v > 0 && v < 0.01 { return "<0.01" }
        let cents = Int((v * 100).rounded())
        return "\(cents / 100)." + format2d(cents % 100)
    }

    private func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? String(s.prefix(n)) : s + String(repeating: " ", count: n - s.count)
    }

    /// A bar of `width` cells, split by state (succeeded, failed, skipped, running), the rest
    /// still to run.
    private func bar(_ counts: [(String, Int)], total: Int, width: Int) -> String {
        guard total > 0 else { return "[" + String(repeating: " ", count: width) + "]" }
        var out = "[", used = 0
        for state in ["succeeded", "failed", "skipped", "running"] {
            let n = counts.first { $0.0 == state }?.1 ?? 0
            let cells = min(width - used, Int((Double(n) / Double(total) * Double(width)).rounded()))
            guard cells > 0 else { continue }
            let glyph = unicode ? (state == "running" ? "▒" : "█") : (state == "running" ? ">" : state == "failed" ? "x" : "#")
            out += paint(String(repeating: glyph, count: cells), Self.stateColor[state] ?? "0")
            used += cells
        }
        out += String(repeating: unicode ? "░" : ".", count: width - used)
        return out + "]"
    }

    /// Cuts a line to `width` columns, not counting colour codes.
    private func clip(_ line: String, _ width: Int) -> String {
        var out = "", visible = 0, inEscape = false
        for ch in line {
            if inEscape { out.append(ch); if ch == "m" { inEscape = false }; continue }
            if ch == "\u{1B}" { inEscape = true; out.append(ch); continue }
            if visible >= width { continue }
            out.append(ch)
            visible += 1
        }
        return out + (color ? "\u{1B}[0m" : "")
    }

    private func terminalSize() -> (rows: Int, cols: Int) {
        var ws = winsize()
        if ioctl(1, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col > 0 { return (Int(ws.ws_row), Int(ws.ws_col)) }
        return (40, 120)
    }

    /// Draws a frame over the last: home, each line cleared to its end, the rest cleared.
    private func draw(_ lines: [String]) {
        writeAll(1, "\u{1B}[H" + lines.map { $0 + "\u{1B}[K" }.joined(separator: "\n") + "\u{1B}[J")
    }
}
