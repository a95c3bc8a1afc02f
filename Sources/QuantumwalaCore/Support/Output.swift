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
    // Bytes, not Characters: this runs at every start (`--lua-memory`), and String's
    // upper-casing and Character comparisons load Unicode tables.
    var t = Array(text.utf8).map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }[...]
    while t.first == 32 { t.removeFirst() }
    while t.last == 32 { t.removeLast() }
    if t.count >= 2, t[t.endIndex - 2] == UInt8(ascii: "I"), t.last == UInt8(ascii: "B") {
        t.removeLast(2)
    } else if t.last == UInt8(ascii: "B") {
        t.removeLast()
    }
    var power = 0
    if let last = t.last, let p = Array("KMGT".utf8).firstIndex(of: last) {
        power = p + 1
        t.removeLast()
    }
    guard !t.isEmpty else { return nil }
    if t.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
        var n = 0
        for d in t {
            let (times10, o1) = n.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(d - 48))
            guard !o1, !o2 else { return nil }
            n = sum
        }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: 1 << (10 * power))
        return overflow ? nil : bytes
    }
    guard let v = Double(String(decoding: t, as: UTF8.self)), v >= 0, v.isFinite,
          v * Double(1 << (10 * power)) < Double(Int.max) else { return nil }
    return Int(v * Double(1 << (10 * power)))
}
