import CSystem
import Glibc
public import LuaHost
import QuantumwalaCore

/// Where busy `qw` processes publish what they run and what waits for admission, so that
/// `qw resources`, run from anywhere on the machine, shows the work of all of them.
///
/// Each publishing runtime keeps one JSON file, `PID-N.json`, in the board's directory. It is
/// rewritten (atomically, by rename) at most every ``interval`` seconds while it changes,
/// removed once the runtime has no work left, and removed when `qw` exits; only a SIGKILL
/// leaves it behind, and readers skip and delete a file whose process is gone.
///
/// The directory is `QW_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/qw`, else `/tmp/qw-UID`; it is
/// created private (0700) and not used when it belongs to someone else.
public struct WorkBoard: Sendable {
    public let directory: String

    /// Seconds between two writes of one runtime's file.
    public static let interval = 0.5

    /// The board's directory for this user.
    public static func defaultDirectory() -> String {
        if let v = getenv("QW_RUNTIME_DIR"), v.pointee != 0 { return String(cString: v) }
        if let v = getenv("XDG_RUNTIME_DIR"), v.pointee != 0 { return String(cString: v) + "/qw" }
        return "/tmp/qw-\(getuid())"
    }

    /// The board in `directory`, made if missing; nil when it cannot be used (not a directory
    /// of this user's, or not creatable).
    public init?(directory: String = WorkBoard.defaultDirectory()) {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST { return nil }
        var st = stat()
        guard lstat(directory, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, st.st_uid == getuid() else { return nil }
        self.directory = directory
    }

    /// Writes `entry` as `name` (atomically: a reader sees the old file or the new one).
    func write(_ name: String, _ entry: LuaValue) -> Bool {
        guard let bytes = try? JSON.encode(entry) else { return false }
        let path = directory + "/" + name
        let temp = directory + "/." + name + ".tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        let ok = bytes.withUnsafeBytes { writeAll(fd, $0) }
        close(fd)
        guard ok, rename(temp, path) == 0 else {
            unlink(temp)
            return false
        }
        return true
    }

    func remove(_ name: String) { unlink(directory + "/" + name) }

    /// The entries of the processes that are alive, oldest first; the files of those that are
    /// gone are deleted.
    public func entries() -> [LuaValue] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var found: [LuaValue] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasSuffix(".json"), !name.hasPrefix("."),
                  let bytes = readFile(directory + "/" + name), let entry = try? JSON.decode(bytes)
            else { continue }
            guard case .integer(let pid)? = entry["pid"], Self.isAlive(Int32(truncatingIfNeeded: pid), startedAt: entry["start_ticks"]) else {
                remove(name)
                continue
            }
            found.append(entry)
        }
        return found.sorted { number($0["started"]) < number($1["started"]) }
    }

    /// Whether process `pid` runs and is the one that wrote the entry (started at the same
    /// clock tick, so a reused pid does not count).
    static func isAlive(_ pid: Int32, startedAt ticks: LuaValue?) -> Bool {
        guard pid > 0, let now = processStartTicks(pid) else { return false }
        if case .integer(let t)? = ticks { return Int64(now) == t }
        return true
    }
}

/// When process `pid` started, in clock ticks after boot (field 22 of /proc/PID/stat).
func processStartTicks(_ pid: Int32) -> UInt64? {
    // the command name (field 2) may hold spaces and parentheses: count after the last ')'
    guard let stat = readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return nil }
    let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "))  // from field 3 (state)
    guard fields.count > 19 else { return nil }
    return UInt64(String(decoding: fields[19], as: UTF8.self))
}

func number(_ v: LuaValue?) -> Double {
    switch v {
    case .integer(let i)?: Double(i)
    case .number(let d)?: d
    default: 0
    }
}

extension Runtime {
    /// Starts publishing this runtime's work on `board` (see ``WorkBoard``).
    public func publishWork(on board: WorkBoard) {
        publishWork { board }
    }

    /// Publishes this runtime's work on the board `makeBoard` gives, made when there is
    /// first work to show (a script that starts no command never touches the board).
    public func publishWork(onBoard makeBoard: @escaping () -> WorkBoard?) {
        var make: (() -> WorkBoard?)? = makeBoard
        scheduler.onWorkChange = { [unowned self] in
            if let m = make {
                make = nil
                guard let board = m() else { return }
                workBoard = board
                workBoardName = "\(getpid())-\(String(UInt(bitPattern: ObjectIdentifier(self).hashValue), radix: 16)).json"
                // who this is does not change: worked out once
                var who: [LuaValue: LuaValue] = [
                    "pid": .integer(Int64(getpid())),
                    "command": .string(ownCommandLine()),
                    "cwd": .string(currentDirectory()),
                    "started": .number(runtimeStarted),
                ]
                if let ticks = processStartTicks(getpid()) { who["start_ticks"] = .integer(Int64(ticks)) }
                workBoardIdentity = who
            }
            workChanged()
        }
    }

    /// Something started, ended or began waiting: publish within ``WorkBoard/interval``.
    func workChanged() {
        guard workBoard != nil, workTimer == nil else { return }
        workTimer = reactor.after(WorkBoard.interval) { [unowned self] in
            workTimer = nil
            publishNow()
        }
    }

    /// Writes the entry, or removes it when there is no work; keeps the timer while busy.
    func publishNow() {
        guard let board = workBoard, let name = workBoardName else { return }
        let work = scheduler.admittedProcesses
        guard !work.isEmpty || resources.slotsUsed > 0 || resources.queued > 0 else {
            if workPublished {
                board.remove(name)
                qw_remove_at_exit(board.directory + "/" + name, 0)
                workPublished = false
                lastWorkEntry = nil
            }
            return
        }
        let entry = workEntry(work)
        if entry != lastWorkEntry {
            if !workPublished { qw_remove_at_exit(board.directory + "/" + name, 1) }
            workPublished = board.write(name, entry) || workPublished
            lastWorkEntry = entry
        }
        workChanged()  // look again while busy: a queued command may have started
    }

    /// Withdraws the entry (the runtime is done).
    public func withdrawWork() {
        guard let board = workBoard, let name = workBoardName else { return }
        if let t = workTimer { reactor.cancel(t); workTimer = nil }
        if workPublished {
            board.remove(name)
            qw_remove_at_exit(board.directory + "/" + name, 0)
            workPublished = false
        }
        workBoard = nil
    }

    private func workEntry(_ work: [AdmittedProcess]) -> LuaValue {
        func request(_ r: ResourceRequest, into t: inout [LuaValue: LuaValue]) {
            t["slots"] = .integer(Int64(r.slots))
            t["cpu"] = .number(r.cpu)
            t["memory"] = .integer(Int64(r.memory))
        }
        // the oldest of each kind, up to `shown`; the rest are counted
        let shown = 100
        var running: [LuaValue] = [], queued: [LuaValue] = []
        var runningCount = 0, queuedCount = 0
        for p in work.sorted(by: { $0.queuedAt < $1.queuedAt }) {
            let isRunning = p.startedAt != nil && p.pid > 0
            if isRunning { runningCount += 1 } else { queuedCount += 1 }
            guard (isRunning ? running.count : queued.count) < shown else { continue }
            var t: [LuaValue: LuaValue] = ["name": .string(p.spec.label)]
            request(p.request, into: &t)
            if isRunning, let started = p.startedAt {
                t["pid"] = .integer(Int64(p.pid))
                t["started"] = .number(started)
                running.append(.table(t))
            } else {
                t["since"] = .number(p.queuedAt)
                queued.append(.table(t))
            }
        }
        var e = workBoardIdentity
        e.merge([
            "running": .array(running),
            "queued": .array(queued),
            "slots_used": .integer(Int64(resources.slotsUsed)),
            "slots_total": .integer(Int64(resources.limits.maxConcurrent)),
            "cpu_granted": .number(resources.cpuGranted),
            "memory_granted": .integer(Int64(resources.memoryGranted)),
            "running_more": .integer(Int64(runningCount - running.count)),
            "queued_more": .integer(Int64(queuedCount - queued.count)),
            "leases_waiting": .integer(Int64(max(0, resources.queued - queuedCount))),
        ]) { $1 }
        return .table(e)
    }
}

/// qw's own command line, as `ps` shows it.
private func ownCommandLine() -> String {
    guard let bytes = readFile("/proc/self/cmdline"), !bytes.isEmpty else { return "qw" }
    var words = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    if words.last == "" { words.removeLast() }
    if let first = words.first, let slash = first.lastIndex(of: "/") { words[0] = String(first[first.index(after: slash)...]) }
    return words.joined(separator: " ")
}

/// The process's working directory ("" when it cannot be read).
/// The absolute path of `path` with its links resolved, or nil when it does not exist.
func resolvedPath(_ path: String) -> String? {
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard realpath(path, &buf) != nil else { return nil }
    return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

func currentDirectory() -> String {
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buf, buf.count) != nil else { return "" }
    return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}
