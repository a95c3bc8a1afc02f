import ArgumentParser
import LuaHost
import QuantumwalaCore
import QuantumwalaLua

/// `qw resources`: limits, capacity and live readings as admission sees them.
struct Resources: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show resource limits, the machine's capacity and its live load.",
        discussion: "Limits come from the defaults, .qw/policy.lua (or --policy) and --max-concurrent."
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        // CPU busy is a rate: sample it over a short window first
        try runtime.lua.run("qw.resources(); qw.sleep(0.2)")
        if json {
            let out = try runtime.lua.run("return qw.json.encode(qw.resources(), { pretty = true })")
            writeAll(1, (out.first?.stringValue ?? "{}") + "\n")
            return
        }
        let r = try runtime.lua.run("return qw.resources()").first ?? .nil
        func num(_ v: LuaValue?) -> Double? {
            switch v {
            case .integer(let i): Double(i)
            case .number(let d): d
            default: nil
            }
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
        rows.append(("running", num(r["running"]).map(formatAmount) ?? "0"))
        rows.append(("queued", num(r["queued"]).map(formatAmount) ?? "0"))
        let width = rows.map(\.0.count).max() ?? 0
        for (k, v) in rows {
            writeAll(1, k + String(repeating: " ", count: width - k.count + 2) + v + "\n")
        }
    }
}
