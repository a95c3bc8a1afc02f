import Glibc

/// Watches the resident memory of process groups and terminates a group that grows past its
/// limit.
///
/// One scan of /proc every `interval` serves every watched group (a group's memory is the sum
/// of its members' RSS); nothing runs while nothing is watched.
public final class MemoryWatch {
    private struct Entry {
        let child: ChildProcess
        let limit: Int
    }

    private unowned let reactor: Reactor
    private var entries: [ObjectIdentifier: Entry] = [:]
    private var timer: Reactor.TimerID?
    /// Seconds between samples.
    public var interval = 0.1
    /// How far past its limit a group may go, as a fraction of the limit.
    public var margin: () -> Double
    /// The highest sample seen per process id, kept until ``peak(of:)`` takes it.
    private var peaks: [Int32: Int] = [:]

    public init(reactor: Reactor, margin: @escaping () -> Double) {
        self.reactor = reactor
        self.margin = margin
    }

    /// Starts watching `child`'s process group against `limit` bytes (plus the margin).
    public func watch(_ child: ChildProcess, limit: Int) {
        entries[ObjectIdentifier(child)] = Entry(child: child, limit: limit)
        schedule()
    }

    /// The highest group RSS sampled for `pid` (and forgets it), if it was watched.
    public func peak(of pid: Int32) -> Int? { peaks.removeValue(forKey: pid) }

    private func schedule() {
        guard timer == nil, !entries.isEmpty else { return }
        timer = reactor.after(interval) { [weak self] in
            guard let self else { return }
            self.timer = nil
            self.sample()
            self.schedule()
        }
    }

    private func sample() {
        entries = entries.filter { $0.value.child.running }
        guard !entries.isEmpty else { return }
        let groups = Set(entries.values.map { $0.child.pid }.filter { $0 > 0 })
        let rss = processGroupRSS(groups)
        for e in entries.values {
            let pid = e.child.pid
            guard pid > 0, let used = rss[pid] else { continue }
            peaks[pid] = max(peaks[pid] ?? 0, used)
            let allowed = Double(e.limit) * (1 + max(0, margin()))
            if Double(used) > allowed {
                e.child.terminate(reason: "memory limit exceeded: used \(formatBytes(used)), limit \(formatBytes(e.limit))")
                entries[ObjectIdentifier(e.child)] = nil
            }
        }
    }
}

/// Resident bytes of each process group in `groups`, summed over its members (one scan of
/// /proc).
public func processGroupRSS(_ groups: Set<Int32>, procRoot: String = "/proc") -> [Int32: Int] {
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    var out: [Int32: Int] = [:]
    guard !groups.isEmpty, let dir = opendir(procRoot) else { return out }
    defer { closedir(dir) }
    var buf = [UInt8](repeating: 0, count: 1024)
    while let entry = readdir(dir) {
        let first = entry.pointee.d_name.0
        guard first >= 0x31 && first <= 0x39 else { continue }  // pids start with 1-9
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        let fd = open(procRoot + "/" + name + "/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { continue }
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard n > 0, let (pgrp, pages) = parseStat(buf[0..<n]), groups.contains(pgrp) else { continue }
        out[pgrp, default: 0] += pages * pageSize
    }
    return out
}

/// The process group (field 5) and resident pages (field 24) of a /proc/PID/stat line.
func parseStat(_ line: ArraySlice<UInt8>) -> (pgrp: Int32, rssPages: Int)? {
    // the command name (field 2) is in parentheses and may hold spaces: count after the last ')'
    guard let close = line.lastIndex(of: UInt8(ascii: ")")) else { return nil }
    var field = 2
    var value = 0
    var inNumber = false
    var pgrp: Int32?
    for b in line[(close + 1)...] {
        if b == UInt8(ascii: " ") || b == 10 {
            if inNumber {
                if field == 5 { pgrp = Int32(truncatingIfNeeded: value) }
                if field == 24 { return pgrp.map { ($0, value) } }
            }
            inNumber = false
            field += 1
            value = 0
        } else if b >= 0x30 && b <= 0x39 {
            if !inNumber { inNumber = true }
            value = value * 10 + Int(b - 0x30)
        } else {
            inNumber = true  // a state letter or a sign: still a field
        }
    }
    return nil
}
