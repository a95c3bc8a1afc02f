import LuaHost
import Testing

@testable import QuantumwalaLua

// MARK: - Helpers

private func encoded(_ value: LuaValue, pretty: Bool = false) throws -> String {
    String(decoding: try JSON.encode(value, pretty: pretty), as: UTF8.self)
}

private func decoded(_ text: String) throws -> LuaValue {
    try JSON.decode(Array(text.utf8))
}

/// The message of the error decoding `text` throws (and records an issue if it does not throw).
private func decodeError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    let error = #expect(throws: JSONError.self, sourceLocation: sourceLocation) {
        try JSON.decode(Array(text.utf8))
    }
    return error?.message
}

/// The message of the error encoding `value` throws (and records an issue if it does not throw).
private func encodeError(_ value: LuaValue, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    let error = #expect(throws: JSONError.self, sourceLocation: sourceLocation) {
        try JSON.encode(value)
    }
    return error?.message
}

/// `count` arrays nested around the integer 1.
private func nestedArrays(_ count: Int) -> LuaValue {
    var value: LuaValue = 1
    for _ in 0..<count { value = .array([value]) }
    return value
}

/// A small deterministic generator (SplitMix64), so failures can be reproduced.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A random value that JSON represents exactly: arrays without holes, objects with string
/// keys, finite numbers and valid UTF-8 strings.
private func randomValue(_ rng: inout SplitMix64, depth: Int = 0) -> LuaValue {
    switch Int.random(in: 0..<(depth < 4 ? 8 : 5), using: &rng) {
    case 0: return .boolean(Bool.random(using: &rng))
    case 1:
        let choices: [Int64] = [0, -1, .max, .min, 1 << 53, Int64.random(in: .min ... .max, using: &rng)]
        return .integer(choices.randomElement(using: &rng)!)
    case 2:
        while true {
            let d = Double(bitPattern: UInt64.random(in: 0 ... .max, using: &rng))
            if d.isFinite { return .number(d) }
        }
    case 3: return .number(Double(Int.random(in: -1000...1000, using: &rng)) / 8)
    case 4: return .string(randomString(&rng))
    case 5, 6:
        let count = Int.random(in: 0...5, using: &rng)
        return .array((0..<count).map { _ in randomValue(&rng, depth: depth + 1) })
    default:
        var table: [LuaValue: LuaValue] = [:]
        for _ in 0..<Int.random(in: 1...5, using: &rng) {
            table[.string(randomString(&rng))] = randomValue(&rng, depth: depth + 1)
        }
        return .table(table)
    }
}

private func randomString(_ rng: inout SplitMix64) -> [UInt8] {
    let pools: [ClosedRange<UInt32>] = [0...0x7F, 0...0x1F, 0x80...0x7FF, 0x800...0xD7FF, 0xE000...0xFFFF, 0x10000...0x10FFFF]
    var s = ""
    for _ in 0..<Int.random(in: 0...12, using: &rng) {
        let pool = pools.randomElement(using: &rng)!
        s.unicodeScalars.append(Unicode.Scalar(UInt32.random(in: pool, using: &rng))!)
    }
    return Array(s.utf8)
}

// MARK: - Tests

@Suite("JSON")
struct JSONTests {
    // MARK: Round trips

    @Test func nestedValueRoundTrips() throws {
        let value: LuaValue = .table([
            "name": "quantumwala",
            "version": 3,
            "ratio": 0.75,
            "enabled": true,
            "disabled": false,
            "steps": .array([
                .table(["cmd": "make", "args": .array(["-j", 8])]),
                .table(["cmd": "test", "timeout": 2.5, "env": .table(["A": "1", "B": ""])]),
            ]),
            "matrix": .array([.array([1, 2]), .array([3.5, .array(["deep"])])]),
        ])
        for pretty in [false, true] {
            let text = try JSON.encode(value, pretty: pretty)
            #expect(try JSON.decode(text) == value)
        }
    }

    @Test func randomValuesRoundTrip() throws {
        var rng = SplitMix64(state: 20_240_601)
        for _ in 0..<300 {
            let value = randomValue(&rng)
            #expect(try JSON.decode(JSON.encode(value)) == value)
            #expect(try JSON.decode(JSON.encode(value, pretty: true)) == value)
        }
    }

    // MARK: Numbers

    @Test func encodesIntegersAndFloatsDistinctly() throws {
        #expect(try encoded(1) == "1")
        #expect(try encoded(1.0) == "1.0")
        #expect(try encoded(2.0) == "2.0")
        #expect(try encoded(-7) == "-7")
        #expect(try encoded(.integer(1 << 53)) == "9007199254740992")
        #expect(try encoded(.number(9_007_199_254_740_992)) == "9007199254740992.0")
        #expect(try encoded(.integer(.max)) == "9223372036854775807")
        #expect(try encoded(.integer(.min)) == "-9223372036854775808")
        #expect(try encoded(.number(-0.0)) == "-0.0")
        #expect(try encoded(0.1) == "0.1")
        #expect(try encoded(1e300) == "1e+300")
        #expect(try encoded(1.5e-7) == "1.5e-07")
    }

    @Test func decodesIntegersAndFloatsDistinctly() throws {
        #expect(try decoded("1") == .integer(1))
        #expect(try decoded("1.0") == .number(1))
        #expect(try decoded("1e2") == .number(100))
        #expect(try decoded("1E+2") == .number(100))
        #expect(try decoded("25e-2") == .number(0.25))
        #expect(try decoded("-0") == .integer(0))
        #expect(try decoded("9007199254740993") == .integer(9_007_199_254_740_993))
        #expect(try decoded("9223372036854775807") == .integer(.max))
        #expect(try decoded("-9223372036854775808") == .integer(.min))
        #expect(try decoded("1e300") == .number(1e300))
        #expect(try decoded("1e400") == .number(.infinity))

        guard case .number(let negativeZero) = try decoded("-0.0") else {
            Issue.record("-0.0 did not decode to a float")
            return
        }
        #expect(negativeZero == 0 && negativeZero.sign == .minus)
    }

    @Test func integersBeyondInt64BecomeDoubles() throws {
        #expect(try decoded("9223372036854775808") == .number(9_223_372_036_854_775_808))
        #expect(try decoded("-9223372036854775809") == .number(-9.223372036854775808e18))
        #expect(try decoded("123456789012345678901234567890") == .number(1.2345678901234568e29))
    }

    @Test(arguments: [
        0.1, 1.0 / 3, 2.0, 1e300, .leastNonzeroMagnitude, 2.2250738585072014e-308, 9_007_199_254_740_992,
        9_007_199_254_740_994, 1.7976931348623157e308, -123456.789, 1e-7, 1e16, 4.35,
    ])
    func floatsRoundTripBitForBit(_ d: Double) throws {
        let back = try JSON.decode(JSON.encode(.number(d)))
        guard case .number(let e) = back else {
            Issue.record("\(d) came back as \(back)")
            return
        }
        #expect(e.bitPattern == d.bitPattern)
    }

    @Test func negativeZeroRoundTrips() throws {
        guard case .number(let d) = try JSON.decode(JSON.encode(.number(-0.0))) else {
            Issue.record("-0.0 did not come back as a float")
            return
        }
        #expect(d.sign == .minus)
    }

    // MARK: Strings

    @Test func escapesQuotesBackslashesAndControlCharacters() throws {
        #expect(try encoded("\"\\/\n\t\r\u{08}\u{0C}\u{01}\u{1F}\u{7F}") == #""\"\\/\n\t\r\b\f\u0001\u001f\#u{7F}""#)
        #expect(try encoded(.string([0x61, 0x00, 0x62])) == #""a\u0000b""#)
    }

    @Test func embeddedZeroBytesRoundTrip() throws {
        let value = LuaValue.string([0, 0x61, 0, 0, 0x62, 0])
        #expect(try JSON.decode(JSON.encode(value)) == value)
        #expect(try decoded(#""\u0000x\u0000""#) == .string([0, 0x78, 0]))
    }

    @Test func unicodeIsCopiedAsUTF8() throws {
        #expect(try encoded("héllo ✓ 😀") == "\"héllo ✓ 😀\"")
        #expect(try decoded("\"héllo ✓ 😀\"") == "héllo ✓ 😀")
    }

    @Test func invalidUTF8IsReplacedWhenEncoding() throws {
        let fffd: [UInt8] = [0xEF, 0xBF, 0xBD]
        let q: [UInt8] = [0x22]
        #expect(try JSON.encode(.string([0x61, 0xFF, 0x62])) == q + [0x61] + fffd + [0x62] + q)
        // A truncated sequence is one replacement; an overlong or surrogate one is one per byte.
        #expect(try JSON.encode(.string([0xE2, 0x82])) == q + fffd + q)
        #expect(try JSON.encode(.string([0xC0, 0xAF])) == q + fffd + fffd + q)
        #expect(try JSON.encode(.string([0xED, 0xA0, 0x80])) == q + fffd + fffd + fffd + q)
        #expect(try JSON.encode(.string([0xE2, 0x82, 0x41])) == q + fffd + [0x41] + q)
    }

    @Test func invalidUTF8RepairMatchesTheStandardLibrary() throws {
        var rng = SplitMix64(state: 7)
        let interesting: [UInt8] = [0x41, 0x80, 0xBF, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0xA0, 0x9F, 0x8F, 0x90]
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 1...8, using: &rng)).map { _ in interesting.randomElement(using: &rng)! }
            let repaired = Array(String(decoding: bytes, as: UTF8.self).utf8)
            #expect(try JSON.decode(JSON.encode(.string(bytes))) == .string(repaired), "bytes \(bytes)")
        }
    }

    @Test func decodesAllEscapes() throws {
        #expect(try decoded(#""\"\\\/\b\f\n\r\t""#) == "\"\\/\u{08}\u{0C}\n\r\t")
        #expect(try decoded(#""\u0041\u00e9\u20AC\u00E9""#) == "Aé€é")
    }

    @Test func decodingKeepsRawBytes() throws {
        #expect(try JSON.decode([0x22, 0xFF, 0xC3, 0x22]) == .string([0xFF, 0xC3]))
    }

    @Test func surrogatePairs() throws {
        #expect(try decoded(#""\ud83d\ude00""#) == "😀")
        #expect(try decoded(#""\uD834\uDD1E!""#) == "𝄞!")
        // Lone or misordered surrogates become U+FFFD; the text after them is kept.
        #expect(try decoded(#""\ud83dx""#) == "\u{FFFD}x")
        #expect(try decoded(#""\ud83d""#) == "\u{FFFD}")
        #expect(try decoded(#""\ude00""#) == "\u{FFFD}")
        #expect(try decoded(#""\ud83d\u0041""#) == "\u{FFFD}A")
        #expect(try decoded(#""\ude00\ud83d""#) == "\u{FFFD}\u{FFFD}")
        #expect(try decoded(#""\ud83d\ud83d\ude00""#) == "\u{FFFD}😀")
        // Characters outside the BMP are written as UTF-8, not as escapes.
        #expect(try encoded("😀") == "\"😀\"")
    }

    // MARK: Tables

    @Test func arraysObjectsAndEmptyTables() throws {
        #expect(try encoded(.array([1, "two", 3.0])) == #"[1,"two",3.0]"#)
        #expect(try encoded(.table([2: "b", 1: "a"])) == #"["a","b"]"#)
        #expect(try encoded(.table([1: "a", 3: "c"])) == #"{"1":"a","3":"c"}"#)
        #expect(try encoded(.table([0: "z", 1: "a"])) == #"{"0":"z","1":"a"}"#)
        #expect(try encoded(.table([-1: true])) == #"{"-1":true}"#)
        #expect(try encoded(.table([1: "a", "n": "b"])) == #"{"1":"a","n":"b"}"#)
        #expect(try encoded(.table([:])) == "{}")
        #expect(try encoded(.array([.table([:]), .array([])])) == "[{},{}]")
        #expect(try encoded(nil) == "null")
        #expect(try encoded(true) == "true")

        #expect(try decoded("[]") == .table([:]))
        #expect(try decoded(" { } ") == .table([:]))
        #expect(try decoded(#"[1,"two",3.0]"#) == .array([1, "two", 3.0]))
        #expect(try decoded(#"{"1":true}"#) == .table(["1": true]))
    }

    @Test func nullsAreDropped() throws {
        #expect(try decoded("null") == .nil)
        #expect(try decoded("[1,null,3]") == .table([1: 1, 3: 3]))
        #expect(try decoded("[null]") == .table([:]))
        #expect(try decoded(#"{"a":null,"b":1}"#) == .table(["b": 1]))
        #expect(try decoded(#"{"a":1,"a":2}"#) == .table(["a": 2]))
        #expect(try decoded(#"{"a":1,"a":null}"#) == .table([:]))
    }

    @Test func keysAreSortedByBytes() throws {
        let table: LuaValue = .table([
            "b": 1, "a": 2, "B": 3, "é": 4, "z": 5, 10: 6, 2: 7, "": 8, "ab": 9,
        ])
        let expected = #"{"":8,"10":6,"2":7,"B":3,"a":2,"ab":9,"b":1,"z":5,"é":4}"#
        #expect(try encoded(table) == expected)
    }

    @Test func whitespaceAndByteOrderMark() throws {
        let text = "\u{FEFF} \t\r\n{ \"a\" :\n[ 1 ,\t2 ] , \"b\" : { } }\r\n"
        #expect(try decoded(text) == .table(["a": .array([1, 2]), "b": .table([:])]))
    }

    // MARK: Pretty output

    @Test func prettyOutputExactText() throws {
        let value: LuaValue = .table([
            "name": "qw",
            "tags": .array(["a", "b"]),
            "empty": .table([:]),
            "n": 1.5,
            "nested": .table(["ok": true, "list": .array([1, .array([2, 3])])]),
        ])
        let expected = """
            {
              "empty": {},
              "n": 1.5,
              "name": "qw",
              "nested": {
                "list": [
                  1,
                  [
                    2,
                    3
                  ]
                ],
                "ok": true
              },
              "tags": [
                "a",
                "b"
              ]
            }
            """
        #expect(try encoded(value, pretty: true) == expected)
        #expect(try encoded(value) == #"{"empty":{},"n":1.5,"name":"qw","nested":{"list":[1,[2,3]],"ok":true},"tags":["a","b"]}"#)
        #expect(try encoded(.array(["x"]), pretty: true) == "[\n  \"x\"\n]")
        #expect(try encoded(.table([:]), pretty: true) == "{}")
        #expect(try encoded(42, pretty: true) == "42")
    }

    // MARK: Decoding errors

    @Test func trailingCommas() {
        #expect(decodeError("[1,2,]") == "JSON: unexpected character ']' after ',' at line 1, column 6 (trailing commas are not allowed)")
        #expect(
            decodeError("{\"a\": 1,\n  \"b\": 2,\n}")
                == "JSON: unexpected character '}' after ',' at line 3, column 1 (trailing commas are not allowed)")
    }

    @Test func unterminatedString() {
        #expect(decodeError(#"{"name": "abc"#) == "JSON: unterminated string starting at line 1, column 10")
        #expect(decodeError("[\n\"abc\\") == "JSON: unterminated string starting at line 2, column 1")
    }

    @Test func badEscapes() {
        #expect(
            decodeError(#"["ok", "a\qb"]"#)
                == #"JSON: invalid escape '\q' in string at line 1, column 10 (valid escapes are \" \\ \/ \b \f \n \r \t \uXXXX)"#)
        #expect(decodeError(#""\u12G4""#) == #"JSON: invalid \u escape in string at line 1, column 2 (expected 4 hex digits)"#)
        #expect(decodeError(#""\u12"#) == #"JSON: invalid \u escape in string at line 1, column 2 (expected 4 hex digits)"#)
        #expect(
            decodeError("\"a\tb\"")
                == #"JSON: unescaped control character U+0009 in string at line 1, column 3 (write it as an escape such as \n, \t or \u00XX)"#)
    }

    @Test func trailingGarbage() {
        #expect(decodeError(#"{"a": 1} x"#) == "JSON: unexpected character 'x' after the end of the JSON value at line 1, column 10")
        #expect(decodeError("[1]\n[2]") == "JSON: unexpected character '[' after the end of the JSON value at line 2, column 1")
        #expect(decodeError("truex") == "JSON: unexpected character 'x' after the end of the JSON value at line 1, column 5")
    }

    @Test func deepNesting() throws {
        let ok = String(repeating: "[", count: 1000) + "1" + String(repeating: "]", count: 1000)
        #expect(try decoded(ok) == nestedArrays(1000))
        let tooDeep = String(repeating: "[", count: 1001) + String(repeating: "]", count: 1001)
        #expect(decodeError(tooDeep) == "JSON: nesting deeper than 1000 levels at line 1, column 1001")
        let tooDeepObjects = String(repeating: #"{"a":"#, count: 1001) + "1" + String(repeating: "}", count: 1001)
        #expect(decodeError(tooDeepObjects) == "JSON: nesting deeper than 1000 levels at line 1, column 5001")
    }

    @Test func lineAndColumnCountCharacters() {
        #expect(
            decodeError("{\n  \"a\": [1, 2],\n  \"b\": tru\n}")
                == "JSON: unexpected word 'tru' at line 3, column 8 (expected a value; strings need double quotes)")
        #expect(decodeError("[\"é\", *]") == "JSON: unexpected character '*' at line 1, column 7 (expected a value)")
    }

    @Test func otherMalformedInputs() {
        #expect(decodeError("") == "JSON: unexpected end of input at line 1, column 1 (expected a value)")
        #expect(decodeError("  \n ") == "JSON: unexpected end of input at line 2, column 2 (expected a value)")
        #expect(decodeError("[1, 2") == "JSON: unexpected end of input at line 1, column 6 (expected ',' or ']')")
        #expect(decodeError("[1 2]") == "JSON: unexpected character '2' at line 1, column 4 (expected ',' or ']')")
        #expect(decodeError(#"{"a" 1}"#) == "JSON: unexpected character '1' at line 1, column 6 (expected ':' after the key)")
        #expect(decodeError("{1: 2}") == "JSON: unexpected character '1' at line 1, column 2 (expected a string key in double quotes)")
        #expect(decodeError("['a']") == "JSON: unexpected character \"'\" at line 1, column 2 (expected a value)")
        #expect(decodeError("[NaN]") == "JSON: unexpected word 'NaN' at line 1, column 2 (expected a value; strings need double quotes)")
        #expect(decodeError("[01]") == "JSON: invalid number at line 1, column 2 (leading zeros are not allowed)")
        #expect(decodeError("[1.]") == "JSON: invalid number at line 1, column 2 (expected a digit after '.')")
        #expect(decodeError("-") == "JSON: invalid number at line 1, column 1 (expected a digit after '-')")
        #expect(decodeError("1e+") == "JSON: invalid number at line 1, column 1 (expected a digit in the exponent)")
        #expect(decodeError("+1") == "JSON: unexpected character '+' at line 1, column 1 (expected a value)")
        #expect(decodeError("[\u{0}]") == "JSON: unexpected control character U+0000 at line 1, column 2 (expected a value)")
        #expect(decodeError("[1,,2]") == "JSON: unexpected character ',' at line 1, column 4 (expected a value)")
    }

    // MARK: Encoding errors

    @Test func nonFiniteNumbersAreRefused() {
        #expect(encodeError(.number(.infinity)) == "JSON: cannot encode a number that is not finite (inf)")
        #expect(encodeError(.number(-.infinity)) == "JSON: cannot encode a number that is not finite (-inf)")
        #expect(
            encodeError(.table(["a": .table(["x": .array([1, .number(.nan)])])]))
                == "JSON: cannot encode a number that is not finite (nan) at $.a.x[2]")
        #expect(
            encodeError(.table(["my key": .table([7: .number(.infinity)])]))
                == #"JSON: cannot encode a number that is not finite (inf) at $["my key"][7]"#)
    }

    @Test func badKeysAreRefused() {
        #expect(encodeError(.table([true: 1])) == "JSON: table keys must be strings or integers (got boolean true)")
        #expect(encodeError(.table(["cfg": .table([1.5: "x"])])) == "JSON: table keys must be strings or integers (got number 1.5) at $.cfg")
        #expect(encodeError(.table([.table([:]): 1])) == "JSON: table keys must be strings or integers (got table)")
        #expect(encodeError(.table([1: "a", "1": "b"])) == #"JSON: table has both the integer key 1 and the string key "1""#)
    }

    @Test func encodingDepthLimit() throws {
        let ok = try encoded(nestedArrays(1000))
        #expect(ok == String(repeating: "[", count: 1000) + "1" + String(repeating: "]", count: 1000))
        #expect(encodeError(nestedArrays(1001)) == "JSON: nesting deeper than 1000 levels")
    }

    @Test func errorDescriptionIsTheMessage() {
        let error = JSONError(message: "JSON: something")
        #expect(error.description == "JSON: something")
        #expect("\(error)" == "JSON: something")
    }

    // MARK: Size

    @Test func decodesAFiveMegabyteDocumentQuickly() throws {
        var text: [UInt8] = Array("[".utf8)
        let count = 60_000
        for k in 0..<count {
            if k > 0 { text.append(UInt8(ascii: ",")) }
            text += Array(#"{"id":\#(k),"name":"item \#(k) \"q\"","tags":["a","b\n"],"score":\#(k).25,"ok":true,"none":null}"#.utf8)
        }
        text += Array("]".utf8)
        #expect(text.count > 5_000_000)

        let clock = ContinuousClock()
        var value: LuaValue = .nil
        let elapsed = try clock.measure { value = try JSON.decode(text) }
        guard case .table(let items) = value else {
            Issue.record("not a table")
            return
        }
        #expect(items.count == count)
        #expect(
            items[.integer(12_346)]
                == .table([
                    "id": 12_345, "name": "item 12345 \"q\"", "tags": .array(["a", "b\n"]), "score": 12_345.25, "ok": true,
                ]))
        // Generous, to stay reliable on a loaded machine; a debug build takes well under a second.
        #expect(elapsed < .seconds(5), "decoding 5 MB took \(elapsed)")

        let again = try JSON.encode(value)
        #expect(try JSON.decode(again) == value)
    }
}
