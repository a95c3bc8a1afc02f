public import LuaHost

// JSON text <-> LuaValue, following RFC 8259, using only the standard library.
//
// Encoding:
// - A table whose keys are exactly the integers 1...n (n >= 1) is an array, written in index
//   order. Every other non-empty table is an object; integer keys are written as their decimal
//   text and members are sorted by the bytes of their keys, so the output is deterministic.
//   An empty table is `{}` (as lua-cjson does).
// - Strings are written as their bytes; `"`, `\` and control characters are escaped and any
//   byte sequence that is not valid UTF-8 is replaced by U+FFFD (one per maximal invalid
//   subpart, as `String(decoding:as:)` does), so the output is always valid UTF-8.
// - Integers are written as integers. Floats use the shortest text that reads back as the same
//   Double and always contain a `.` or an exponent (2.0 is `2.0`), so they stay floats when
//   decoded again. NaN and the infinities are refused.
// - `.nil` (at the top or as a table value built in Swift) is written as `null`.
//
// Decoding:
// - Arrays become tables with the keys 1...n; `null` becomes `.nil`, which a table cannot hold,
//   so null members are dropped and null array elements leave a hole (`[1,null,3]` is
//   `{[1]=1, [3]=3}`). Of duplicate object keys the last one wins.
// - A number without fraction or exponent that fits Int64 is `.integer`, every other number is
//   `.number` (a number too large for a Double, like 1e400, is infinity, as in Lua).
// - String contents are copied byte for byte (no UTF-8 check); escapes are decoded, and a
//   `\u` escape for a lone surrogate becomes U+FFFD. A leading UTF-8 byte order mark is skipped.
// - Nesting is limited to `JSON.maxDepth` levels, for both directions.

/// Converts ``LuaValue``s to and from JSON text.
public enum JSON {
    /// The deepest nesting of arrays and objects that is encoded or decoded.
    public static let maxDepth = 1000

    /// Encodes a value as UTF-8 JSON text (no trailing newline).
    ///
    /// - Parameter pretty: indent nested members by 2 spaces per level and write `": "` after keys.
    public static func encode(_ value: LuaValue, pretty: Bool = false) throws(JSONError) -> [UInt8] {
        var encoder = JSONEncoder(pretty: pretty)
        try encoder.write(value, depth: 0)
        return encoder.out
    }

    /// Decodes JSON text (UTF-8) into a value.
    public static func decode(_ bytes: [UInt8]) throws(JSONError) -> LuaValue {
        // Never an empty buffer, so that its base address is never nil.
        let storage = bytes.isEmpty ? [0] : bytes
        let result: Result<LuaValue, JSONError> = storage.withUnsafeBufferPointer { buffer in
            var decoder = JSONDecoder(buffer.baseAddress!, count: bytes.count)
            do throws(JSONError) {
                return .success(try decoder.parseDocument())
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}

/// Why a value could not be encoded or a text could not be decoded.
public struct JSONError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A message for the user, starting with "JSON: ".
    public var message: String

    public init(message: String) {
        self.message = message
    }

    public var description: String { message }
}

// MARK: - ASCII

/// Byte constants; computed rather than stored so that debug builds do not run a lazy
/// initialisation check on every use.
private enum ASCII {
    static var quote: UInt8 { 0x22 }  // "
    static var backslash: UInt8 { 0x5C }  // \
    static var slash: UInt8 { 0x2F }  // /
    static var comma: UInt8 { 0x2C }  // ,
    static var colon: UInt8 { 0x3A }  // :
    static var openBracket: UInt8 { 0x5B }  // [
    static var closeBracket: UInt8 { 0x5D }  // ]
    static var openBrace: UInt8 { 0x7B }  // {
    static var closeBrace: UInt8 { 0x7D }  // }
    static var minus: UInt8 { 0x2D }  // -
    static var plus: UInt8 { 0x2B }  // +
    static var dot: UInt8 { 0x2E }  // .
    static var zero: UInt8 { 0x30 }  // 0
    static var nine: UInt8 { 0x39 }  // 9
    static var space: UInt8 { 0x20 }
    static var tab: UInt8 { 0x09 }  // \t
    static var newline: UInt8 { 0x0A }  // \n
    static var carriageReturn: UInt8 { 0x0D }  // \r
    static let hexDigits = Array("0123456789abcdef".utf8)

    static func isDigit(_ c: UInt8) -> Bool { c >= zero && c <= nine }

    static func isWordCharacter(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || isDigit(c) || c == UInt8(ascii: "_")
    }

    /// "U+000A", "U+1F600".
    static func codePointName(_ value: UInt32) -> String {
        let hex = String(value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }
}

// MARK: - UTF-8

/// The length of the UTF-8 sequence that starts at `i` (whose byte is >= 0x80), and whether it
/// is valid. When it is not, the length is that of the maximal invalid subpart (at least 1),
/// which is replaced by one U+FFFD (Unicode's recommended practice, also `String(decoding:)`'s).
private func utf8Sequence(_ p: UnsafePointer<UInt8>, _ n: Int, _ i: Int) -> (length: Int, valid: Bool) {
    var need: Int
    var low: UInt8 = 0x80
    var high: UInt8 = 0xBF
    switch p[i] {
    case 0xC2...0xDF: need = 1
    case 0xE0: need = 2; low = 0xA0
    case 0xE1...0xEC, 0xEE...0xEF: need = 2
    case 0xED: need = 2; high = 0x9F
    case 0xF0: need = 3; low = 0x90
    case 0xF1...0xF3: need = 3
    case 0xF4: need = 3; high = 0x8F
    default: return (1, false)
    }
    var j = i + 1
    guard j < n, p[j] >= low, p[j] <= high else { return (1, false) }
    j += 1
    need -= 1
    while need > 0 {
        guard j < n, p[j] & 0xC0 == 0x80 else { return (j - i, false) }
        j += 1
        need -= 1
    }
    return (j - i, true)
}

private let replacementCharacter: [UInt8] = [0xEF, 0xBF, 0xBD]

private func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
    switch scalar {
    case 0..<0x80:
        out.append(UInt8(scalar))
    case 0x80..<0x800:
        out.append(UInt8(0xC0 | (scalar >> 6)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    case 0x800..<0x10000:
        out.append(UInt8(0xE0 | (scalar >> 12)))
        out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    default:
        out.append(UInt8(0xF0 | (scalar >> 18)))
        out.append(UInt8(0x80 | ((scalar >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    }
}

// MARK: - Encoder

private struct JSONEncoder {
    enum PathElement {
        case index(Int64)
        case key([UInt8])
    }

    let pretty: Bool
    var out: [UInt8] = []
    /// Where the value being written sits, for error messages.
    var path: [PathElement] = []

    init(pretty: Bool) {
        self.pretty = pretty
        out.reserveCapacity(256)
    }

    mutating func write(_ value: LuaValue, depth: Int) throws(JSONError) {
        switch value {
        case .nil:
            out.append(contentsOf: "null".utf8)
        case .boolean(let b):
            out.append(contentsOf: (b ? "true" : "false").utf8)
        case .integer(let i):
            out.append(contentsOf: String(i).utf8)
        case .number(let d):
            guard d.isFinite else {
                throw error("cannot encode a number that is not finite (\(d))")
            }
            // Swift's description is the shortest text that reads back as the same Double; it
            // always has a "." or an exponent ("2.0", "1e+300", "5e-324"), all valid JSON.
            out.append(contentsOf: d.description.utf8)
        case .string(let s):
            writeString(s)
        case .table(let t):
            try writeTable(t, depth: depth + 1)
        }
    }

    private mutating func writeTable(_ t: [LuaValue: LuaValue], depth: Int) throws(JSONError) {
        guard depth <= JSON.maxDepth else {
            throw JSONError(message: "JSON: nesting deeper than \(JSON.maxDepth) levels")
        }
        if t.isEmpty {
            out.append(contentsOf: "{}".utf8)
            return
        }
        if Self.isArray(t) {
            out.append(ASCII.openBracket)
            for index in 1...Int64(t.count) {
                if index > 1 { out.append(ASCII.comma) }
                newline(depth)
                path.append(.index(index))
                try write(t[.integer(index)] ?? .nil, depth: depth)
                path.removeLast()
            }
            newline(depth - 1)
            out.append(ASCII.closeBracket)
            return
        }

        var members: [(key: [UInt8], index: Int64?, value: LuaValue)] = []
        members.reserveCapacity(t.count)
        for (key, value) in t {
            switch key {
            case .string(let s): members.append((s, nil, value))
            case .integer(let i): members.append((Array(String(i).utf8), i, value))
            case .number(let d): throw error("table keys must be strings or integers (got number \(d))")
            case .boolean(let b): throw error("table keys must be strings or integers (got boolean \(b))")
            case .table: throw error("table keys must be strings or integers (got table)")
            case .nil: throw error("table keys must be strings or integers (got nil)")
            }
        }
        members.sort { a, b in
            a.key.lexicographicallyPrecedes(b.key)
        }
        for k in 1..<members.count where members[k].key == members[k - 1].key {
            let name = String(decoding: members[k].key, as: UTF8.self)
            throw error("table has both the integer key \(name) and the string key \"\(name)\"")
        }

        out.append(ASCII.openBrace)
        for (k, member) in members.enumerated() {
            if k > 0 { out.append(ASCII.comma) }
            newline(depth)
            writeString(member.key)
            out.append(ASCII.colon)
            if pretty { out.append(ASCII.space) }
            path.append(member.index.map { PathElement.index($0) } ?? .key(member.key))
            try write(member.value, depth: depth)
            path.removeLast()
        }
        newline(depth - 1)
        out.append(ASCII.closeBrace)
    }

    /// Whether the keys are exactly the integers 1...count.
    private static func isArray(_ t: [LuaValue: LuaValue]) -> Bool {
        let n = Int64(t.count)
        for key in t.keys {
            guard case .integer(let i) = key, i >= 1, i <= n else { return false }
        }
        return true
    }

    private mutating func newline(_ level: Int) {
        guard pretty else { return }
        out.append(ASCII.newline)
        out.append(contentsOf: repeatElement(ASCII.space, count: 2 * level))
    }

    private mutating func writeString(_ s: [UInt8]) {
        out.append(ASCII.quote)
        defer { out.append(ASCII.quote) }
        guard !s.isEmpty else { return }
        s.withUnsafeBufferPointer { buffer in
            let p = buffer.baseAddress!
            let n = buffer.count
            func bytes(_ start: Int, _ end: Int) -> UnsafeBufferPointer<UInt8> {
                UnsafeBufferPointer(start: p + start, count: end - start)
            }
            var i = 0
            var runStart = 0
            while i < n {
                let c = p[i]
                if c >= 0x20 && c < 0x80 && c != ASCII.quote && c != ASCII.backslash {
                    i += 1
                    continue
                }
                if c >= 0x80 {
                    let (length, valid) = utf8Sequence(p, n, i)
                    if valid {
                        i += length
                        continue
                    }
                    out.append(contentsOf: bytes(runStart, i))
                    out.append(contentsOf: replacementCharacter)
                    i += length
                    runStart = i
                    continue
                }
                out.append(contentsOf: bytes(runStart, i))
                out.append(ASCII.backslash)
                switch c {
                case ASCII.quote, ASCII.backslash: out.append(c)
                case ASCII.newline: out.append(UInt8(ascii: "n"))
                case ASCII.tab: out.append(UInt8(ascii: "t"))
                case ASCII.carriageReturn: out.append(UInt8(ascii: "r"))
                case 0x08: out.append(UInt8(ascii: "b"))
                case 0x0C: out.append(UInt8(ascii: "f"))
                default:
                    out.append(contentsOf: "u00".utf8)
                    out.append(ASCII.hexDigits[Int(c >> 4)])
                    out.append(ASCII.hexDigits[Int(c & 0xF)])
                }
                i += 1
                runStart = i
            }
            out.append(contentsOf: bytes(runStart, n))
        }
    }

    private func error(_ what: String) -> JSONError {
        var message = "JSON: " + what
        if !path.isEmpty { message += " at " + pathText() }
        return JSONError(message: message)
    }

    /// `$.config.items[2]["odd key"]`.
    private func pathText() -> String {
        var text = "$"
        for element in path {
            switch element {
            case .index(let i):
                text += "[\(i)]"
            case .key(let k):
                let isIdentifier = !k.isEmpty && !ASCII.isDigit(k[0]) && k.allSatisfy(ASCII.isWordCharacter)
                if isIdentifier {
                    text += "." + String(decoding: k, as: UTF8.self)
                } else {
                    var encoder = JSONEncoder(pretty: false)
                    encoder.writeString(k)
                    text += "[" + String(decoding: encoder.out, as: UTF8.self) + "]"
                }
            }
        }
        return text
    }
}

// MARK: - Decoder

private struct JSONDecoder {
    /// An array or object being read.
    struct Container {
        let isArray: Bool
        /// The values so far (nulls included: in arrays they keep their index).
        var values: [LuaValue] = []
        /// Objects: the keys so far, one per value.
        var keys: [LuaValue] = []

        init(isArray: Bool) {
            self.isArray = isArray
        }

        /// The table this container becomes (built at the end, at its final size).
        consuming func finish() -> [LuaValue: LuaValue] {
            var t = [LuaValue: LuaValue](minimumCapacity: values.count)
            var k = 0
            while k < values.count {
                if isArray {
                    if case .nil = values[k] {} else { t[.integer(Int64(k + 1))] = values[k] }
                } else if case .nil = values[k] {
                    t.removeValue(forKey: keys[k])  // the last of duplicate keys wins
                } else {
                    t[keys[k]] = values[k]
                }
                k += 1
            }
            return t
        }
    }

    /// The text (never dereferenced past `n`).
    let p: UnsafePointer<UInt8>
    let n: Int
    var i = 0

    init(_ p: UnsafePointer<UInt8>, count: Int) {
        self.p = p
        self.n = count
    }

    /// A copy of bytes `start..<end` of the text.
    private func copy(_ start: Int, _ end: Int) -> [UInt8] {
        let count = end - start
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { buffer.baseAddress!.initialize(from: p + start, count: count) }
            initialized = count
        }
    }

    /// Bytes `start..<end` of the text.
    private func bytes(_ start: Int, _ end: Int) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(start: p + start, count: end - start)
    }

    mutating func parseDocument() throws(JSONError) -> LuaValue {
        if n >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF { i = 3 }
        let value = try parseValue()
        skipWhitespace()
        if i < n {
            throw error("unexpected \(describe(at: i)) after the end of the JSON value", at: i)
        }
        return value
    }

    private mutating func skipWhitespace() {
        while i < n {
            let c = p[i]
            guard c == ASCII.space || c == ASCII.newline || c == ASCII.carriageReturn || c == ASCII.tab else { return }
            i += 1
        }
    }

    /// Reads one value, iteratively (an explicit stack, so deep nesting cannot overflow the
    /// thread's stack).
    private mutating func parseValue() throws(JSONError) -> LuaValue {
        // The innermost open container is `current` (when depth > 0); the ones around it are
        // in `outer`. Keeping the busy one in a local is much faster in debug builds.
        var outer: [Container] = []
        var current = Container(isArray: true)
        var depth = 0
        readValue: while true {
            skipWhitespace()
            guard i < n else { throw unexpectedEnd(expecting: "a value") }
            var value: LuaValue
            let c = p[i]
            switch c {
            case ASCII.openBracket, ASCII.openBrace:
                guard depth < JSON.maxDepth else {
                    throw error("nesting deeper than \(JSON.maxDepth) levels", at: i)
                }
                let isArray = c == ASCII.openBracket
                i += 1
                skipWhitespace()
                if i < n && p[i] == (isArray ? ASCII.closeBracket : ASCII.closeBrace) {
                    i += 1
                    value = .table([:])
                } else {
                    var container = Container(isArray: isArray)
                    if !isArray { container.keys.append(try parseKey(afterComma: false)) }
                    if depth > 0 { outer.append(current) }
                    current = container
                    depth += 1
                    continue readValue
                }
            case ASCII.quote:
                value = .string(try parseString())
            case ASCII.minus, ASCII.zero...ASCII.nine:
                value = try parseNumber()
            default:
                value = try parseLiteral()
            }

            // Store the value in its container; close every container that ends after it.
            while true {
                guard depth > 0 else { return value }
                let isArray = current.isArray
                current.values.append(value)
                skipWhitespace()
                guard i < n else {
                    throw unexpectedEnd(expecting: isArray ? "',' or ']'" : "',' or '}'")
                }
                if p[i] == ASCII.comma {
                    i += 1
                    if isArray {
                        skipWhitespace()
                        if i < n && p[i] == ASCII.closeBracket { throw trailingComma() }
                    } else {
                        current.keys.append(try parseKey(afterComma: true))
                    }
                    continue readValue
                } else if p[i] == (isArray ? ASCII.closeBracket : ASCII.closeBrace) {
                    i += 1
                    value = .table(current.finish())
                    depth -= 1
                    if depth > 0 { current = outer.removeLast() }
                } else {
                    throw unexpected(expecting: isArray ? "',' or ']'" : "',' or '}'")
                }
            }
        }
    }

    /// Reads `"key" :` (with the whitespace around it).
    private mutating func parseKey(afterComma: Bool) throws(JSONError) -> LuaValue {
        skipWhitespace()
        guard i < n else { throw unexpectedEnd(expecting: "a string key") }
        guard p[i] == ASCII.quote else {
            if afterComma && p[i] == ASCII.closeBrace { throw trailingComma() }
            throw unexpected(expecting: "a string key in double quotes")
        }
        let key = LuaValue.string(try parseString())
        skipWhitespace()
        guard i < n else { throw unexpectedEnd(expecting: "':'") }
        guard p[i] == ASCII.colon else { throw unexpected(expecting: "':' after the key") }
        i += 1
        return key
    }

    /// Reads a string starting at the opening quote.
    private mutating func parseString() throws(JSONError) -> [UInt8] {
        let open = i
        i += 1
        var runStart = i
        // Fast path: no escapes, one copy.
        while i < n {
            let c = p[i]
            if c == ASCII.quote {
                let string = copy(runStart, i)
                i += 1
                return string
            }
            if c == ASCII.backslash || c < 0x20 { break }
            i += 1
        }
        var out: [UInt8] = []
        out.reserveCapacity(i - runStart + 16)
        while true {
            guard i < n else { throw error("unterminated string starting", at: open) }
            let c = p[i]
            if c == ASCII.quote {
                out.append(contentsOf: bytes(runStart, i))
                i += 1
                return out
            }
            if c < 0x20 {
                throw error(
                    "unescaped control character \(ASCII.codePointName(UInt32(c))) in string",
                    at: i, hint: "write it as an escape such as \\n, \\t or \\u00XX")
            }
            guard c == ASCII.backslash else {
                i += 1
                continue
            }
            out.append(contentsOf: bytes(runStart, i))
            let escape = i
            i += 1
            guard i < n else { throw error("unterminated string starting", at: open) }
            switch p[i] {
            case ASCII.quote, ASCII.backslash, ASCII.slash: out.append(p[i])
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(ASCII.newline)
            case UInt8(ascii: "r"): out.append(ASCII.carriageReturn)
            case UInt8(ascii: "t"): out.append(ASCII.tab)
            case UInt8(ascii: "u"):
                i += 1
                var scalar = try hex4(escapeAt: escape)
                i += 4
                if scalar >= 0xD800 && scalar <= 0xDBFF {
                    // A high surrogate; it needs a low surrogate escape right after it.
                    if i + 1 < n && p[i] == ASCII.backslash && p[i + 1] == UInt8(ascii: "u") {
                        let nextEscape = i
                        i += 2
                        let low = try hex4(escapeAt: nextEscape)
                        if low >= 0xDC00 && low <= 0xDFFF {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                            i += 4
                        } else {
                            scalar = 0xFFFD
                            i = nextEscape  // read the next escape on its own
                        }
                    } else {
                        scalar = 0xFFFD
                    }
                } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                    scalar = 0xFFFD
                }
                appendUTF8(scalar, to: &out)
                runStart = i
                continue
            default:
                throw error(
                    "invalid escape '\\\(describeByte(p[i]))' in string", at: escape,
                    hint: "valid escapes are \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX")
            }
            i += 1
            runStart = i
        }
    }

    /// The 4 hex digits at `i` (after `\u`).
    private func hex4(escapeAt escape: Int) throws(JSONError) -> UInt32 {
        var value: UInt32 = 0
        for k in 0..<4 {
            guard i + k < n else {
                throw error("invalid \\u escape in string", at: escape, hint: "expected 4 hex digits")
            }
            let c = p[i + k]
            let digit: UInt8
            switch c {
            case ASCII.zero...ASCII.nine: digit = c - ASCII.zero
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
            default:
                throw error("invalid \\u escape in string", at: escape, hint: "expected 4 hex digits")
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    private mutating func parseNumber() throws(JSONError) -> LuaValue {
        let start = i
        let negative = p[i] == ASCII.minus
        if negative { i += 1 }
        guard i < n, ASCII.isDigit(p[i]) else {
            throw error("invalid number", at: start, hint: "expected a digit after '-'")
        }
        var integer: Int64 = 0
        var overflow = false
        if p[i] == ASCII.zero {
            i += 1
            if i < n && ASCII.isDigit(p[i]) {
                throw error("invalid number", at: start, hint: "leading zeros are not allowed")
            }
        } else {
            while i < n && ASCII.isDigit(p[i]) {
                if !overflow {
                    let digit = Int64(p[i] - ASCII.zero)
                    let (times10, o1) = integer.multipliedReportingOverflow(by: 10)
                    // Accumulate negative numbers downwards so that Int64.min fits.
                    let (sum, o2) =
                        negative ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
                    if o1 || o2 { overflow = true } else { integer = sum }
                }
                i += 1
            }
        }
        var isFloat = false
        if i < n && p[i] == ASCII.dot {
            isFloat = true
            i += 1
            guard i < n, ASCII.isDigit(p[i]) else {
                throw error("invalid number", at: start, hint: "expected a digit after '.'")
            }
            while i < n && ASCII.isDigit(p[i]) { i += 1 }
        }
        if i < n && (p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E")) {
            isFloat = true
            i += 1
            if i < n && (p[i] == ASCII.plus || p[i] == ASCII.minus) { i += 1 }
            guard i < n, ASCII.isDigit(p[i]) else {
                throw error("invalid number", at: start, hint: "expected a digit in the exponent")
            }
            while i < n && ASCII.isDigit(p[i]) { i += 1 }
        }
        if !isFloat && !overflow { return .integer(integer) }
        let text = String(decoding: bytes(start, i), as: UTF8.self)
        guard let d = Double(text) else { throw error("invalid number", at: start) }
        return .number(d)
    }

    /// `true`, `false` or `null`.
    private mutating func parseLiteral() throws(JSONError) -> LuaValue {
        switch p[i] {
        case UInt8(ascii: "t") where matches("true"):
            i += 4
            return .boolean(true)
        case UInt8(ascii: "f") where matches("false"):
            i += 5
            return .boolean(false)
        case UInt8(ascii: "n") where matches("null"):
            i += 4
            return .nil
        default:
            break
        }
        if ASCII.isWordCharacter(p[i]) {
            var end = i
            while end < n && ASCII.isWordCharacter(p[end]) && end - i < 40 { end += 1 }
            let word = String(decoding: bytes(i, end), as: UTF8.self)
            throw error("unexpected word '\(word)'", at: i, hint: "expected a value; strings need double quotes")
        }
        throw unexpected(expecting: "a value")
    }

    private func matches(_ word: StaticString) -> Bool {
        var j = i
        for c in UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount) {
            guard j < n, p[j] == c else { return false }
            j += 1
        }
        return true
    }

    // MARK: Errors

    private func error(_ what: String, at position: Int, hint: String? = nil) -> JSONError {
        let (line, column) = location(of: position)
        var message = "JSON: \(what) at line \(line), column \(column)"
        if let hint { message += " (\(hint))" }
        return JSONError(message: message)
    }

    private func unexpected(expecting: String) -> JSONError {
        error("unexpected \(describe(at: i))", at: i, hint: "expected \(expecting)")
    }

    private func unexpectedEnd(expecting: String) -> JSONError {
        error("unexpected end of input", at: i, hint: "expected \(expecting)")
    }

    private func trailingComma() -> JSONError {
        error("unexpected \(describe(at: i)) after ','", at: i, hint: "trailing commas are not allowed")
    }

    /// 1-based line and column (in characters, counting UTF-8 lead bytes) of a byte offset.
    private func location(of position: Int) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        var j = 0
        while j < position && j < n {
            if p[j] == ASCII.newline {
                line += 1
                column = 1
            } else if p[j] & 0xC0 != 0x80 {
                column += 1
            }
            j += 1
        }
        return (line, column)
    }

    /// "character 'x'", "character \"'\"", "control character U+0000", "character 'é'",
    /// "byte 0xFF".
    private func describe(at j: Int) -> String {
        let c = p[j]
        if c < 0x20 || c == 0x7F { return "control character " + ASCII.codePointName(UInt32(c)) }
        if c < 0x80 { return c == UInt8(ascii: "'") ? "character \"'\"" : "character '\(describeByte(c))'" }
        let (length, valid) = utf8Sequence(p, n, j)
        if valid {
            return "character '" + String(decoding: bytes(j, j + length), as: UTF8.self) + "'"
        }
        return "byte 0x" + String(c, radix: 16, uppercase: true)
    }

    /// A printable rendering of one byte for messages.
    private func describeByte(_ c: UInt8) -> String {
        if c >= 0x20 && c < 0x7F { return String(Character(Unicode.Scalar(c))) }
        if c < 0x80 { return ASCII.codePointName(UInt32(c)) }
        return "0x" + String(c, radix: 16, uppercase: true)
    }
}
