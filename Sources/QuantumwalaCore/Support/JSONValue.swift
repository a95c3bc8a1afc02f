/// A JSON document to write out, with objects that keep their fields in the order given
/// (what the dashboard's API and `qw status --json` answer with).
public indirect enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])
    /// JSON text that is already encoded (a stored result), written as it is.
    case raw(String)

    /// The value, or null for nil.
    public static func of(_ v: String?) -> JSONValue { v.map { .string($0) } ?? .null }
    public static func of(_ v: Double?) -> JSONValue { v.map { .number($0) } ?? .null }
    public static func of(_ v: Int?) -> JSONValue { v.map { .int($0) } ?? .null }
    public static func of(_ v: Bool?) -> JSONValue { v.map { .bool($0) } ?? .null }

    /// The field `key` of an object (nil for anything else, or when it has none).
    public subscript(key: String) -> JSONValue? {
        guard case .object(let fields) = self else { return nil }
        return fields.first { $0.0 == key }?.1
    }

    /// The JSON text.
    public var text: String {
        var out = ""
        write(to: &out)
        return out
    }

    public func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .number(let d):
            if !d.isFinite {
                out += "null"
            } else if d == d.rounded(), abs(d) < 1e15 {
                out += String(Int64(d))
            } else {
                out += String(d)
            }
        case .string(let s): appendJSONString(s, to: &out)
        case .raw(let s): out += s
        case .array(let items):
            out += "["
            for (i, v) in items.enumerated() {
                if i > 0 { out += "," }
                v.write(to: &out)
            }
            out += "]"
        case .object(let fields):
            out += "{"
            for (i, (k, v)) in fields.enumerated() {
                if i > 0 { out += "," }
                appendJSONString(k, to: &out)
                out += ":"
                v.write(to: &out)
            }
            out += "}"
        }
    }
}
