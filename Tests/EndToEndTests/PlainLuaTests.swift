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
        ("runtime error", "local function f() error('boom') end\nf()"),
    ]

    @Test(arguments: scripts.map(\.0))
    func sameAsStockLua(name: String) throws {
        let code = try #require(Self.scripts.first { $0.0 == name }?.1)
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/plain.lua", code + "\n")
        let stock = run(["lua5.4", "plain.lua", "a1", "a2"], cwd: dir)
        let ours = qw(["run", "plain.lua", "a1", "a2"], cwd: dir)
        #expect(ours.code == stock.code)
        #expect(ours.stdout == stock.stdout)
        if stock.code != 0 && !stock.stderr.isEmpty {
            // the first line names the same place: "lua5.4: plain.lua:1: boom" / "qw: plain.lua:1: boom"
            let message = { (s: String) in s.split(separator: "\n").first.map { $0.drop(while: { $0 != ":" }) } ?? "" }
            #expect(message(ours.stderr) == message(stock.stderr))
        }
    }

    private func run(_ argv: [String], cwd: String) -> Outcome {
        var spec = CommandSpec(argv: argv)
        spec.cwd = cwd
        let reactor = Reactor()
        var result: ProcessResult?
        ChildProcess.start(spec, reactor: reactor) { result = $0 }
        while result == nil { reactor.runOnce() }
        return Outcome(code: result!.code, stdout: String(decoding: result!.stdout, as: UTF8.self),
                       stderr: String(decoding: result!.stderr, as: UTF8.self))
    }
}
