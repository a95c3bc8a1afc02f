import Glibc

/// Processes found by a mark in their environment: what an agent run leaves behind.
///
/// The Claude Code CLI starts its Bash tool's commands in sessions and process groups of
/// their own, so killing the CLI's group leaves them running (reparented to PID 1), and a
/// subreaper could not tell whose they are. Every process of an agent run inherits
/// `NAME=VALUE` from its environment instead, so the processes of a run are found wherever
/// they went, and only those.
public enum MarkedProcesses {
    /// The live processes (not this one) whose environment holds `NAME=VALUE`, with VALUE;
    /// with `from`, only those whose pid is at least `from` (see ``startedAfter(_:tasksBefore:)``).
    ///
    /// A process in the middle of an exec shows an empty environment for a moment (the
    /// kernel has replaced its memory but not yet noted where the new environment lies: one
    /// read in six right after a posix_spawn, measured), so those that read empty are read
    /// again after the others, unless they are kernel threads.
    public static func scan(name: String, from first: Int32 = 0) -> [(pid: Int32, value: String)] {
        // an entry that starts the environment, or follows a NUL
        let prefix = Array(("\0" + name + "=").utf8)
        let me = getpid()
        var out: [(Int32, String)] = []
        var empty: [Int32] = []
        // one buffer for every process, the NUL in front standing for the start of its environment
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        /// Reads one process's environment; false when it read empty.
        func look(_ pid: Int32) -> Bool {
            let fd = open("/proc/\(pid)/environ", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return true }  // gone, or not ours to read
            var used = 1
            while true {
                if used == buf.count { buf += [UInt8](repeating: 0, count: buf.count) }
                let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + used, $0.count - used) }
                if n <= 0 { break }
                used += n
            }
            close(fd)
            if used == 1 { return false }
            buf.withUnsafeBytes { b in
                prefix.withUnsafeBytes { p in
                    let base = b.baseAddress!
                    var at = 0
                    // each NUL, and whether the entry after it is the mark
                    while at + p.count <= used {
                        if memcmp(base + at, p.baseAddress!, p.count) == 0 {
                            let from = at + p.count
                            let end = memchr(base + from, 0, used - from).map { UnsafeRawPointer($0) - base } ?? used
                            out.append((pid, String(decoding: b[from..<end], as: UTF8.self)))
                            return
                        }
                        guard let next = memchr(base + at + 1, 0, used - at - 1) else { return }
                        at = UnsafeRawPointer(next) - base
                    }
                }
            }
            return true
        }
        guard let dir = opendir("/proc") else { return [] }
        while let e = readdir(dir) {
            var pid: Int32 = 0
            let digits = withUnsafeBytes(of: e.pointee.d_name) { name -> Bool in
                for c in name {
                    if c == 0 { break }
                    guard c >= 48 && c <= 57 else { return false }
                    pid = pid &* 10 &+ Int32(c - 48)
                }
                return pid > 0
            }
            guard digits, pid != me, pid >= first else { continue }
            if !look(pid) { empty.append(pid) }
        }
        closedir(dir)
        // another look at those with memory (kernel threads have none, and no environment),
        // 0.1, 0.2, 0.4 ... 6.4 ms apart: an exec's window lasted up to 4.6 ms in 500 spawns
        // on a busy machine (its median: none at all)
        for pid in empty where (readSmallFile("/proc/\(pid)/statm")?.first).map({ $0 != "0" }) ?? false {
            var pause: UInt32 = 100
            while pause <= 6400 && !look(pid) {
                usleep(pause)
                pause *= 2
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
    ///
    /// With `from`, only the processes marked `NAME=VALUE` whose pid is at least `from`: the
    /// clean-up after a run whose processes all came after its first (as
    /// ``startedAfter(_:tasksBefore:)`` tells), which then need not read every process's
    /// environment.
    @discardableResult
    public static func kill(name: String, value: String, from first: Int32 = 0) -> [Int32] {
        var pids: [Int32] = []
        for (pid, v) in scan(name: name, from: first) {
            var mine = v == value
            if !mine, first == 0, let dash = v.firstIndex(of: "-"), let owner = Int32(v[..<dash]), owner > 0 {
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

extension MarkedProcesses {
    /// The processes and threads the kernel has started since it booted (`processes` in
    /// /proc/stat), or nil.
    public static func tasksStarted() -> Int? {
        guard let stat = readSmallFile("/proc/stat"),
              let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("processes ") })
        else { return nil }
        return Int(line.dropFirst("processes ".count))
    }

    /// Whether every process started after `pid` has a pid above it, `tasksBefore` being
    /// ``tasksStarted()`` from before `pid` was started. The kernel hands pids out in turn,
    /// skipping those in use, so this holds unless they went all the way round pid_max since,
    /// which they cannot have if the last pid handed out is not below `pid` and fewer
    /// processes were started since than pid_max less those alive.
    public static func startedAfter(_ pid: Int32, tasksBefore: Int) -> Bool {
        guard pid > 0,
              let last = readSmallFile("/proc/sys/kernel/ns_last_pid").flatMap({ Int32(trimmed($0)) }),
              let max = readSmallFile("/proc/sys/kernel/pid_max").flatMap({ Int(trimmed($0)) }),
              let now = tasksStarted(),
              let alive = readSmallFile("/proc/loadavg")?.split(separator: " ").dropFirst(3).first?
                  .split(separator: "/").last.flatMap({ Int($0) })
        else { return false }
        // the first 300 pids are not handed out again
        return last >= pid && (now - tasksBefore) + alive < max - 300
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
