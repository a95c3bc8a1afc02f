import ArgumentParser
import Glibc
import LuaHost
import QuantumwalaCore
import QuantumwalaLua

/// `qw cost [--by KEY] [--since T] [--json]`: the ledger of agent runs, from the store.
struct Cost: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What agent runs have cost, from the ledger in the store.",
        discussion: "A resumed session's cost is counted once: each run is recorded with its own spend."
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "Group by agent, model, workflow, task or day.")
    var by = "agent"

    @Option(help: "Only runs that finished since: a date (2026-12-01) or an age (30m, 24h, 7d).")
    var since: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    mutating func run() throws {
        let store = try openStore(global)
        var from: Double?
        if let since {
            guard let t = parseSince(since) else {
                throw ValidationError("--since: '\(since)' is neither a date (YYYY-MM-DD) nor an age (30m, 24h, 7d)")
            }
            from = t
        }
        let rows: [StateStore.CostRow]
        do {
            rows = try store.costReport(by: by, since: from)
        } catch {
            writeAll(2, "qw: \(error.message)\n")
            throw ExitCode(1)
        }
        if json {
            let list: [LuaValue] = rows.map { r in
                .table([.string(by): .string(r.key), "runs": .integer(Int64(r.runs)), "failed": .integer(Int64(r.failed)),
                        "cost_usd": .number(r.costUSD), "input_tokens": .integer(Int64(r.inputTokens)),
                        "output_tokens": .integer(Int64(r.outputTokens)), "cache_read_tokens": .integer(Int64(r.cacheReadTokens)),
                        "cache_creation_tokens": .integer(Int64(r.cacheCreationTokens)), "duration": .number(r.duration)])
            }
            writeAll(1, String(decoding: try JSON.encode(.array(list), pretty: true), as: UTF8.self) + "\n")
            return
        }
        if rows.isEmpty {
            writeAll(1, "no agent runs in \(store.path)\(since.map { " since \($0)" } ?? "")\n")
            return
        }
        func money(_ v: Double) -> String {
            let cents = (v * 10000).rounded() / 10000
            return "$" + String(cents)
        }
        var table = rows.map { r in
            [r.key, String(r.runs), String(r.failed), money(r.costUSD), String(r.inputTokens), String(r.outputTokens),
             String(r.cacheReadTokens), String(r.cacheCreationTokens)]
        }
        let total = rows.reduce(0.0) { $0 + $1.costUSD }
        table.append(["total", String(rows.reduce(0) { $0 + $1.runs }), String(rows.reduce(0) { $0 + $1.failed }), money(total),
                      String(rows.reduce(0) { $0 + $1.inputTokens }), String(rows.reduce(0) { $0 + $1.outputTokens }),
                      String(rows.reduce(0) { $0 + $1.cacheReadTokens }), String(rows.reduce(0) { $0 + $1.cacheCreationTokens })])
        printTable([by, "runs", "failed", "cost", "input", "output", "cache read", "cache write"], table)
    }
}

/// A date (YYYY-MM-DD, UTC midnight) or an age before now (30m, 24h, 7d) as seconds since the epoch.
func parseSince(_ text: String) -> Double? {
    let now = monotonicWallClock()
    if let unit = text.last, let n = Double(text.dropLast()), n >= 0 {
        switch unit {
        case "s": return now - n
        case "m": return now - n * 60
        case "h": return now - n * 3600
        case "d": return now - n * 86400
        default: break
        }
    }
    let parts = text.split(separator: "-").compactMap { Int($0) }
    guard parts.count == 3 else { return nil }
    var t = tm()
    t.tm_year = Int32(parts[0] - 1900)
    t.tm_mon = Int32(parts[1] - 1)
    t.tm_mday = Int32(parts[2])
    let secs = timegm(&t)
    return secs < 0 ? nil : Double(secs)
}
