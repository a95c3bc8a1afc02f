import CLua
import Glibc
import Testing

@testable import LuaHost

/// The LuaError `body` throws (recording an issue when it throws something else or nothing).
private func luaError(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> LuaError? {
    do {
        try body()
        Issue.record("no error thrown", sourceLocation: sourceLocation)
    } catch let e as LuaError {
        return e
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// A file with `content` in a fresh temporary directory; returns its path.
private func tempFile(_ name: String, _ content: String) throws -> String {
    var template = Array("/tmp/qw-lua-tests-XXXXXX".utf8CString)
    let dir = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
    let path = dir + "/" + name
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    try #require(fd >= 0)
    var bytes = Array(content.utf8)
    let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    #expect(n == bytes.count)
    bytes.removeAll()
    return path
}

private func removeTempFile(_ path: String) {
    unlink(path)
    if let slash = path.lastIndex(of: "/") { rmdir(String(path[..<slash])) }
}

@Suite struct LuaErrorTests {
    @Test func runtimeErrorNamesChunkAndLine() throws {
        let state = LuaState()
        let top = state.stack.top
        let e = try #require(luaError {
            try state.run("local x = 1\nlocal y = 2\nerror('boom')\n", name: "@path/to/x.lua")
        })
        #expect(e.kind == .runtime)
        #expect(e.message == "path/to/x.lua:3: boom")
        let tb = try #require(e.traceback)
        #expect(tb.hasPrefix("stack traceback:"))
        #expect(tb.contains("path/to/x.lua:3"))
        #expect(e.description == e.message + "\n" + tb)
        #expect(state.stack.top == top)
    }

    @Test func runtimeErrorInANestedFunctionHasEveryFrame() throws {
        let state = LuaState()
        let e = try #require(luaError {
            try state.run("""
                local function inner()
                  local t = nil
                  return t.field
                end
                local function outer() return (inner()) end
                outer()
                """, name: "@nested.lua")
        })
        #expect(e.kind == .runtime)
        #expect(e.message.hasPrefix("nested.lua:3: attempt to index"))
        let tb = try #require(e.traceback)
        #expect(tb.contains("nested.lua:3"))
        #expect(tb.contains("nested.lua:5"))
        #expect(tb.contains("nested.lua:6"))
    }

    @Test func defaultChunkName() throws {
        let state = LuaState()
        let e = try #require(luaError { try state.run("error('x')") })
        #expect(e.message == "(code):1: x")
    }

    @Test func errorObjectsThatAreNotStrings() throws {
        let state = LuaState()
        let e1 = try #require(luaError { try state.run("error({})") })
        #expect(e1.message == "(error object is a table value)")
        let e2 = try #require(luaError {
            try state.run("error(setmetatable({}, {__tostring = function() return 'custom text' end}))")
        })
        #expect(e2.message == "custom text")
        let e3 = try #require(luaError { try state.run("error(42)") })
        #expect(e3.message == "42")
        let e4 = try #require(luaError { try state.run("error('no position', 0)") })
        #expect(e4.message == "no position")
        #expect(e4.kind == .runtime)
    }

    @Test func syntaxError() throws {
        let state = LuaState()
        let top = state.stack.top
        let e = try #require(luaError { try state.run("local a = 1\nlocal x = = 2\n", name: "@bad.lua") })
        #expect(e.kind == .syntax)
        #expect(e.message.hasPrefix("bad.lua:2:"))
        #expect(e.message.contains("near '='"))
        #expect(state.stack.top == top)
        let e2 = try #require(luaError { try state.run("x = (", name: "=short") })
        #expect(e2.kind == .syntax)
        #expect(e2.message.hasPrefix("short:1:"))
    }

    @Test func loadDoesNotRun() throws {
        let state = LuaState()
        let top = state.stack.top
        try state.load(Array("ran = true return 5".utf8), name: "=chunk")
        #expect(state.stack.top == top + 1)
        #expect(state.stack.type(at: -1) == .function)
        #expect(try state.run("return ran") == [.nil])
        try state.call(nargs: 0, nresults: 1)
        #expect(state.stack.integer(at: -1) == 5)
        state.stack.pop()
        #expect(try state.run("return ran") == [true])
    }

    @Test func callPassesArgumentsAndResults() throws {
        let state = LuaState()
        try state.load(Array("local a, b = ... return a * b, a .. b".utf8), name: "=f")
        state.stack.push(6)
        state.stack.push(7)
        try state.call(nargs: 2, nresults: 2)
        #expect(try state.stack.value(at: -2) == 42)
        #expect(try state.stack.value(at: -1) == "67")
        state.stack.pop(2)
        #expect(state.stack.top == 0)
    }

    @Test func loadFileMissing() throws {
        let state = LuaState()
        let e = try #require(luaError { try state.loadFile("/nonexistent/dir/missing.lua") })
        #expect(e.kind == .file)
        #expect(e.message.contains("/nonexistent/dir/missing.lua"))
        #expect(e.message.contains("No such file"))
        let e2 = try #require(luaError { try state.loadFile("/nonexistent/dir/missing.lua", displayPath: "shown.lua") })
        #expect(e2.kind == .file)
        #expect(e2.message.contains("shown.lua"))
        #expect(state.stack.top == 0)
    }

    @Test func loadFileRunsAndNamesTheFile() throws {
        let path = try tempFile("ok.lua", "local n = ...\nreturn 'loaded', n\n")
        defer { removeTempFile(path) }
        let state = LuaState()
        try state.loadFile(path)
        state.stack.push(9)
        try state.call(nargs: 1, nresults: 2)
        #expect(state.stack.string(at: -2) == "loaded")
        #expect(state.stack.integer(at: -1) == 9)
        state.stack.pop(2)
    }

    @Test func shebangLineSkippedAndLinesStayRight() throws {
        let path = try tempFile("script.lua", "#!/usr/bin/env qw run\nlocal a = 1\n\nerror('on line four')\n")
        defer { removeTempFile(path) }
        let state = LuaState()
        try state.loadFile(path, displayPath: "script.lua")
        let e = try #require(luaError { try state.call() })
        #expect(e.kind == .runtime)
        #expect(e.message == "script.lua:4: on line four")
    }

    @Test func shebangOnlyFile() throws {
        let path = try tempFile("only.lua", "#!/usr/bin/env qw")
        defer { removeTempFile(path) }
        let state = LuaState()
        try state.loadFile(path)
        try state.call()
    }

    @Test func syntaxErrorInAFile() throws {
        let path = try tempFile("broken.lua", "#!/bin/qw\nlocal ok = 1\nif then\n")
        defer { removeTempFile(path) }
        let state = LuaState()
        let e = try #require(luaError { try state.loadFile(path, displayPath: "broken.lua") })
        #expect(e.kind == .syntax)
        #expect(e.message.hasPrefix("broken.lua:3:"))
    }

    @Test func splitTraceback() {
        let full = "x.lua:1: boom\nstack traceback:\n\t[C]: in function 'error'\n\tx.lua:1: in main chunk"
        let e = LuaState.splitTraceback(full)
        #expect(e.message == "x.lua:1: boom")
        #expect(e.traceback == "stack traceback:\n\t[C]: in function 'error'\n\tx.lua:1: in main chunk")
        #expect(e.kind == .runtime)

        let multi = LuaState.splitTraceback("line one\nline two\nstack traceback:\n\t...")
        #expect(multi.message == "line one\nline two")
        #expect(multi.traceback == "stack traceback:\n\t...")

        let none = LuaState.splitTraceback("just a message\nwith two lines")
        #expect(none.message == "just a message\nwith two lines")
        #expect(none.traceback == nil)

        // the marker must start a line
        let inline = LuaState.splitTraceback("mentions stack traceback: inline")
        #expect(inline.message == "mentions stack traceback: inline")
        #expect(inline.traceback == nil)

        let empty = LuaState.splitTraceback("")
        #expect(empty.message == "")
        #expect(empty.traceback == nil)

        // only the first traceback splits
        let twice = LuaState.splitTraceback("m\nstack traceback:\n\ta\nstack traceback:\n\tb")
        #expect(twice.message == "m")
        #expect(twice.traceback == "stack traceback:\n\ta\nstack traceback:\n\tb")

        let bare = LuaState.splitTraceback("\nstack traceback:")
        #expect(bare.message == "")
        #expect(bare.traceback == "stack traceback:")
    }
}

@Suite struct SwiftFunctionTests {
    @Test func swiftFunctionWithArgumentsAndResults() throws {
        let state = LuaState()
        var seenArgs: Int32 = -1
        state.setGlobal("add") { call in
            seenArgs = call.argCount
            let a = call.stack.integer(at: 1) ?? 0
            let b = call.stack.integer(at: 2) ?? 0
            call.stack.push(a + b)
            call.stack.push("sum")
            return .values(2)
        }
        #expect(try state.run("local s, what = add(40, 2) return s, what, math.type(s)") == [42, "sum", "integer"])
        #expect(seenArgs == 2)
        #expect(try state.run("return add()") == [0, "sum"])
        #expect(seenArgs == 0)
    }

    @Test func swiftFunctionReturningTablesAndReadingThem() throws {
        let state = LuaState()
        state.setGlobal("describe") { call in
            let v = try call.stack.value(at: 1, name: "arg")
            call.stack.push(LuaValue.table(["got": v, "n": .integer(Int64(call.argCount))]))
            return .values(1)
        }
        let r = try state.run("return describe({a = {1, 2}, b = 'x'})")
        #expect(r == [.table(["got": .table(["a": .array([1, 2]), "b": "x"]), "n": 1])])
    }

    @Test func argumentErrorStartsWithTheCallersLine() throws {
        let state = LuaState()
        state.setGlobal("check") { call in
            if call.stack.type(at: 1) != .string { throw LuaArgumentError("check: expected a string") }
            return .values(0)
        }
        let e = try #require(luaError {
            try state.run("local a = 1\ncheck('fine')\n\ncheck(5)\n", name: "@scripts/caller.lua")
        })
        #expect(e.kind == .runtime)
        #expect(e.message == "scripts/caller.lua:4: check: expected a string")

        // through pcall: the C frame of pcall is passed over, the Lua caller is named
        let r = try state.run("local ok, err = pcall(check, {})\nreturn ok, err", name: "@p.lua")
        #expect(r == [false, "p.lua:1: check: expected a string"])
    }

    @Test func argumentErrorPointsAtTheFunctionsCallerNotTheChunk() throws {
        let state = LuaState()
        state.setGlobal("fail") { _ in throw LuaArgumentError("bad") }
        let e = try #require(luaError {
            try state.run("local function helper()\n  fail()\nend\nhelper()\n", name: "@h.lua")
        })
        #expect(e.message == "h.lua:2: bad")
    }

    @Test func otherSwiftErrorsAreRaisedToo() throws {
        struct Oops: Error, CustomStringConvertible { var description: String { "oops happened" } }
        let state = LuaState()
        state.setGlobal("oops") { _ in throw Oops() }
        let e = try #require(luaError { try state.run("oops()", name: "@o.lua") })
        #expect(e.message == "o.lua:1: oops happened")
    }

    @Test func raiseAndRaiseHere() throws {
        let state = LuaState()
        state.setGlobal("raiseTable") { call in
            call.stack.push(LuaValue.table(["code": 7]))
            return .raise
        }
        state.setGlobal("raiseHere") { call in
            call.stack.push("placed")
            return .raiseHere
        }
        #expect(try state.run("local ok, e = pcall(raiseTable) return ok, e.code") == [false, 7])
        #expect(try state.run("local ok, e = pcall(raiseHere) return e", name: "@r.lua") == ["r.lua:1: placed"])
    }

    @Test func setFunctionInATable() throws {
        let state = LuaState()
        state.stack.newTable()
        state.setFunction("twice", in: -1) { call in
            call.stack.push((call.stack.integer(at: 1) ?? 0) * 2)
            return .values(1)
        }
        lua_setglobal(state.L, "lib")
        #expect(try state.run("return lib.twice(21)") == [42])
        #expect(state.stack.top == 0)
    }

    @Test func swiftFunctionCalledManyTimes() throws {
        let state = LuaState()
        var calls = 0
        state.setGlobal("tick") { _ in calls += 1; return .values(0) }
        try state.run("for i = 1, 10000 do tick() end")
        #expect(calls == 10000)
    }
}

@Suite struct LuaMemoryTests {
    @Test func memoryBombFailsAndTheStateRecovers() throws {
        let limit = 64 << 20
        let state = LuaState(memoryLimit: limit)
        #expect(state.memoryLimit == limit)
        let baseline = state.memoryUsed
        #expect(baseline > 0)
        #expect(baseline < limit)

        let e = try #require(luaError {
            try state.run("local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(1024) .. i end", name: "@bomb.lua")
        })
        #expect(e.kind == .memory)
        #expect(e.message.contains("not enough memory"))
        #expect(state.memoryUsed <= limit)

        #expect(try state.run("return 1 + 1") == [2])
        let before = state.memoryUsed
        try state.run("collectgarbage()")
        let after = state.memoryUsed
        #expect(after < before)
        #expect(after < 4 << 20)
        // and it can allocate again
        #expect(try state.run("local t = {} for i = 1, 1000 do t[i] = ('y'):rep(1024) end return #t") == [1000])
    }

    @Test func memoryErrorCanBeCaughtInLua() throws {
        let state = LuaState(memoryLimit: 16 << 20)
        let r = try state.run("""
            local ok, err = pcall(function()
              local t = {} for i = 1, 1e9 do t[i] = ('z'):rep(4096) .. i end
            end)
            return ok, err
            """)
        #expect(r == [false, "not enough memory"])
    }

    @Test func swiftPushesAreNotRefused() throws {
        let state = LuaState(memoryLimit: 2 << 20)
        let big = [UInt8](repeating: 0x2A, count: 4 << 20)
        state.stack.push(bytes: big)
        #expect(state.memoryUsed > 4 << 20)
        #expect(state.stack.rawLength(-1) == big.count)
        state.stack.pop()
        // while Lua runs the limit holds
        let e = try #require(luaError { try state.run("return ('x'):rep(8 << 20)") })
        #expect(e.kind == .memory)
    }

    /// Small blocks live in slabs of one size each and move between them (and to and from
    /// malloc) as Lua resizes them; none loses a byte, and the slabs emptied go back.
    @Test func blocksOfEverySizeKeepTheirBytesAndEmptiedSlabsGoBack() throws {
        let state = LuaState()
        // strings of every length across the small sizes and past them; tables whose array
        // part grows from nothing past 256 bytes and whose hash part grows, then shrinks on
        // a rehash; each is checked against what was written into it
        let r = try state.run("""
            local kept, sum = {}, 0
            for n = 1, 600 do
              local s = string.rep(string.char(65 + n % 26), n)
              local t, h = {}, {}
              for i = 1, n % 64 do t[i] = i * n; h["k" .. i] = s end
              kept[n] = { s = s, t = t, h = h }
            end
            for n = 1, 600, 7 do
              local h = kept[n].h
              for i = 2, n % 64 do h["k" .. i] = nil end
              for i = 1, 40 do h[i] = i end -- the rehash shrinks the hash part
            end
            collectgarbage()
            for n = 1, 600 do
              local e = kept[n]
              assert(#e.s == n and e.s == string.rep(string.char(65 + n % 26), n), "string " .. n)
              assert(#e.t == n % 64, "table " .. n)
              for i = 1, n % 64 do sum = sum + e.t[i] end
              if n % 64 >= 1 then assert(e.h.k1 == e.s, "hash " .. n) end
            end
            return sum
            """)
        var sum = 0
        for n in 1...600 { for i in 0..<(n % 64) { sum += (i + 1) * n } }
        #expect(r == [.integer(Int64(sum))])

        try state.run("collectgarbage()")
        let baseline = state.smallBlockSlabs
        try state.run("junk = {} for i = 1, 200000 do junk[i] = { i, tostring(i) } end")
        let full = state.smallBlockSlabs
        #expect(full > baseline + 100)
        try state.run("junk = nil collectgarbage()")
        // what stays is at most an emptied slab per size class (16) besides those still used
        #expect(state.smallBlockSlabs <= baseline + 16)
        #expect(try state.run("return #string.rep('x', 100)") == [100])
    }

    @Test func limitCanBeChanged() throws {
        let state = LuaState()
        #expect(state.memoryLimit == 0)
        try state.run("big = ('x'):rep(8 << 20)")
        try state.run("big = nil collectgarbage()")
        state.memoryLimit = 4 << 20
        #expect(state.memoryLimit == 4 << 20)
        let e = try #require(luaError { try state.run("big = ('x'):rep(8 << 20)") })
        #expect(e.kind == .memory)
        state.memoryLimit = 0
        try state.run("big = ('x'):rep(8 << 20)")
        #expect(state.memoryUsed > 8 << 20)
    }
}

/// The cache of compiled chunks: used while the source is unchanged, never after it changes,
/// and passed over when it is broken; messages name the source file either way.
@Suite struct BytecodeCacheTests {
    func load(_ state: LuaState, _ path: String, _ cache: String) throws -> LuaValue {
        try state.loadFile(path, displayPath: "lib/mod.lua", cacheDir: cache)
        try state.call(nargs: 0, nresults: 1)
        defer { state.stack.pop() }
        return try state.stack.value(at: -1)
    }

    func cacheFiles(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasSuffix(".luac") { out.append(dir + "/" + name) }
        }
        return out
    }

    @Test func aCachedChunkIsUsedUntilItsSourceChanges() throws {
        let src = try tempFile("mod.lua", "return 'from source'\n")
        let dir = String(src[..<src.lastIndex(of: "/")!])
        let cache = dir + "/cache"
        let state = LuaState()
        #expect(try load(state, src, cache) == "from source")
        let files = cacheFiles(cache)
        try #require(files.count == 1)
        // put other bytecode in the cache: the next load runs it, so the cache was read
        guard case .string(let other)? = try state.run("return string.dump(load('return \"from the cache\"', '@lib/mod.lua'))").first
        else { Issue.record("no bytecode"); return }
        let fd = open(files[0], O_WRONLY | O_TRUNC)
        _ = other.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        #expect(try load(state, src, cache) == "from the cache")
        // an edit (a new size and mtime) is compiled again
        let out = open(src, O_WRONLY | O_TRUNC)
        _ = "return 'edited' -- and longer\n".withCString { write(out, $0, strlen($0)) }
        close(out)
        #expect(try load(state, src, cache) == "edited")
        // a broken cache file is passed over
        for f in cacheFiles(cache) {
            let fd = open(f, O_WRONLY | O_TRUNC)
            _ = "\u{1B}Lua garbage".withCString { write(fd, $0, strlen($0)) }
            close(fd)
        }
        #expect(try load(state, src, cache) == "edited")
        _ = system("rm -rf '\(dir)'")
    }

    /// Every edit (and every checkout a file is read from) leaves a compiled chunk: the cache
    /// keeps the newest 32.
    @Test func theCacheKeepsTheNewestChunks() throws {
        let src = try tempFile("mod.lua", "return 0\n")
        let dir = String(src[..<src.lastIndex(of: "/")!])
        let cache = dir + "/cache"
        let state = LuaState()
        for i in 1...40 {
            let out = open(src, O_WRONLY | O_TRUNC)
            let text = "return \(i) -- " + String(repeating: "x", count: i) + "\n"
            _ = text.withCString { write(out, $0, strlen($0)) }
            close(out)
            #expect(try load(state, src, cache) == .integer(Int64(i)))
        }
        #expect(cacheFiles(cache).count == 32)
        _ = system("rm -rf '\(dir)'")
    }

    @Test func errorsFromACachedChunkNameTheSourceLine() throws {
        let src = try tempFile("mod.lua", "local x = 1\nerror('boom')\n")
        let dir = String(src[..<src.lastIndex(of: "/")!])
        let state = LuaState()
        for _ in 0..<2 {  // compiled, then from the cache
            try state.loadFile(src, displayPath: "lib/mod.lua", cacheDir: dir + "/cache")
            let e = try #require(luaError { try state.call() })
            #expect(e.message == "lib/mod.lua:2: boom")
        }
        #expect(cacheFiles(dir + "/cache").count == 1)
        _ = system("rm -rf '\(dir)'")
    }
}
