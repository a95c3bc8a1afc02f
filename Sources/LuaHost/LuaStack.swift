import CLua
import CLuaShims

/// The Lua value kinds, as `lua_type` reports them.
public enum LuaType: Int32, Sendable {
    case none = -1, `nil` = 0, boolean, lightUserdata, number, string, table, function, userdata, thread

    /// The name Lua gives the type (`"nil"`, `"table"`, `"no value"`).
    public var name: String {
        switch self {
        case .none: "no value"
        case .nil: "nil"
        case .boolean: "boolean"
        case .lightUserdata, .userdata: "userdata"
        case .number: "number"
        case .string: "string"
        case .table: "table"
        case .function: "function"
        case .thread: "thread"
        }
    }
}

/// Stack operations on one Lua thread.
///
/// Only operations that cannot raise a Lua error are offered (raw table access, no
/// metamethods), so Swift code can call them in the middle of a bound function.
public struct LuaStack {
    /// The thread's `lua_State`; valid only while the call or resume that handed it out lasts.
    public let L: OpaquePointer

    public init(_ L: OpaquePointer) { self.L = L }

    public var top: Int32 {
        get { lua_gettop(L) }
        nonmutating set { lua_settop(L, newValue) }
    }

    public func type(at i: Int32) -> LuaType { LuaType(rawValue: lua_type(L, i)) ?? .none }
    public func absolute(_ i: Int32) -> Int32 { lua_absindex(L, i) }
    public func pop(_ n: Int32 = 1) { lua_settop(L, -n - 1) }
    public func pushNil() { lua_pushnil(L) }
    public func push(_ b: Bool) { lua_pushboolean(L, b ? 1 : 0) }
    public func push(_ i: Int) { lua_pushinteger(L, lua_Integer(i)) }
    public func push(_ i: Int64) { lua_pushinteger(L, lua_Integer(i)) }
    public func push(_ d: Double) { lua_pushnumber(L, d) }
    public func push(_ s: String) {
        var s = s
        s.withUTF8 { buf in _ = lua_pushlstring(L, buf.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, buf.count) }
    }
    public func push(bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { buf in
            _ = lua_pushlstring(L, buf.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, buf.count)
        }
    }
    public func push(bytes: UnsafeRawBufferPointer) {
        _ = lua_pushlstring(L, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
    }
    public func pushValue(at i: Int32) { lua_pushvalue(L, i) }
    public func newTable(array: Int32 = 0, hash: Int32 = 0) { lua_createtable(L, array, hash) }
    public func remove(at i: Int32) { qwl_remove(L, i) }
    public func insert(at i: Int32) { qwl_insert(L, i) }

    /// `t[key] = top`, popping the value; `t` at `table` (raw, no metamethods).
    public func setField(_ table: Int32, _ key: String) {
        let t = absolute(table)
        push(key)
        lua_rotate(L, -2, 1)
        lua_rawset(L, t)
    }
    /// `t[n] = top`, popping the value (raw).
    public func setIndex(_ table: Int32, _ n: Int) { lua_rawseti(L, table, lua_Integer(n)) }
    /// Pushes `t[key]` (raw) and returns its type.
    @discardableResult
    public func getField(_ table: Int32, _ key: String) -> LuaType {
        let t = absolute(table)
        push(key)
        return LuaType(rawValue: lua_rawget(L, t)) ?? .nil
    }
    /// Pushes `t[n]` (raw) and returns its type.
    @discardableResult
    public func getIndex(_ table: Int32, _ n: Int) -> LuaType {
        LuaType(rawValue: lua_rawgeti(L, table, lua_Integer(n))) ?? .nil
    }
    /// `lua_next`: pops a key, pushes the next key and value of the table at `t`; false at the end.
    public func next(_ t: Int32) -> Bool { lua_next(L, t) != 0 }
    /// Full userdata at `i` with the metatable registered as `name`, or nil.
    public func userdata(at i: Int32, _ name: String) -> UnsafeMutableRawPointer? { luaL_testudata(L, i, name) }
    /// Pushes a new full userdata of `size` bytes with the registered metatable `name`.
    public func newUserdata(size: Int, metatable name: String) -> UnsafeMutableRawPointer {
        let p = lua_newuserdatauv(L, size, 0)!
        luaL_setmetatable(L, name)
        return p
    }

    /// The length of the value without metamethods (`#` of a sequence, bytes of a string).
    public func rawLength(_ i: Int32) -> Int { Int(lua_rawlen(L, i)) }

    public func bool(at i: Int32) -> Bool { lua_toboolean(L, i) != 0 }
    public func isInteger(at i: Int32) -> Bool { lua_isinteger(L, i) != 0 }
    public func integer(at i: Int32) -> Int64? {
        var ok: Int32 = 0
        let v = lua_tointegerx(L, i, &ok)
        return ok != 0 ? Int64(v) : nil
    }
    public func number(at i: Int32) -> Double? {
        var ok: Int32 = 0
        let v = lua_tonumberx(L, i, &ok)
        return ok != 0 ? Double(v) : nil
    }
    /// The bytes of a string (or number) value, nil for other types.
    public func bytes(at i: Int32) -> [UInt8]? {
        let t = type(at: i)
        guard t == .string || t == .number else { return nil }
        if t == .number { pushValue(at: i) }  // tolstring converts in place: work on a copy
        defer { if t == .number { pop() } }
        var len = 0
        guard let p = lua_tolstring(L, t == .number ? -1 : i, &len) else { return nil }
        return Array(UnsafeRawBufferPointer(start: p, count: len))
    }
    /// The text of a string value (no number conversion), copied once: nil for other types.
    public func text(at i: Int32) -> String? {
        guard lua_type(L, i) == LUA_TSTRING else { return nil }
        var len = 0
        guard let p = lua_tolstring(L, i, &len) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }

    /// Pushes `t[k]` (raw), where `t` and the key `k` are both on the stack: cheaper than
    /// ``getField(_:_:)`` in a loop, which makes the key string each time.
    @discardableResult
    public func getField(_ table: Int32, keyAt k: Int32) -> LuaType {
        let t = absolute(table)
        lua_pushvalue(L, k)
        return LuaType(rawValue: lua_rawget(L, t)) ?? .nil
    }

    /// The text of a string (or number) value, nil for other types.
    public func string(at i: Int32) -> String? {
        bytes(at: i).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Pushes a Swift value as a Lua value.
    public func push(_ v: LuaValue) {
        switch v {
        case .nil: pushNil()
        case .boolean(let b): push(b)
        case .integer(let i): push(i)
        case .number(let d): push(d)
        case .string(let b): push(bytes: b)
        case .table(let t):
            newTable(hash: Int32(t.count))
            for (k, v) in t {
                // nil and NaN cannot be keys (lua_rawset would raise outside any protection)
                if case .nil = k { continue }
                if case .number(let d) = k, d.isNaN { continue }
                push(k)
                push(v)
                lua_rawset(L, -3)
            }
        }
    }

    /// Copies the value at `i` into Swift.
    ///
    /// - Throws: ``LuaArgumentError`` for a function, userdata, thread, or a table that
    ///   contains itself.
    public func value(at i: Int32, name: String = "value") throws(LuaArgumentError) -> LuaValue {
        var seen = Set<UnsafeRawPointer>()
        let saved = top
        do {
            return try value(at: absolute(i), seen: &seen, path: name)
        } catch {
            top = saved
            throw error
        }
    }

    private func value(at i: Int32, seen: inout Set<UnsafeRawPointer>, path: String) throws(LuaArgumentError) -> LuaValue {
        switch type(at: i) {
        case .none, .nil: return .nil
        case .boolean: return .boolean(bool(at: i))
        case .number:
            if isInteger(at: i) { return .integer(integer(at: i)!) }
            return .number(number(at: i)!)
        case .string: return .string(bytes(at: i)!)
        case .table:
            let p = lua_topointer(L, i)!
            guard seen.insert(p).inserted else { throw LuaArgumentError("\(path) contains itself (a cycle)") }
            defer { seen.remove(p) }
            var t: [LuaValue: LuaValue] = [:]
            lua_pushnil(L)
            while lua_next(L, i) != 0 {
                let k = try value(at: absolute(-2), seen: &seen, path: path)
                let keyName: String
                switch k {
                case .string(let b): keyName = path + "." + String(decoding: b, as: UTF8.self)
                case .integer(let n): keyName = path + "[\(n)]"
                default: keyName = path + "[?]"
                }
                let v = try value(at: lua_gettop(L), seen: &seen, path: keyName)
                t[k] = v
                pop()
            }
            return .table(t)
        case let other:
            throw LuaArgumentError("\(path) is a \(other.name), which cannot be copied")
        }
    }
}
