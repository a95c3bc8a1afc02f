import Glibc

/// Processes found by a mark in their environment: what an agent run leaves behind.
///
/// The Claude Code CLI starts its Bash tool's commands in sessions and process groups of
/// their own, so killing the CLI's group leaves them running (reparented to PID 1), and a
/// subreaper could not tell whose they are. Every process of an agent run inherits
/// `NAME=VALUE` from its environment instead, so the processes of a run are found wherever
/// they went, and only those.
public enum MarkedProcesses {
    /// The live processes (not this one) whose environment holds `NAME=VALUE`, with VALUE.
    public static func scan(name: String) -> [(pid: Int32, value: String)] {
        let prefix = Array((name + "=").utf8)
        let me = getpid()
        var out: [(Int32, String)] = []
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while let e = readdir(dir) {
            let entry = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard let pid = Int32(entry), pid != me else { continue }
            let fd = open("/proc/\(pid)/environ", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            var env: [UInt8] = []
            while true {
                let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                env += buf[0..<n]
            }
            close(fd)
            // entries are NUL-separated: match the start of a whole entry
            var start = 0
            for i in 0...env.count where i == env.count || env[i] == 0 {
                if i - start > prefix.count && env[start..<(start + prefix.count)].elementsEqual(prefix) {
                    out.append((pid, String(decoding: env[(start + prefix.count)..<i], as: UTF8.self)))
                    break
                }
                start = i + 1
            }
        }
        return out
    }

    /// The live processes (not this one) whose environment holds `NAME=VALUE`.
    public static func find(name: String, value: String) -> [Int32] {
        scan(name: name).filter { $0.value == value }.map(\.pid)
    }

    /// Kills with SIGKILL the processes marked `NAME=VALUE`, and those marked by a run whose
    /// owner is gone: a value that starts with `PID-` where no process PID lives (what a
    /// `kill -9` of an earlier `qw` left running). Returns the pids it signalled.
    @discardableResult
    public static func kill(name: String, value: String) -> [Int32] {
        var pids: [Int32] = []
        for (pid, v) in scan(name: name) {
            var mine = v == value
            if !mine, let dash = v.firstIndex(of: "-"), let owner = Int32(v[..<dash]), owner > 0 {
                mine = Glibc.kill(owner, 0) != 0 && errno == ESRCH
            }
            if mine {
                Glibc.kill(pid, SIGKILL)
                pids.append(pid)
            }
        }
        return pids
    }
}

/// A private temporary folder under `$TMPDIR` (else /tmp), made with mkdtemp; nil on failure.
public func makeTemporaryFolder(prefix: String) -> String? {
    let base = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    var template = Array((base + "/" + prefix + "XXXXXX").utf8CString)
    return template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!).map { String(cString: $0) } }
}

/// Removes a folder and everything in it, without following symbolic links.
public func removeFolder(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if (st.st_mode & S_IFMT) == S_IFDIR {
        if let d = opendir(path) {
            var names: [String] = []
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(d)
            for n in names { removeFolder(path + "/" + n) }
        }
        rmdir(path)
    } else {
        unlink(path)
    }
}
