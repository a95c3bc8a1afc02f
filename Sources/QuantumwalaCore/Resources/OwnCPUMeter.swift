import Glibc

/// How much of the machine's CPU qw itself and its children used since the last sample.
///
/// Admission compares the machine's CPU reading, less this, with `cpu_percent`: load from
/// other programs holds new work back, while qw's own work (which `max_concurrent` already
/// bounds) does not throttle itself.
public final class OwnCPUMeter {
    private let cores: Double
    private var last: (at: Double, seconds: Double)?

    public init(cores: Double) { self.cores = max(cores, 1) }

    /// Percent of all cores used by qw, its reaped children and `livePids` (with their reaped
    /// children) since the previous call; nil on the first call.
    public func sample(livePids: [Int32]) -> Double? {
        var seconds = ownCPUSeconds() + rusageSeconds(RUSAGE_CHILDREN)
        for pid in livePids where pid > 0 { seconds += processCPUSeconds(pid, withReapedChildren: true) ?? 0 }
        let now = monotonicSeconds()
        defer { last = (now, seconds) }
        guard let last, now > last.at else { return nil }
        let used = max(0, seconds - last.seconds)
        return min(100, 100 * used / ((now - last.at) * cores))
    }

    private func rusageSeconds(_ who: __rusage_who) -> Double {
        let who = __rusage_who_t(who.rawValue)
        var u = rusage()
        getrusage(who, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6
            + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
    }
}

/// The CPU seconds this process has used so far, all its threads (nanosecond resolution).
public func ownCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

private let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

/// The CPU seconds a live process used so far, all its threads: utime + stime (fields 14
/// and 15 of /proc/PID/stat), and with `withReapedChildren` its reaped children's too
/// (fields 16 and 17). In clock ticks (10 ms); nil when there is no such process.
public func processCPUSeconds(_ pid: Int32, withReapedChildren: Bool = false) -> Double? {
    let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 1024)
    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0, let close = buf[0..<n].lastIndex(of: UInt8(ascii: ")")) else { return nil }
    let fields = buf[(close + 2)..<n].split(separator: UInt8(ascii: " "))
    // after ')' the first field is field 3: fields 14...17 are at offsets 11...14
    guard fields.count > 14 else { return nil }
    var ticks = 0.0
    for f in fields[11...(withReapedChildren ? 14 : 12)] {
        ticks += Double(String(decoding: f, as: UTF8.self)) ?? 0
    }
    return ticks / ticksPerSecond
}
