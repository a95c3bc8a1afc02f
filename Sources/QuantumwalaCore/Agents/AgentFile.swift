import Glibc
import Yams

/// An agent definition file (`.claude/agents/NAME.md`) as written: its YAML front matter,
/// the line of every key and list item, the prompt below it, and what keeps it from being
/// read at all. Which keys, tools and models are valid is policy, checked in stdlib.
///
/// The real CLI drops a file silently when its front matter is missing, unclosed or not
/// valid YAML; here each of these is a problem with the line it is on.
public struct AgentFile: Sendable {
    /// One front matter entry: a string, or a list of strings (YAML list or comma list).
    public struct Field: Sendable {
        public var key: String
        /// The value as text (a list joined by ", "); nil for a mapping or an empty value.
        public var text: String?
        /// The items of a list, or of a comma-separated string, each with its line.
        public var items: [(text: String, line: Int)]
        /// Whether the value was a YAML list.
        public var isList: Bool
        public var line: Int
    }

    public var path: String
    /// The file name without `.md`.
    public var stem: String
    public var fields: [Field] = []
    /// The body after the front matter (the agent's system prompt), and its first line.
    public var prompt = ""
    public var promptLine = 1
    /// Problems that keep the file from being read: (line, message).
    public var problems: [(line: Int, message: String)] = []

    /// The `.md` files of a folder, sorted; none when it does not exist.
    public static func files(in dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasSuffix(".md") && !name.hasPrefix(".") { out.append(dir + "/" + name) }
        }
        return out.sorted()
    }

    /// Reads and parses one file.
    public static func read(_ path: String) -> AgentFile {
        let base = path.split(separator: "/").last.map(String.init) ?? path
        var f = AgentFile(path: path, stem: base.hasSuffix(".md") ? String(base.dropLast(3)) : base)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            f.problems.append((1, "cannot read the file: \(errnoText(errno))"))
            return f
        }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += buf[0..<n]
        }
        close(fd)
        f.parse(bytes)
        return f
    }

    mutating func parse(_ bytes: [UInt8]) {
        if bytes.contains(0) { problems.append((1, "the file holds NUL bytes: not a text file")); return }
        var text = String(decoding: bytes, as: UTF8.self)
        if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        guard let first = lines.first, first.trimmingTrailingSpaces() == "---" else {
            problems.append((1, "no front matter: the file must start with a '---' line, then name, description and other keys, then '---'"))
            prompt = text
            return
        }
        guard let close = lines.indices.dropFirst().first(where: { lines[$0].trimmingTrailingSpaces() == "---" }) else {
            problems.append((1, "the front matter is not closed: no '---' line after line 1"))
            return
        }
        promptLine = close + 2
        prompt = lines[(close + 1)...].joined(separator: "\n")
        while prompt.hasPrefix("\n") { prompt.removeFirst() }
        let yaml = lines[1..<close].joined(separator: "\n")
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch let e as YamlError {
            problems.append(Self.describe(e))
            return
        } catch {
            problems.append((2, "bad YAML in the front matter: \(error)"))
            return
        }
        guard let node else {
            problems.append((2, "the front matter is empty"))
            return
        }
        guard let mapping = node.mapping else {
            problems.append(((node.mark?.line ?? 1) + 1, "the front matter must be keys and values (a YAML mapping)"))
            return
        }
        for (k, v) in mapping {
            let line = (k.mark?.line ?? 0) + 1
            guard let key = k.scalar?.string else {
                problems.append((line, "a front matter key must be a plain word"))
                continue
            }
            var field = Field(key: key, text: nil, items: [], isList: false, line: line)
            if let s = v.scalar {
                field.text = s.string
                // a comma list ("Read, Grep") keeps the line of its key
                field.items = s.string.split(separator: ",").map { (String($0).trimmingSpaces(), line) }.filter { !$0.0.isEmpty }
                if s.string.isEmpty && s.style == .plain { field.text = nil }
            } else if let seq = v.sequence {
                field.isList = true
                for item in seq {
                    let itemLine = (item.mark?.line ?? 0) + 1
                    guard let s = item.scalar?.string else {
                        problems.append((itemLine, "'\(key)' must be a list of names"))
                        continue
                    }
                    field.items.append((s, itemLine))
                }
                field.text = field.items.map(\.text).joined(separator: ", ")
            }
            fields.append(field)
        }
    }

    /// A YAML error as (line in the file, message): the front matter starts on line 2.
    static func describe(_ e: YamlError) -> (line: Int, message: String) {
        switch e {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            // libyaml notices an unclosed construct where the text ends: name where it began
            if let context, context.mark.line < mark.line {
                return (context.mark.line + 1, "bad YAML in the front matter: \(problem) (\(context.text) that starts here)")
            }
            return (mark.line + 1, "bad YAML in the front matter: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return (context.mark.line + 1, "duplicate key\(duplicates.count == 1 ? "" : "s") \(duplicates.map { "'\($0)'" }.joined(separator: ", ")) in the front matter")
        default:
            return (2, "bad YAML in the front matter: \(e)")
        }
    }
}

extension StringProtocol {
    func trimmingTrailingSpaces() -> String {
        var s = String(self)
        while let last = s.last, last == " " || last == "\t" { s.removeLast() }
        return s
    }

    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
