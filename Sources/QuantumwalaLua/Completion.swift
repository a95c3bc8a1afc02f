import CLua
import LuaHost

extension Runtime {
    private static let keywords = ["and", "break", "do", "else", "elseif", "end", "false", "for", "function",
                                   "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
                                   "true", "until", "while"]

    /// Completions for the word being typed: globals and keywords, or the fields of the table
    /// the dotted path names (`qw.json.` -> `qw.json.encode`...), methods after `:`, and
    /// fields reached through `__index` tables. Reads the state without running Lua code.
    public func completions(for text: String) -> [String] {
        let s = lua.stack
        let base = s.top
        defer { s.top = base }
        guard let sepIndex = text.lastIndex(where: { $0 == "." || $0 == ":" }) else {
            lua_rawgeti(lua.L, qwl_registryindex(), lua_Integer(LUA_RIDX_GLOBALS))
            var names = fieldNames(at: s.top, prefix: text, methodsOnly: false)
            names += Self.keywords.filter { $0.hasPrefix(text) }
            return Array(Set(names)).sorted()
        }
        let path = text[..<sepIndex]
        let sep = text[sepIndex]
        let partial = String(text[text.index(after: sepIndex)...])
        lua_rawgeti(lua.L, qwl_registryindex(), lua_Integer(LUA_RIDX_GLOBALS))
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            guard s.type(at: -1) == .table else { return [] }
            s.getField(-1, String(part))
        }
        if s.type(at: -1) == .string {  // s:up<Tab> -> string methods
            lua_getglobal(lua.L, "string")
        }
        guard s.type(at: -1) == .table || s.type(at: -1) == .userdata else { return [] }
        let names = fieldNames(at: s.top, prefix: partial, methodsOnly: sep == ":")
        return Array(Set(names)).sorted().map { String(path) + String(sep) + $0 }
    }

    /// String keys of the table at `index` (and of its `__index` tables) that start with
    /// `prefix`.
    private func fieldNames(at index: Int32, prefix: String, methodsOnly: Bool) -> [String] {
        let s = lua.stack
        var out: [String] = []
        var current = index
        for _ in 0..<4 {
            if s.type(at: current) == .table {
                s.pushNil()
                while s.next(current) {
                    if s.type(at: -2) == .string, let k = s.string(at: -2), k.hasPrefix(prefix),
                       !methodsOnly || s.type(at: -1) == .function {
                        if !k.hasPrefix("_") || prefix.hasPrefix("_") { out.append(k) }
                    }
                    s.pop()
                }
            }
            guard lua_getmetatable(lua.L, current) != 0 else { break }
            s.getField(-1, "__index")
            guard s.type(at: -1) == .table else { break }
            current = s.top
        }
        return out
    }
}
