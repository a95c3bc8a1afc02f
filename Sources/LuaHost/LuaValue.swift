/// A Lua value copied out of (or into) a Lua state.
///
/// Strings keep their bytes exactly, embedded zeros and invalid UTF-8 included; tables are
/// copied deeply (a table that contains itself is refused by ``LuaState/value(at:)``).
public enum LuaValue: Hashable, Sendable {
    case `nil`
    case boolean(Bool)
    case integer(Int64)
    case number(Double)
    case string([UInt8])
    case table([LuaValue: LuaValue])

    /// A string value from Swift text.
    public static func string(_ s: String) -> LuaValue { .string(Array(s.utf8)) }

    /// The text of a string value (invalid UTF-8 repaired), or nil for other kinds.
    public var stringValue: String? {
        if case .string(let b) = self { return String(decoding: b, as: UTF8.self) }
        return nil
    }

    /// An array table `{ [1] = v1, [2] = v2, ... }`.
    public static func array(_ items: [LuaValue]) -> LuaValue {
        var t: [LuaValue: LuaValue] = [:]
        for (i, v) in items.enumerated() { t[.integer(Int64(i + 1))] = v }
        return .table(t)
    }

    /// Looks a string key up in a table value.
    public subscript(key: String) -> LuaValue? {
        if case .table(let t) = self { return t[.string(key)] }
        return nil
    }
}

extension LuaValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .boolean(value) }
    public init(nilLiteral: ()) { self = .nil }
}
