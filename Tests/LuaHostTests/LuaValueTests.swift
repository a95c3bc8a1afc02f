import CLua
import Testing

@testable import LuaHost

/// Pushes `v`, copies it back, and checks the stack is balanced.
private func roundTrip(_ v: LuaValue, in state: LuaState = LuaState(),
                       sourceLocation: SourceLocation = #_sourceLocation) throws -> LuaValue {
    let top = state.stack.top
    state.stack.push(v)
    #expect(state.stack.top == top + 1, sourceLocation: sourceLocation)
    let back = try state.stack.value(at: -1)
    state.stack.pop()
    #expect(state.stack.top == top, sourceLocation: sourceLocation)
    return back
}

/// Sets global `x` to `v` and runs `code` with it.
private func withGlobal(_ v: LuaValue, in state: LuaState = LuaState(), run code: String) throws -> [LuaValue] {
    state.stack.push(v)
    lua_setglobal(state.L, "x")
    return try state.run(code)
}

@Suite struct LuaValueTests {
    @Test func nilAndBooleans() throws {
        #expect(try roundTrip(.nil) == .nil)
        #expect(try roundTrip(true) == .boolean(true))
        #expect(try roundTrip(false) == .boolean(false))
        #expect(try withGlobal(false, run: "return type(x), x == false") == ["boolean", true])
        #expect(try withGlobal(.nil, run: "return x == nil") == [true])
    }

    @Test(arguments: [Int64.min, Int64.min + 1, -1, 0, 1, 42, (1 << 53) + 1, Int64.max] as [Int64])
    func integers(_ i: Int64) throws {
        #expect(try roundTrip(.integer(i)) == .integer(i))
        let state = LuaState()
        let r = try withGlobal(.integer(i), in: state, run: "return math.type(x), tostring(x)")
        #expect(r == [.string("integer"), .string(String(i))])
    }

    @Test func integerLimitsSeenByLua() throws {
        #expect(try withGlobal(.integer(.max), run: "return x == math.maxinteger") == [true])
        #expect(try withGlobal(.integer(.min), run: "return x == math.mininteger") == [true])
        let state = LuaState()
        #expect(try state.run("return math.maxinteger, math.mininteger") == [.integer(.max), .integer(.min)])
    }

    @Test(arguments: [0.5, -2.25, 1e308, -1e-300, 3.0, Double.infinity, -Double.infinity, Double.pi] as [Double])
    func floats(_ d: Double) throws {
        #expect(try roundTrip(.number(d)) == .number(d))
        let r = try withGlobal(.number(d), run: "return math.type(x)")
        #expect(r == ["float"])
    }

    @Test func floatsKeepTheirKind() throws {
        let state = LuaState()
        // 3.0 is a float in Lua and must not come back as an integer
        #expect(try state.run("return 3.0, 3, 2^53, 7 // 2, 7 / 2") == [.number(3.0), .integer(3), .number(9007199254740992), .integer(3), .number(3.5)])
    }

    @Test func negativeZeroAndNaN() throws {
        guard case .number(let z) = try roundTrip(.number(-0.0)) else { Issue.record("not a number"); return }
        #expect(z == 0 && z.sign == .minus)
        guard case .number(let n) = try roundTrip(.number(.nan)) else { Issue.record("not a number"); return }
        #expect(n.isNaN)
        #expect(try withGlobal(.number(.nan), run: "return x ~= x") == [true])
    }

    @Test func stringsKeepEveryByte() throws {
        let bytes: [UInt8] = [0x61, 0x00, 0xFF, 0xFE, 0x62, 0x00, 0xC3, 0x28, 0x80]
        #expect(try roundTrip(.string(bytes)) == .string(bytes))
        let r = try withGlobal(.string(bytes), run: "return #x, x:byte(2), x:byte(3), x:byte(-1)")
        #expect(r == [9, 0, 255, 128])
        // from Lua to Swift
        let state = LuaState()
        #expect(try state.run(#"return "a\0b\255\xC3(""#) == [.string([0x61, 0, 0x62, 0xFF, 0xC3, 0x28])])
        #expect(try roundTrip("") == .string([]))
        #expect(try roundTrip("héllo ✓") == .string(Array("héllo ✓".utf8)))
    }

    @Test func largeString() throws {
        let big = (0..<1_000_000).map { UInt8(truncatingIfNeeded: $0) }
        #expect(try roundTrip(.string(big)) == .string(big))
    }

    @Test func nestedTables() throws {
        let v: LuaValue = .table([
            "name": "qw",
            "count": 3,
            "ratio": 0.5,
            "flags": .table(["on": true, "off": false]),
            "deep": .table(["a": .table(["b": .table(["c": "bottom"])])]),
            "list": .array([1, "two", .array([3.5]), .table([:])]),
            .integer(7): "seven",
            .boolean(true): "yes",
            .number(1.5): "one and a half",
        ])
        let state = LuaState()
        #expect(try roundTrip(v, in: state) == v)
        let r = try withGlobal(v, in: state, run: """
            return x.name, x.flags.on, x.deep.a.b.c, #x.list, x.list[2], x.list[3][1], x[7], x[true], x[1.5], next(x.list[4])
            """)
        #expect(r == ["qw", true, "bottom", 4, "two", 3.5, "seven", "yes", "one and a half", .nil])
    }

    @Test func arrays() throws {
        let items: [LuaValue] = (1...100).map { .integer($0 * $0) }
        let v = LuaValue.array(items)
        #expect(try roundTrip(v) == v)
        let r = try withGlobal(v, run: "local s = 0 for i, n in ipairs(x) do s = s + n end return #x, s, x[10]")
        #expect(r == [100, 338350, 100])
        let state = LuaState()
        #expect(try state.run("return {'a', 'b', 'c'}") == [.array(["a", "b", "c"])])
        #expect(try state.run("return {}") == [.table([:])])
    }

    @Test func tablesFromLua() throws {
        let state = LuaState()
        let r = try state.run("return {1, 2, n = {a = true, [10] = 'ten'}, [2.5] = 'x'}")
        let expected: LuaValue = .table([
            1: 1, 2: 2,
            "n": .table(["a": true, 10: "ten"]),
            .number(2.5): "x",
        ])
        #expect(r == [expected])
        #expect(r[0]["n"]?["a"] == true)
    }

    @Test func sharedTableIsNotACycle() throws {
        let state = LuaState()
        let r = try state.run("local s = {1} return {a = s, b = s, c = {s, s}}")
        let s = LuaValue.array([1])
        #expect(r == [.table(["a": s, "b": s, "c": .array([s, s])])])
    }

    @Test func tableContainingItselfIsRefused() throws {
        let state = LuaState()
        let top = state.stack.top
        let error = #expect(throws: LuaArgumentError.self) {
            try state.run("local t = {inner = {}} t.inner.back = t return t")
        }
        #expect(error?.message.contains("value.inner.back") == true)
        #expect(error?.message.contains("cycle") == true)
        #expect(state.stack.top == top)

        // the same through value(at:) with a name
        _ = try state.run("t = {} t[1] = t")
        lua_getglobal(state.L, "t")
        let e2 = #expect(throws: LuaArgumentError.self) { try state.stack.value(at: -1, name: "arg") }
        #expect(e2?.message == "arg[1] contains itself (a cycle)")
        #expect(state.stack.top == top + 1)
        state.stack.pop()
    }

    @Test func functionIsRefusedWithItsPath() throws {
        let state = LuaState()
        let top = state.stack.top
        let error = #expect(throws: LuaArgumentError.self) {
            try state.run("return {f = print}")
        }
        #expect(error?.message == "value.f is a function, which cannot be copied")
        #expect(state.stack.top == top)

        let e2 = #expect(throws: LuaArgumentError.self) { try state.run("return {list = {1, 2, print}}") }
        #expect(e2?.message == "value.list[3] is a function, which cannot be copied")

        let e3 = #expect(throws: LuaArgumentError.self) { try state.run("return coroutine.create(print)") }
        #expect(e3?.message.contains("thread") == true)

        let e4 = #expect(throws: LuaArgumentError.self) { try state.run("return io.stdout") }
        #expect(e4?.message.contains("userdata") == true)
        #expect(state.stack.top == top)
        // still usable
        #expect(try state.run("return 1 + 1") == [2])
    }

    @Test func tableUsedAsAKey() throws {
        // A table key is read while the iteration key and value are on the stack.
        let state = LuaState()
        let r = try state.run("return {[{1, 2}] = 'pair'}")
        #expect(r == [.table([.array([1, 2]): "pair"])])
    }

    @Test func runReturnsSeveralValues() throws {
        let state = LuaState()
        let top = state.stack.top
        #expect(try state.run("return 1, 'two', nil, 4.5, false") == [1, "two", .nil, 4.5, false])
        #expect(try state.run("return") == [])
        #expect(try state.run("local x = 1") == [])
        #expect(try state.run("return nil, nil") == [.nil, .nil])
        #expect(try state.run("return table.unpack({1, 2, 3, 4, 5, 6, 7, 8, 9, 10})") == (1...10).map { .integer($0) })
        #expect(state.stack.top == top)
    }

    @Test func stateKeepsGlobalsBetweenRuns() throws {
        let state = LuaState()
        try state.run("counter = 41")
        #expect(try state.run("counter = counter + 1 return counter") == [42])
    }

    @Test func numberReadAsStringIsNotConvertedInPlace() throws {
        let state = LuaState()
        state.stack.push(Int64(12))
        #expect(state.stack.string(at: -1) == "12")
        #expect(state.stack.type(at: -1) == .number)
        #expect(state.stack.isInteger(at: -1))
        state.stack.pop()
        state.stack.push(true)
        #expect(state.stack.string(at: -1) == nil)
        #expect(state.stack.bytes(at: -1) == nil)
        state.stack.pop()
    }

    @Test func luaValueHelpers() {
        let v: LuaValue = .table(["k": "v", 1: 2])
        #expect(v["k"] == "v")
        #expect(v["missing"] == nil)
        #expect(LuaValue.integer(1)["k"] == nil)
        #expect(LuaValue.string([0x61, 0xFF]).stringValue == "a\u{FFFD}")
        #expect(LuaValue.integer(3).stringValue == nil)
        #expect(LuaValue.array(["a"]) == .table([1: "a"]))
        let lit: LuaValue = nil
        #expect(lit == .nil)
    }

    @Test func typeNames() {
        #expect(LuaType.nil.name == "nil")
        #expect(LuaType.none.name == "no value")
        #expect(LuaType.table.name == "table")
        #expect(LuaType.lightUserdata.name == "userdata")
        let state = LuaState()
        #expect(state.stack.type(at: 1) == LuaType.none)
    }
}
