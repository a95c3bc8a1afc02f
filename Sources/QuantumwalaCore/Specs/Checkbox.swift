import Glibc

/// Sets the state character of one task's checkbox in a tasks.md, and nothing else: every
/// other byte of the file stays as it was. The new file is written beside the old one and
/// renamed over it (a reader sees the old file or the new, never half of one), under an
/// exclusive lock on the folder, so two writers at once each see the other's change.
public enum Checkbox {
    public struct Failure: Error, Sendable {
        public let message: String
    }

    /// Sets the checkbox on line `line` (1-based), which must still name `id`, to `state`
    /// (one ASCII character). Returns the character it replaced.
    public static func set(path: String, line: Int, id: String, state: UInt8) throws(Failure) -> UInt8 {
        guard state >= 0x20 && state < 0x7f else { throw Failure(message: "a checkbox state is one ASCII character") }
        let dir = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let dirFd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirFd >= 0 else { throw Failure(message: "cannot open \(dir): \(errnoText(errno))") }
        defer { close(dirFd) }
        while flock(dirFd, LOCK_EX) != 0 {
            if errno != EINTR { throw Failure(message: "cannot lock \(dir): \(errnoText(errno))") }
        }
        defer { flock(dirFd, LOCK_UN) }
        guard var bytes = readAll(path) else { throw Failure(message: "cannot read \(path): \(errnoText(errno))") }
        // the line's bounds
        var start = 0, n = 1
        while n < line {
            guard let nl = bytes[start...].firstIndex(of: 10) else { throw Failure(message: "\(path): no line \(line)") }
            start = nl + 1
            n += 1
        }
        let end = bytes[start...].firstIndex(of: 10) ?? bytes.count
        let text = bytes[start..<end]
        // "- [ ]", "* [x]", "+ [-]" after the indent
        var i = text.startIndex
        while i < end && (bytes[i] == 32 || bytes[i] == 9) { i += 1 }
        guard i + 4 < end + 1, [45, 42, 43].contains(bytes[i]), i + 1 < end, bytes[i + 1] == 32 else {
            throw Failure(message: "\(path):\(line): not a checkbox line")
        }
        var j = i + 1
        while j < end && bytes[j] == 32 { j += 1 }
        guard j + 2 < end, bytes[j] == 91, bytes[j + 2] == 93 else { throw Failure(message: "\(path):\(line): not a checkbox line") }
        guard containsWord(text, Array(id.utf8)) || !lineHasId(text) else {
            throw Failure(message: "\(path):\(line): the line no longer holds task \(id) (the file changed)")
        }
        let old = bytes[j + 1]
        if old == state { return old }
        bytes[j + 1] = state
        // write beside, then rename over
        var template = Array((path + ".qw-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw Failure(message: "cannot write beside \(path): \(errnoText(errno))") }
        let tmp = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var st = stat()
        if stat(path, &st) == 0 { fchmod(fd, st.st_mode & 0o7777) }
        let wrote = bytes.withUnsafeBytes { writeAll(fd, $0) }
        let synced = fsync(fd) == 0
        close(fd)
        guard wrote && synced, rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw Failure(message: "cannot write \(path): \(errnoText(e))")
        }
        return old
    }

    private static func readAll(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { return out }
            out += buf[0..<n]
        }
    }

    /// Whether `word` occurs in `text` with no letter, digit or dot right after it.
    private static func containsWord(_ text: ArraySlice<UInt8>, _ word: [UInt8]) -> Bool {
        guard !word.isEmpty, text.count >= word.count else { return false }
        var i = text.startIndex
        while i + word.count <= text.endIndex {
            if text[i..<(i + word.count)].elementsEqual(word) {
                let after = i + word.count < text.endIndex ? text[i + word.count] : 32
                let before = i > text.startIndex ? text[i - 1] : 32
                let isWordByte = { (b: UInt8) in (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) }
                if !isWordByte(before) && !(isWordByte(after) || (after == 46 && i + word.count + 1 < text.endIndex
                                                                   && isWordByte(text[i + word.count + 1]))) {
                    return true
                }
            }
            i += 1
        }
        return false
    }

    /// Whether a checkbox line carries an id at all (a `#### Task` heading's checkbox does not).
    private static func lineHasId(_ text: ArraySlice<UInt8>) -> Bool {
        guard let close = text.firstIndex(of: 93) else { return false }
        var i = close + 1
        while i < text.endIndex && (text[i] == 32 || text[i] == 42) { i += 1 }
        guard i < text.endIndex else { return false }
        let b = text[i]
        return (b >= 48 && b <= 57) || b == 84 || b == 116
    }
}
