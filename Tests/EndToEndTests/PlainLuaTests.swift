import Glibc
import QuantumwalaCore
import Testing

/// `qw run` runs a plain Lua script as the stock `lua5.4` interpreter does: same output,
/// same exit status (scripts/test installs lua5.4).
@Suite struct PlainLuaTests {
    static let scripts: [(String, String)] = [
        ("strings", """
            print(("%5.2f|%-4s|%q"):format(3.14159, "ab", "a\\nb"), ("hello"):upper(), #"\\0x\\0")
            for w in ("one two  three"):gmatch("%a+") do io.write(w, ";") end print()
            print(string.pack("<i4", 258):byte(1, -1))
            """),
        ("coroutines", """
            local gen = coroutine.wrap(function(a) for i = a, a + 2 do coroutine.yield(i) end return "done" end)
            print(gen(5), gen(), gen(), gen())
            local co = coroutine.create(function() error("inside") end)
            print(coroutine.resume(co))
            print(coroutine.status(co), coroutine.isyieldable(), select(2, coroutine.running()))
            local okw, ew = pcall(coroutine.wrap(function() error({ code = 7 }) end)); print(okw, ew.code)
            """),
        ("errors", """
            print(pcall(error, "plain", 0))
            print(select(2, pcall(function() local t = nil; return t.x end)))
            print(select(2, xpcall(function() error("deep") end, function(m) return "handled: " .. m end)))
            local ok, e = pcall(error, setmetatable({}, { __tostring = function() return "custom" end }))
            print(ok, tostring(e))
            """),
        ("tables and math", """
            local t = {}
            for i = 1, 10 do t[i] = (i * 7) % 11 end
            table.sort(t, function(a, b) return a > b end)
            print(table.concat(t, ","), math.maxinteger, 7 // 2, 7 / 2, 2^10, math.type(1), math.type(1.0))
            print(#arg, arg[0] ~= nil, select("#", ...))
            """),
        ("exit status", "io.write('before exit\\n') os.exit(5)"),
        ("to-be-closed variables on an error", """
            local function guard(name) return setmetatable({}, { __close = function(_, e) print("closed", name, e ~= nil) end }) end
            local function inner() local g <close> = guard("inner") error("boom") end
            print(pcall(inner))
            local top <close> = guard("top")
            error("at the top")
            """),
        ("coroutines with host waits", #"""
            -- a primitive that waits under qw (and is a no-op under lua5.4): host yields must be invisible
            local wait = rawget(_G, "qw") and function(...) qw.sleep(0) return ... end or function(...) return ... end
            local function show(...) local t = table.pack(...) for i = 1, t.n do t[i] = tostring(t[i]) end print(t.n, table.concat(t, " ")) end
            -- values through resume / yield with trailing nils
            local co = coroutine.create(function(...)
              show(...)
              show(coroutine.yield(wait(nil, nil)))
              show(coroutine.yield())
              wait()
              return nil, 1, nil
            end)
            show(coroutine.resume(co, nil, nil))
            show(coroutine.resume(co, 1, nil, nil))
            show(coroutine.resume(co))
            show(coroutine.resume(co))
            -- wrap
            local g = coroutine.wrap(function(a) wait() local b = coroutine.yield(a, nil) wait() return b, nil, nil end)
            show(g(nil)); show(g(nil))
            show(pcall(g))
            -- yield across pcall inside a user coroutine
            local p = coroutine.wrap(function()
              local okp, ep = pcall(function() wait() local v = coroutine.yield("in pcall", nil) wait() error({ v = v }) end)
              print(okp, ep.v)
              return "after"
            end)
            show(p()); show(p(42))
            -- yield from __close
            local c = coroutine.wrap(function()
              do local x <close> = setmetatable({}, { __close = function(_, e) wait() coroutine.yield("closing", e) end }) wait() end
              return "closed"
            end)
            show(c()); show(c())
            local c2 = coroutine.wrap(function() local x <close> = setmetatable({}, { __close = coroutine.yield }) end)
            local t = table.pack(c2()); print(t.n, rawequal(t[2], nil))
            -- errors: tables, nil, positions, dead coroutines
            show(pcall(coroutine.wrap(function() wait() error(nil) end)))
            show(pcall(coroutine.wrap(function() wait() error("pos") end)))
            show(pcall(coroutine.wrap(function() wait() error("nopos", 0) end)))
            local e = select(2, pcall(coroutine.wrap(function() wait() error({ code = 3 }) end))); print(e.code)
            local d = coroutine.wrap(function() return 1 end); d()
            show(pcall(d))
            local r; r = coroutine.wrap(function() return r() end)
            local r2; r2 = coroutine.wrap(function() local v = r2() return v end)
            show(pcall(r2))
            show(pcall(r))
            -- close
            local k = coroutine.create(function() local x <close> = setmetatable({}, { __close = function() print("closed k") end }) wait() coroutine.yield(1) end)
            show(coroutine.resume(k)); show(coroutine.close(k)); print(coroutine.status(k))
            local k2 = coroutine.create(function() local x <close> = setmetatable({}, { __close = function() error("in close", 0) end }) coroutine.yield() end)
            coroutine.resume(k2); show(coroutine.close(k2))
            show(pcall(coroutine.close, coroutine.running()))
            -- running / isyieldable / status in the main chunk and in coroutines
            local main, ismain = coroutine.running()
            print(type(main), ismain, coroutine.isyieldable(), coroutine.status(main), coroutine.isyieldable(main))
            coroutine.wrap(function() local me, m = coroutine.running() wait() print(type(me), m, coroutine.isyieldable(), coroutine.status(me), coroutine.status(main), coroutine.isyieldable(main)) end)()
            show(pcall(coroutine.resume, main))
            show(coroutine.resume(main))
            show(pcall(coroutine.yield, 1))
            show(select('#', pcall(coroutine.isyieldable, 1)))
            -- yield where lua cannot yield, inside a coroutine
            local s = coroutine.wrap(function() table.sort({3, 2, 1}, function(a, b) wait() return a < b end) return "sorted" end)
            show(s())
            local y = coroutine.wrap(function() table.sort({3, 2, 1}, function(a, b) coroutine.yield() return a < b end) end)
            show(pcall(y))
            -- nested coroutines
            local outer = coroutine.wrap(function()
              local inner = coroutine.wrap(function() wait() coroutine.yield("inner", nil) wait() return "inner done" end)
              show(inner()); wait(); coroutine.yield("outer"); show(inner())
              return nil
            end)
            show(outer()); show(outer())
            """#),
        ("trailing nils and wrap errors", #"""
            print(pcall(coroutine.yield))
            print(pcall(load("coroutine.yield()")))
            print(coroutine.isyieldable(), select(2, coroutine.running()))
            local co = coroutine.wrap(function()
              local x <close> = setmetatable({}, { __close = coroutine.yield })
            end)
            print(table.pack(co()).n)
            local co2 = coroutine.wrap(function(...) print(select('#', ...)); local a, b, c = coroutine.yield(1, nil, nil); print(a, b, c, select('#', coroutine.yield())); return nil, nil end)
            print(select('#', co2(nil, nil)))
            print(select('#', co2(1, nil)))
            print(select('#', co2(nil)))
            local co3 = coroutine.create(function() local ok, e = pcall(function() coroutine.yield(5, nil) error("x") end) ; return ok, e, nil end)
            print(select('#', coroutine.resume(co3)))
            print(select('#', coroutine.resume(co3)))
            local co4 = coroutine.create(function() coroutine.yield() end)
            coroutine.resume(co4)
            print(coroutine.close(co4), coroutine.status(co4))
            local co5 = coroutine.create(function() error(nil) end)
            print(select('#', coroutine.resume(co5)), coroutine.resume(co5))
            local co6 = coroutine.wrap(function() local x <close> = setmetatable({}, {__close=function(o, e) coroutine.yield("closing", e) end}); error("boom", 0) end)
            print(pcall(co6))
            print(pcall(co6))
            """#),
        ("yield from the main chunk", #"""
            -- the main chunk is the main thread: yielding from it is an error pcall catches
            print(pcall(coroutine.yield))
            print(pcall(coroutine.yield, 1, nil))
            print(pcall(load("coroutine.yield()")))
            print(coroutine.isyieldable(), select(2, coroutine.running()), coroutine.status(coroutine.running()))
            print(pcall(coroutine.close, coroutine.running()))
            print(select("#", coroutine.resume(coroutine.running())))
            coroutine.yield("uncaught")
            print("never")
            """#),
        ("runtime error", "local function f() error('boom') end\nf()"),
    ]

    /// A script that requires a C module (a shared library built against Lua's headers,
    /// not linked to Lua) loads it, as under lua5.4: qw exports Lua's API to it.
    @Test func cModulesLoadAsUnderStockLua() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/greet.c", """
            #include <lua5.4/lua.h>
            #include <lua5.4/lauxlib.h>
            static int hi(lua_State *L) { lua_pushstring(L, luaL_checkstring(L, 1)); lua_pushliteral(L, "!"); lua_concat(L, 2); return 1; }
            int luaopen_greet(lua_State *L) { lua_newtable(L); lua_pushcfunction(L, hi); lua_setfield(L, -2, "hi"); return 1; }
            """)
        let cc = runProgram(["cc", "-shared", "-fPIC", "-o", dir + "/greet.so", dir + "/greet.c"])
        try #require(cc.code == 0, "\(cc.stderr)")
        writeFile(dir + "/mod.lua", "package.cpath = './?.so;' .. package.cpath\nprint(require('greet').hi('hey'))\n")
        let stock = runProgram(["lua5.4", "mod.lua"], cwd: dir)
        let ours = qw(["run", "mod.lua"], cwd: dir)
        #expect(stock.stdout == "hey!\n")
        #expect(ours.code == 0, "\(ours.stderr)")
        #expect(ours.stdout == stock.stdout)
    }

    @Test(arguments: scripts.map(\.0))
    func sameAsStockLua(name: String) throws {
        let code = try #require(Self.scripts.first { $0.0 == name }?.1)
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/plain.lua", code + "\n")
        let stock = runProgram(["lua5.4", "plain.lua", "a1", "a2"], cwd: dir)
        let ours = qw(["run", "plain.lua", "a1", "a2"], cwd: dir)
        #expect(ours.code == stock.code)
        #expect(ours.stdout == stock.stdout)
        if stock.code != 0 && !stock.stderr.isEmpty {
            // the first line names the same place: "lua5.4: plain.lua:1: boom" / "qw: plain.lua:1: boom"
            let message = { (s: String) in s.split(separator: "\n").first.map { $0.drop(while: { $0 != ":" }) } ?? "" }
            #expect(message(ours.stderr) == message(stock.stderr))
        }
    }
}
