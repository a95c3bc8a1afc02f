import Glibc
import Synchronization

/// Where a workflow's task tees its output: `ROOT/.qw/logs/workflows/WORKFLOW/TASK.log`, the
/// names made safe for a file name (letters, digits, `-`, `_` and `.` kept, never a leading
/// dot, at most 60 characters) and followed by a hash of the name when they had to change,
/// so two tasks never share a file. The engine writes there; the dashboard reads from there.
public enum TaskLogs {
    public static func path(root: String, workflow: String, task: String) -> String {
        root + "/.qw/logs/workflows/" + safe(workflow) + "/" + safe(task) + ".log"
    }

    /// The folders made already (a workflow of many tasks makes its folder once).
    private static let made = Mutex<Set<String>>([])

    static func safe(_ name: String) -> String {
        var out = ""
        for (i, c) in name.unicodeScalars.enumerated() {
            let ok = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "-" || c == "_" || (c == "." && i > 0)
            out.unicodeScalars.append(ok ? c : "_")
        }
        if out == name && !out.isEmpty && out.count <= 60 { return out }
        // FNV-1a of the name: the same name always maps to the same file
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        let hex = String(h, radix: 16)
        return String(out.prefix(60)) + "-" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Makes the log's folder and empties the log (a new run of the task starts it again);
    /// the path, or nil when the folder cannot be made.
    public static func prepare(root: String, workflow: String, task: String) -> String? {
        let p = path(root: root, workflow: workflow, task: task)
        let folder = String(p[..<p.lastIndex(of: "/")!])
        if !made.withLock({ $0.contains(folder) }) {
            var dir = ""
            for part in folder.split(separator: "/") {
                dir += "/" + part
                if mkdir(dir, 0o755) != 0 && errno != EEXIST { return nil }
            }
            made.withLock { _ = $0.insert(folder) }
        }
        let fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return nil }
        close(fd)
        return p
    }
}
