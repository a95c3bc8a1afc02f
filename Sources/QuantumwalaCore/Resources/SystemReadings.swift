import Glibc

// The machine's capacity and live load, read from /proc and the cgroup v2 files. Every path
// goes through a `root` (default "/") so tests can point the readers at a fixture tree.

// MARK: - cgroup v2 limits

/// The cgroup v2 limits that bound this process: CPU bandwidth and memory.
public struct CgroupLimits: Equatable, Sendable {
    /// The CPU bandwidth limit in cores (QUOTA/PERIOD of `cpu.max`); nil when unlimited.
    public var cpuQuota: Double?
    /// The memory limit in bytes (`memory.max`); nil when unlimited.
    public var memoryMax: Int?
    /// Memory charged to the cgroup in bytes (`memory.current`), page cache included.
    public var memoryCurrent: Int?

    /// Limits with the given values; nil means unlimited or unknown.
    public init(cpuQuota: Double? = nil, memoryMax: Int? = nil, memoryCurrent: Int? = nil) {
        self.cpuQuota = cpuQuota
        self.memoryMax = memoryMax
        self.memoryCurrent = memoryCurrent
    }

    /// Parses the contents of `cpu.max`, `memory.max` and `memory.current`.
    ///
    /// Surrounding whitespace is ignored. "max" (unlimited), a missing file (nil) and anything
    /// unparsable or non-positive all give nil. `cpu.max` without a period uses the kernel's
    /// default period, 100000 µs.
    ///
    /// - Parameters:
    ///   - cpuMax: the text of `cpu.max`, "QUOTA PERIOD" or "max PERIOD".
    ///   - memoryMax: the text of `memory.max`, bytes or "max".
    ///   - memoryCurrent: the text of `memory.current`, bytes.
    /// - Returns: the limits; each field nil when unlimited or unreadable.
    public static func parse(cpuMax: String?, memoryMax: String?, memoryCurrent: String?) -> CgroupLimits {
        CgroupLimits(cpuQuota: cpuMax.flatMap(parseCPUMax),
                     memoryMax: memoryMax.flatMap { parseBytes($0) },
                     memoryCurrent: memoryCurrent.flatMap { parseBytes($0, allowZero: true) })
    }

    private static func parseCPUMax(_ text: String) -> Double? {
        let fields = words(text)
        guard fields.count == 1 || fields.count == 2, let quota = Int(fields[0]), quota > 0 else { return nil }
        let period = fields.count == 2 ? Int(fields[1]) : 100_000
        guard let period, period > 0 else { return nil }
        return Double(quota) / Double(period)
    }

    private static func parseBytes(_ text: String, allowZero: Bool = false) -> Int? {
        let fields = words(text)
        guard fields.count == 1, let n = Int(fields[0]), allowZero ? n >= 0 : n > 0 else { return nil }
        return n
    }
}

/// What the cgroup walk found: the process's directory, the combined limits, and the memory
/// the tightest level still has room for.
struct CgroupReading {
    /// The process's cgroup directory (with the root prefix), nil when not in a cgroup v2.
    var directory: String?
    /// The directories read, the process's own first, then each ancestor up to the mount point.
    var directories: [String]
    /// The tightest limits over ``directories``.
    var limits: CgroupLimits
    /// The smallest room left under a memory limit over all levels, in bytes; nil without one.
    var memoryHeadroom: Int?
}

extension CgroupLimits {
    /// Finds the process's cgroup v2 directory and the ancestors that can also limit it.
    ///
    /// The cgroup path is the `0::PATH` line of `/proc/self/cgroup`, joined with the cgroup2
    /// mount point from `/proc/self/mountinfo` (`/sys/fs/cgroup` when none is listed).
    ///
    /// - Parameters:
    ///   - root: the directory standing for "/", for tests.
    /// - Returns: the directories with `root` prefixed, the process's own first and the mount
    ///   point last; empty when the process is not in a cgroup v2 hierarchy.
    static func directories(root: String = "/") -> [String] {
        guard let cgroupFile = readSmallFile(rooted(root, "/proc/self/cgroup")),
              var path = unifiedPath(cgroupFile: cgroupFile)
        else { return [] }
        let mount = readSmallFile(rooted(root, "/proc/self/mountinfo")).flatMap(cgroup2Mount)
            ?? (root: "/", point: "/sys/fs/cgroup")
        // A mount of a subtree (mount root not "/") shows that subtree at its mount point.
        if mount.root != "/" {
            if path == mount.root { path = "/" }
            else if path.hasPrefix(mount.root + "/") { path = String(path.dropFirst(mount.root.count)) }
        }
        var parts = path.split(separator: "/").map(String.init)
        // "/../.." appears when our cgroup lies outside this cgroup namespace: only the
        // namespace's root is visible.
        if parts.contains("..") || parts.contains(".") { parts = [] }
        let base = rooted(root, mount.point)
        var dirs: [String] = []
        for depth in stride(from: parts.count, through: 0, by: -1) {
            dirs.append(depth == 0 ? base : base + "/" + parts[0..<depth].joined(separator: "/"))
        }
        return dirs
    }

    /// Reads the limits of the process's cgroup and all its ancestors, keeping the tightest.
    ///
    /// A limit set on an ancestor bounds every descendant, so the walk goes up to the mount
    /// point. `memoryCurrent` is the usage of the level whose `memory.max` is smallest (the
    /// process's own level when no level has a limit), so max minus current is that level's
    /// room.
    ///
    /// - Parameters:
    ///   - root: the directory standing for "/", for tests.
    /// - Returns: the directories, the limits and the memory headroom.
    static func readHierarchy(root: String = "/") -> CgroupReading {
        readHierarchy(directories: directories(root: root))
    }

    /// Reads the limits of already found cgroup directories (see ``directories(root:)``).
    ///
    /// - Parameters:
    ///   - directories: the process's own directory first, then its ancestors.
    /// - Returns: the directories, the limits and the memory headroom.
    static func readHierarchy(directories: [String]) -> CgroupReading {
        var limits = CgroupLimits()
        var headroom: Int?
        var ownCurrent: Int?
        for dir in directories {
            let level = parse(cpuMax: readSmallFile(dir + "/cpu.max"),
                              memoryMax: readSmallFile(dir + "/memory.max"),
                              memoryCurrent: readSmallFile(dir + "/memory.current"))
            if let q = level.cpuQuota, q < (limits.cpuQuota ?? .infinity) { limits.cpuQuota = q }
            if ownCurrent == nil { ownCurrent = level.memoryCurrent }
            guard let max = level.memoryMax else { continue }
            if max < (limits.memoryMax ?? .max) {
                limits.memoryMax = max
                limits.memoryCurrent = level.memoryCurrent
            }
            // Inactive file pages are reclaimed before the limit bites (as MemAvailable counts
            // them available), so they are not held against the room left; without this a
            // cgroup whose page cache filled it would look full forever.
            let current = level.memoryCurrent ?? 0
            let reclaimable = readSmallFile(dir + "/memory.stat").flatMap { statValue($0, key: "inactive_file") } ?? 0
            let room = Swift.max(0, max - Swift.max(0, current - reclaimable))
            headroom = Swift.min(headroom ?? .max, room)
        }
        if limits.memoryMax == nil { limits.memoryCurrent = ownCurrent }
        return CgroupReading(directory: directories.first, directories: directories, limits: limits,
                             memoryHeadroom: headroom)
    }

    /// The path of the `0::PATH` (cgroup v2) line of `/proc/self/cgroup`.
    ///
    /// - Parameters:
    ///   - cgroupFile: the text of `/proc/self/cgroup`.
    /// - Returns: the path, such as "/user.slice/session-1.scope"; nil when there is no v2 line.
    static func unifiedPath(cgroupFile: String) -> String? {
        for line in cgroupFile.split(separator: "\n") where line.hasPrefix("0::") {
            let path = trimmed(String(line.dropFirst(3)))
            return path.hasPrefix("/") ? path : nil
        }
        return nil
    }

    /// The first cgroup2 mount in `/proc/self/mountinfo`.
    ///
    /// - Parameters:
    ///   - mountinfo: the text of `/proc/self/mountinfo`.
    /// - Returns: the mounted subtree's root and the mount point; nil when none is mounted.
    static func cgroup2Mount(mountinfo: String) -> (root: String, point: String)? {
        for line in mountinfo.split(separator: "\n") {
            // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
            let fields = line.split(separator: " ")
            guard fields.count >= 7, let dash = fields.firstIndex(of: "-"), dash >= 6,
                  dash + 1 < fields.count, fields[dash + 1] == "cgroup2"
            else { continue }
            return (unescapeMountField(fields[3]), unescapeMountField(fields[4]))
        }
        return nil
    }

    /// Undoes the octal escapes mountinfo uses for space, tab, newline and backslash.
    private static func unescapeMountField(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var out: [UInt8] = []
        let bytes = Array(field.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count {
                let digits = bytes[(i + 1)...(i + 3)]
                if digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") }) {
                    out.append(digits.reduce(0) { $0 &* 8 &+ ($1 - UInt8(ascii: "0")) })
                    i += 4
                    continue
                }
            }
            out.append(bytes[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}

// MARK: - Capacity

/// What the machine can give this process: cores and memory, cgroup limits applied.
public struct MachineCapacity: Sendable {
    /// Usable cores: the CPUs this process may run on, capped by the cgroup CPU quota.
    public var cores: Double
    /// Usable memory in bytes: MemTotal, capped by the cgroup `memory.max`.
    public var memoryTotal: Int
    /// The cgroup limits found (all nil outside a limited cgroup v2).
    public var cgroup: CgroupLimits
    /// The cgroup directories the limits came from, the process's own first.
    var cgroupDirectories: [String] = []
    /// The directory standing for "/".
    var root: String = "/"

    /// Capacity with the given values.
    public init(cores: Double, memoryTotal: Int, cgroup: CgroupLimits) {
        self.cores = cores
        self.memoryTotal = memoryTotal
        self.cgroup = cgroup
    }

    /// Reads the capacity from `/proc` and the cgroup v2 files; the smaller of machine and
    /// cgroup wins.
    ///
    /// - Parameters:
    ///   - root: the directory standing for "/", for tests.
    /// - Returns: the capacity.
    public static func read(root: String = "/") -> MachineCapacity {
        read(root: root, onlineCPUs: nil)
    }

    /// ``read(root:)`` with the CPU count given, so a fixture does not depend on the machine.
    static func read(root: String, onlineCPUs: Int?) -> MachineCapacity {
        let cgroup = CgroupLimits.readHierarchy(root: root)
        let cpus = onlineCPUs ?? QuantumwalaCore.onlineCPUs(root: root)
        let cores = min(Double(cpus), cgroup.limits.cpuQuota ?? .infinity)
        let meminfo = readSmallFile(rooted(root, "/proc/meminfo")).map(parseMeminfo) ?? [:]
        let machineMemory = meminfo["MemTotal"] ?? physicalMemory()
        let total = min(machineMemory, cgroup.limits.memoryMax ?? .max)
        var capacity = MachineCapacity(cores: cores, memoryTotal: total, cgroup: cgroup.limits)
        capacity.cgroupDirectories = cgroup.directories
        capacity.root = root
        return capacity
    }

    /// Reads live memory with the cgroup directories found by ``read(root:)``, skipping the
    /// search through `/proc/self/cgroup` and `/proc/self/mountinfo`.
    ///
    /// - Returns: the memory reading.
    public func readMemory() -> MemoryReading {
        MemoryReading.read(root: root, cgroupDirectories: cgroupDirectories)
    }
}

// MARK: - Memory

/// Live memory: how much there is and how much is still available to this process.
public struct MemoryReading: Sendable {
    /// Bytes usable: MemTotal, capped by the cgroup `memory.max`.
    public var total: Int
    /// Bytes still available: MemAvailable, capped by the room left under every cgroup limit.
    public var available: Int
    /// The share of ``total`` in use, 0...100.
    public var usedPercent: Double

    /// A reading with the given values.
    public init(total: Int, available: Int, usedPercent: Double) {
        self.total = total
        self.available = available
        self.usedPercent = usedPercent
    }

    /// Reads `/proc/meminfo` and the cgroup v2 memory files.
    ///
    /// Inside a limited cgroup, available is min(MemAvailable, memory.max - memory.current),
    /// taken over every limited level, where memory.current leaves out the inactive file
    /// pages of `memory.stat` (reclaimable, as MemAvailable counts them).
    ///
    /// - Parameters:
    ///   - root: the directory standing for "/", for tests.
    /// - Returns: the reading; zeros when `/proc/meminfo` cannot be read.
    public static func read(root: String = "/") -> MemoryReading {
        read(root: root, cgroupDirectories: CgroupLimits.directories(root: root))
    }

    /// ``read(root:)`` with the cgroup directories already found.
    static func read(root: String, cgroupDirectories: [String]) -> MemoryReading {
        let meminfo = readSmallFile(rooted(root, "/proc/meminfo")).map(parseMeminfo) ?? [:]
        let cgroup = CgroupLimits.readHierarchy(directories: cgroupDirectories)
        let machineTotal = meminfo["MemTotal"] ?? 0
        // Kernels before 3.14 have no MemAvailable; free plus page cache comes close.
        let machineAvailable = meminfo["MemAvailable"]
            ?? ((meminfo["MemFree"] ?? 0) + (meminfo["Buffers"] ?? 0) + (meminfo["Cached"] ?? 0))
        let total = min(machineTotal, cgroup.limits.memoryMax ?? .max)
        let available = max(0, min(machineAvailable, cgroup.memoryHeadroom ?? .max, total))
        let used = total > 0 ? Double(total - available) / Double(total) * 100 : 0
        return MemoryReading(total: total, available: available, usedPercent: used)
    }
}

/// The fields of `/proc/meminfo` in bytes ("MemTotal: 123 kB" -> 125952).
///
/// - Parameters:
///   - text: the text of `/proc/meminfo`.
/// - Returns: the values by name; lines that do not parse are left out.
func parseMeminfo(_ text: String) -> [String: Int] {
    var values: [String: Int] = [:]
    for line in text.split(separator: "\n") {
        guard let colon = line.firstIndex(of: ":") else { continue }
        let rest = words(String(line[line.index(after: colon)...]))
        guard let first = rest.first, let n = Int(first) else { continue }
        values[String(line[..<colon])] = rest.count > 1 && rest[1] == "kB" ? n * 1024 : n
    }
    return values
}

/// The value of `key` in a "key value" file such as `memory.stat`.
private func statValue(_ text: String, key: String) -> Int? {
    for line in text.split(separator: "\n") {
        let fields = line.split(separator: " ")
        if fields.count == 2, fields[0] == key { return Int(fields[1]) }
    }
    return nil
}

// MARK: - CPU

/// Samples the machine's CPU busy share from the aggregate `cpu` line of `/proc/stat`.
///
/// Busy is total minus idle and iowait, over user, nice, system, idle, iowait, irq, softirq
/// and steal (guest time is already counted in user and nice). The first ``sample()`` only
/// takes the baseline and returns nil: a since-boot average says nothing about the load now.
public final class CPUSampler {
    private let path: String
    private var previous: CPUTimes?
    private var last: Double?

    /// A sampler reading `root`/proc/stat.
    ///
    /// - Parameters:
    ///   - root: the directory standing for "/", for tests.
    public init(root: String = "/") {
        path = rooted(root, "/proc/stat")
    }

    /// The busy share of all CPUs since the previous call, in percent (0...100).
    ///
    /// - Returns: nil on the first call (it takes the baseline), when `/proc/stat` cannot be
    ///   read, or when the counters went backwards (the baseline is taken again). When no
    ///   clock tick has passed since the previous call, the previous value.
    public func sample() -> Double? {
        guard let now = readSmallFile(path).flatMap(CPUTimes.init(stat:)) else { return nil }
        guard let prev = previous else {
            previous = now
            return nil
        }
        if now.total < prev.total || now.busy < prev.busy {
            previous = now
            last = nil
            return nil
        }
        let elapsed = now.total - prev.total
        // Sampled twice within one tick: nothing new to say, and the baseline stays put.
        guard elapsed > 0 else { return last }
        let busy = min(now.busy - prev.busy, elapsed)
        previous = now
        last = Double(busy) / Double(elapsed) * 100
        return last
    }
}

/// The aggregate CPU counters of `/proc/stat`, in clock ticks.
struct CPUTimes: Equatable {
    /// All time: user, nice, system, idle, iowait, irq, softirq, steal.
    var total: UInt64
    /// Total minus idle and iowait.
    var busy: UInt64

    /// Parses the `cpu` line of `/proc/stat`; nil when it is missing or malformed.
    init?(stat: String) {
        // The line is the file's first; a search that stops there, not a split of every line
        // (this runs at every start, and the rest of the file is per-CPU and interrupt counts).
        var rest = stat[...]
        var found: Substring?
        while !rest.isEmpty, found == nil {
            let end = rest.firstIndex(of: "\n") ?? rest.endIndex
            if rest[..<end].hasPrefix("cpu ") { found = rest[..<end] }
            rest = end == rest.endIndex ? rest[end...] : rest[rest.index(after: end)...]
        }
        guard let line = found else { return nil }
        let fields = line.split(separator: " ").dropFirst().prefix(8).compactMap { UInt64($0) }
        guard fields.count >= 4 else { return nil }
        let total = fields.reduce(0, +)
        let idle = fields[3] + (fields.count > 4 ? fields[4] : 0)
        self.total = total
        busy = total - idle
    }
}

/// The CPUs this process may run on: `Cpus_allowed_list` of `/proc/self/status` (its
/// scheduler affinity, which also reflects a cpuset), else the online count from sysconf.
///
/// - Parameters:
///   - root: the directory standing for "/", for tests.
/// - Returns: at least 1.
func onlineCPUs(root: String = "/") -> Int {
    if let status = readSmallFile(rooted(root, "/proc/self/status")) {
        for line in status.split(separator: "\n") where line.hasPrefix("Cpus_allowed_list:") {
            if let n = countCPUList(String(line.dropFirst("Cpus_allowed_list:".count))), n > 0 { return n }
        }
    }
    return max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
}

/// The number of CPUs in a list such as "0-3,8,10-11"; nil when it does not parse.
func countCPUList(_ text: String) -> Int? {
    var count = 0
    for item in trimmed(text).split(separator: ",") {
        let bounds = item.split(separator: "-", omittingEmptySubsequences: false)
        if bounds.count == 1, Int(bounds[0]) != nil {
            count += 1
        } else if bounds.count == 2, let lo = Int(bounds[0]), let hi = Int(bounds[1]), hi >= lo {
            count += hi - lo + 1
        } else {
            return nil
        }
    }
    return count
}

/// Physical memory from sysconf, for when `/proc/meminfo` cannot be read.
private func physicalMemory() -> Int {
    max(0, sysconf(Int32(_SC_PHYS_PAGES))) * max(0, sysconf(Int32(_SC_PAGESIZE)))
}

// MARK: - Files

/// `path` (absolute) under `root`.
private func rooted(_ root: String, _ path: String) -> String {
    if root.isEmpty || root == "/" { return path }
    return (root.hasSuffix("/") ? String(root.dropLast()) : root) + path
}

/// The whole of a small file (a /proc or cgroup file) as text, or nil when it cannot be read.
///
/// /proc files have no size to stat, so this reads until end of file, up to 4 MiB.
func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 8192)
    while bytes.count < 4 << 20 {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
            bytes.append(contentsOf: chunk[0..<n])
        } else if n == 0 {
            break
        } else if errno != EINTR {
            return nil
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// `text` without leading or trailing spaces, tabs and line breaks.
func trimmed(_ text: String) -> String {
    guard let start = text.firstIndex(where: { !$0.isWhitespace }),
          let end = text.lastIndex(where: { !$0.isWhitespace })
    else { return "" }
    return String(text[start...end])
}

/// The whitespace-separated words of `text`.
private func words(_ text: String) -> [String] {
    text.split(whereSeparator: { $0.isWhitespace }).map(String.init)
}
