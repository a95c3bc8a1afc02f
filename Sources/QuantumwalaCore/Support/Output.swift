import Glibc

/// Writes all of `text` to a file descriptor (1: stdout, 2: stderr), unbuffered.
///
/// Lua's `print` and `io.write` go through C's stdout buffer; flush it first so that what
/// Lua printed and what qw writes come out in order.
public func writeAll(_ fd: Int32, _ text: String) {
    fflush(nil)
    var text = text
    text.withUTF8 { _ = writeAll(fd, UnsafeRawBufferPointer($0)) }
}

/// Writes all of `bytes` to a file descriptor; false on an error.
@discardableResult
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    var off = 0
    while off < bytes.count {
        let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        off += n
    }
    return true
}

/// Parses a size: plain bytes (`1048576`), or a number with K, M, G or T (powers of 1024,
/// an optional `B` or `iB` after it: `512M`, `1.5GiB`, `2gb`). Nil when it is not one.
public func parseByteSize(_ text: String) -> Int? {
    // ASCII upper case: String.uppercased() loads Unicode tables, a cost at every start
    var t = Substring(String(decoding: text.utf8.map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }, as: UTF8.self)).drop { $0 == " " }
    while t.last == " " { t.removeLast() }
    if t.hasSuffix("IB") { t.removeLast(2) } else if t.hasSuffix("B") { t.removeLast() }
    var multiplier = 1.0
    let powers: [Character] = ["K", "M", "G", "T"]
    if let last = t.last, let power = powers.firstIndex(of: last).map({ $0 + 1 }) {
        multiplier = Double(1 << (10 * power))
        t.removeLast()
    }
    guard !t.isEmpty, let v = Double(t), v >= 0, v.isFinite else { return nil }
    return Int(v * multiplier)
}
