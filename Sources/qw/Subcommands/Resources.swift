import ArgumentParser
import Glibc
import LuaHost
import QuantumwalaCore
import QuantumwalaLua

/// `qw resources`: limits, capacity and live readings as admission sees them, and the work of
/// every `qw` process running on the machine (from the work board, see ``WorkBoard``).
struct Resources: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show resource limits, the machine's capacity, its live load, and what every running qw process runs and queues.",
        discussion: """
            Limits come from the defaults, .qw/policy.lua (or --policy) and --max-concurrent. \
            Running qw processes publish their work in QW_RUNTIME_DIR (else $XDG_RUNTIME_DIR/qw, \
            else /tmp/qw-UID).
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        // CPU busy is a rate: sample it over a short window first
        try runtime.lua.run("qw.resources(); qw.sleep(0.2)")
        let r = try machineView(runtime)
        let gate = r["agents"] ?? .nil
        let work = items(r["processes"])
        if json {
            writeAll(1, String(decoding: (try? JSON.encode(r, pretty: true)) ?? Array("{}".utf8), as: UTF8.self) + "\n")
            return
        }
        let limits = r["limits"]
        var rows: [(String, String)] = []
        rows.append(("cores", num(r["cores"]).map(formatAmount) ?? "?"))
        rows.append(("memory", num(r["memory_total"]).map { formatBytes(Int($0)) } ?? "?"))
        rows.append(("max_concurrent", num(limits?["max_concurrent"]).map(formatAmount) ?? "?"))
        rows.append(("cpu_percent", num(limits?["cpu_percent"]).map { formatAmount($0) + " %" } ?? "?"))
        rows.append(("memory_percent", num(limits?["memory_percent"]).map { formatAmount($0) + " %" } ?? "?"))
        rows.append(("memory_margin", num(limits?["memory_margin"]).map { formatAmount($0 * 100) + " %" } ?? "?"))
        rows.append(("cpu busy now", num(r["cpu_percent"]).map { formatAmount($0.rounded()) + " %" } ?? "(sampling)"))
        rows.append(("memory used now", num(r["memory_percent"]).map { formatAmount(($0 * 10).rounded() / 10) + " %" } ?? "?"))
        rows.append(("memory available", num(r["memory_available"]).map { formatBytes(Int($0)) } ?? "?"))
        rows.append(("agents running", "\(Int(num(gate["running"]) ?? 0)) of max_agents \(Int(num(gate["max_agents"]) ?? 3))"))
        rows.append(("agent gate", gateState(gate, now: monotonicWallClock())))
        rows.append(("qw processes", "\(work.count)"))
        rows.append(("running", "\(Int(num(r["running"]) ?? 0))"))
        rows.append(("queued", "\(Int(num(r["queued"]) ?? 0))"))
        var out = table(rows.map { [$0.0, $0.1] }, header: nil)
        let now = wallSeconds()
        for p in work {
            let pid = num(p["pid"]).map { String(Int($0)) } ?? "?"
            out += "\nqw \(pid): \(p["command"]?.stringValue ?? "qw")  (in \(p["cwd"]?.stringValue ?? "?"))\n"
            out += "  slots \(Int(num(p["slots_used"]) ?? 0))/\(Int(num(p["slots_total"]) ?? 0)), cpu granted "
                + formatAmount(num(p["cpu_granted"]) ?? 0) + ", memory granted " + formatBytes(Int(num(p["memory_granted"]) ?? 0)) + "\n"
            var lines: [[String]] = []
            for c in items(p["running"]) {
                lines.append(["running", num(c["pid"]).map { String(Int($0)) } ?? "",
                              seconds(now - (num(c["started"]) ?? now)), request(c), num(c["rss"]).map { formatBytes(Int($0)) } ?? "",
                              c["name"]?.stringValue ?? ""])
            }
            for c in items(p["queued"]) {
                lines.append(["queued", "", seconds(now - (num(c["since"]) ?? now)), request(c), "", c["name"]?.stringValue ?? ""])
            }
            for (key, state) in [("running_more", "running"), ("queued_more", "queued")] {
                let more = Int(num(p[key]) ?? 0)
                if more > 0 { lines.append([state, "", "", "", "", "and \(more) more"]) }
            }
            let waiting = Int(num(p["leases_waiting"]) ?? 0)
            if waiting > 0 { lines.append(["queued", "", "", "", "", "\(waiting) qw.acquire request\(waiting == 1 ? "" : "s")"]) }
            if !lines.isEmpty {
                out += table(lines, header: ["STATE", "PID", "FOR", "REQUEST", "RSS", "NAME"]).split(separator: "\n", omittingEmptySubsequences: false)
                    .map { $0.isEmpty ? "" : "  " + $0 }.joined(separator: "\n")
            }
        }
        writeAll(1, out)
    }
}

private func num(_ v: LuaValue?) -> Double? { luaNumber(v) }
private func items(_ v: LuaValue?) -> [LuaValue] { luaItems(v) }

/// The gate in words: open, or closed and when it reopens; paced after a rate limit.
private func gateState(_ g: LuaValue, now: Double) -> String {
    gateWords(closedUntil: num(g["closed_until"]), probing: g["probing"] == .boolean(true), rate: num(g["rate"]),
              window: num(g["window"]), now: now)
}

/// The gate in words (for `qw resources` and `qw status --watch`).
func gateWords(closedUntil: Double?, probing: Bool, rate: Double?, window: Double?, now: Double) -> String {
    var parts: [String] = []
    if let until = closedUntil, until > now {
        parts.append("closed by a rate limit, reopens in " + seconds(until - now) + (probing ? " for one run at a time" : ""))
    } else if probing {
        parts.append("open for one run at a time (after a rate limit)")
    } else {
        parts.append("open")
    }
    if let rate { parts.append("paced at " + formatAmount((rate * 100).rounded() / 100) + " starts/s") }
    if let w = window { parts.append("window " + formatAmount((w * 10).rounded() / 10) + " at once") }
    return parts.joined(separator: ", ")
}

private func request(_ c: LuaValue) -> String {
    var parts: [String] = []
    if let s = num(c["slots"]), s != 1 { parts.append("\(Int(s)) slots") }
    if let cpu = num(c["cpu"]), cpu > 0 { parts.append("cpu " + formatAmount(cpu)) }
    if let m = num(c["memory"]), m > 0 { parts.append(formatBytes(Int(m))) }
    return parts.isEmpty ? "-" : parts.joined(separator: ", ")
}

/// A duration in short words: 4.2s, 3m5s, 2h10m.
func seconds(_ s: Double) -> String {
    let s = max(0, s)
    if s < 60 { return formatAmount((s * 10).rounded() / 10) + "s" }
    if s < 3600 { return "\(Int(s) / 60)m\(Int(s) % 60)s" }
    return "\(Int(s) / 3600)h\(Int(s) % 3600 / 60)m"
}

/// Rows in aligned columns (two spaces apart), each line ending in a newline.
private func table(_ rows: [[String]], header: [String]?) -> String {
    let all = (header.map { [$0] } ?? []) + rows
    var widths: [Int] = []
    for r in all {
        for (i, cell) in r.enumerated() {
            if i >= widths.count { widths.append(0) }
            widths[i] = max(widths[i], cell.count)
        }
    }
    return all.map { r in
        r.enumerated().map { i, cell in i == r.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count + 2) }
            .joined()
    }.joined(separator: "\n") + "\n"
}
