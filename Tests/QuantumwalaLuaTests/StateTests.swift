import Glibc
import LuaHost
@testable import QuantumwalaLua
import QuantumwalaCore
import Testing

/// qw.state against a real SQLite store in a temporary folder.
@Suite(.serialized)
struct StateTests {
    func run(_ code: String, store: String) throws -> (RunOutcome, LuaValue) {
        var opts = RuntimeOptions()
        opts.statePath = store
        return try runScript(code, options: opts)
    }

    @Test func valuesRoundTrip() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try run("""
            local v = { name = "x\\0y", n = 3, f = 2.5, whole = 2.0, yes = true, list = { 1, "two", { 3 } }, nested = { a = { b = {} } } }
            qw.state.set("deploy.config", v)
            local back = qw.state.get("deploy.config")
            result = { same = qw.json.encode(back) == qw.json.encode(v), name = back.name, whole = math.type(back.whole),
                       n = math.type(back.n), missing = qw.state.get("nope") == nil }
            """, store: dir + "/s.db")
        #expect(o.error == nil)
        #expect(r["same"] == true)
        #expect(r["name"] == .string(Array("x\0y".utf8)))
        #expect(r["whole"] == "float")
        #expect(r["n"] == "integer")
        #expect(r["missing"] == true)
    }

    @Test func keysDeleteAndUpdate() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try run("""
            for _, k in ipairs({ "b.2", "a.1", "b.1", "c" }) do qw.state.set(k, k) end
            qw.state.delete("c")
            qw.state.set("a.1", nil)
            local n = qw.state.update("count", function(v) return (v or 0) + 5 end)
            qw.state.update("count", function(v) return v * 2 end)
            result = { b = table.concat(qw.state.keys("b."), ","), all = table.concat(qw.state.keys(), ","),
                       n = n, count = qw.state.get("count") }
            """, store: dir + "/s.db")
        #expect(o.error == nil)
        #expect(r["b"] == "b.1,b.2")
        #expect(r["all"] == "b.1,b.2,count")
        #expect(r["n"] == 5)
        #expect(r["count"] == 10)
    }

    @Test func aTransactionThatRaisesLeavesNothing() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        let (o, r) = try run("""
            qw.state.set("kept", 1)
            local ok, e = pcall(qw.state.transaction, function(tx)
              tx.set("a", 1); tx.set("b", 2); tx.delete("kept"); error("changed my mind")
            end)
            local sum = qw.state.transaction(function(tx) tx.set("c", 3); tx.update("kept", function(v) return v + 1 end); return tx.get("c") + tx.get("kept") end)
            result = { ok = ok, e = e, a = qw.state.get("a"), b = qw.state.get("b"), kept = qw.state.get("kept"), sum = sum }
            """, store: dir + "/s.db")
        #expect(o.error == nil)
        #expect(r["ok"] == false)
        #expect(r["e"]?.stringValue?.hasSuffix("changed my mind") == true)
        #expect(r["a"] == nil && r["b"] == nil)
        #expect(r["kept"] == 2)
        #expect(r["sum"] == 5)
    }

    @Test func badValuesAndKeysAreClearErrors() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        try expectFailures([
            ("qw.state.set('job', { run = print })", "test.lua:1: qw.state: cannot store 'job': job.run is a function"),
            ("qw.state.set('', 1)", "test.lua:1: qw.state.set: the key must be a non-empty string (got an empty string)"),
            ("qw.state.get(42)", "test.lua:1: qw.state.get: the key must be a non-empty string (got number)"),
            ("qw.state.update('k', 5)", "test.lua:1: qw.state.update: the second argument must be a function (got number)"),
            ("local t = {}; t.t = t; qw.state.set('loop', t)", "test.lua:1: qw.state: cannot store 'loop': loop.t contains itself"),
        ], options: storeOptions(dir))
        let (o, r) = try run("result = qw.state.keys()", store: dir + "/s.db")
        #expect(o.error == nil)
        #expect(r == .table([:]), "nothing was written by the failed calls")
    }

    @Test func aStoreThatCannotBeOpenedIsAClearError() throws {
        let (o, _) = try run("qw.state.get('x')", store: "/proc/no/such/place/s.db")
        #expect(o.error?.message.contains("cannot open the state store /proc/no/such/place/s.db") == true)
    }
}
