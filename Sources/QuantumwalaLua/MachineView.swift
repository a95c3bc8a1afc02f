public import LuaHost
import Glibc
import QuantumwalaCore

/// What `qw resources` shows: `qw.resources()` with the work every running qw process
/// publishes (running and queued counts, each command's resident memory) and, with
/// `gate`, the agent gate (asking for it drops holders that are gone: a write).
public func machineView(_ runtime: Runtime, gate withGate: Bool = true) throws -> LuaValue {
    var r = try runtime.lua.run("return qw.resources()").first ?? .nil
    // the shared agent gate, whether or not this process has run agents (a store that
    // does not exist yet is not made for it: no agent has run here)
    let hasStore = withGate && access(runtime.statePath, F_OK) == 0
    let gate = try runtime.lua.run(hasStore ? """
        local g = qw.agent.gate()
        g.max_agents = qw.agent.limits.max_agents or 3
        return g
        """ : "return { running = 0, probing = false, max_agents = qw.agent.limits.max_agents or 3 }").first ?? .nil
    let processes = WorkBoard().map { $0.entries() } ?? []
    let work = processes.map(withResidentMemory)
    var running = 0, queued = 0
    for p in work {
        running += luaItems(p["running"]).count + Int(luaNumber(p["running_more"]) ?? 0)
        queued += luaItems(p["queued"]).count + Int(luaNumber(p["queued_more"]) ?? 0) + Int(luaNumber(p["leases_waiting"]) ?? 0)
    }
    if case .table(var t) = r {
        t["running"] = .integer(Int64(running))
        t["queued"] = .integer(Int64(queued))
        t["processes"] = .array(work)
        t["agents"] = gate
        r = .table(t)
    }
    return r
}

/// A Lua number (integer or float) as a Double; nil for anything else.
public func luaNumber(_ v: LuaValue?) -> Double? {
    switch v {
    case .integer(let i)?: Double(i)
    case .number(let d)?: d
    default: nil
    }
}

/// The elements of an array table, in order.
public func luaItems(_ v: LuaValue?) -> [LuaValue] {
    guard case .table(let t)? = v else { return [] }
    return (0..<t.count).compactMap { t[.integer(Int64($0 + 1))] }
}

/// A published entry with the resident memory of each running command's process group.
private func withResidentMemory(_ entry: LuaValue) -> LuaValue {
    guard case .table(var t) = entry else { return entry }
    let running = luaItems(entry["running"])
    let groups = Set(running.compactMap { luaNumber($0["pid"]).map { Int32($0) } })
    let rss = processGroupRSS(groups)
    t["running"] = .array(running.map { c in
        guard case .table(var ct) = c, let pid = luaNumber(c["pid"]).map({ Int32($0) }), let bytes = rss[pid] else { return c }
        ct["rss"] = .integer(Int64(bytes))
        return .table(ct)
    })
    return .table(t)
}
