import Glibc
import Testing

@testable import QuantumwalaCore

/// A fixture tree standing for "/": proc files and a cgroup v2 hierarchy, in a temp dir.
private final class FixtureRoot {
    let path: String

    init() throws {
        var template = Array("/tmp/qw-sysreadings-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = try #require(made.map { String(cString: $0) })
    }

    deinit {
        // the tree holds only what write() made: plain files and directories
        var dirs: [String] = []
        func remove(_ dir: String) {
            guard let d = opendir(dir) else { return }
            while let entry = readdir(d) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name == "." || name == ".." { continue }
                let full = dir + "/" + name
                if entry.pointee.d_type == UInt8(DT_DIR) { remove(full) } else { unlink(full) }
            }
            closedir(d)
            dirs.append(dir)
        }
        remove(path)
        for dir in dirs { rmdir(dir) }
    }

    /// Writes `text` to `relative` (such as "proc/meminfo"), creating directories.
    func write(_ relative: String, _ text: String) {
        var dir = path
        let parts = relative.split(separator: "/")
        for part in parts.dropLast() {
            dir += "/" + part
            mkdir(dir, 0o755)
        }
        let file = path + "/" + relative
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        precondition(fd >= 0, "cannot create \(file)")
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    func mkdirs(_ relative: String) {
        var dir = path
        for part in relative.split(separator: "/") {
            dir += "/" + part
            mkdir(dir, 0o755)
        }
    }
}

// Formats copied from a real machine (hybrid hierarchy; a unified one has only the 0:: line).
private let hybridCgroup = """
    9:name=systemd:/
    4:memory:/process_api/d100363817cd39dcbba56ae4f6522c85
    1:cpu:/
    0::/

    """

private let mountinfo = """
    22 27 0:21 / /proc rw,relatime - proc proc rw
    23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
    27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
    31 23 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot

    """

private let meminfo = """
    MemTotal:       16384000 kB
    MemFree:         8000000 kB
    MemAvailable:   12000000 kB
    Buffers:            2424 kB
    Cached:           925084 kB
    SwapTotal:             0 kB
    HugePages_Total:       0
    Hugepagesize:       2048 kB

    """

/// A /proc/stat with the given aggregate counters (user nice system idle iowait irq softirq steal).
private func procStat(_ c: [UInt64]) -> String {
    """
    cpu  \(c.map(String.init).joined(separator: " ")) 0 0
    cpu0 44487 1180 43011 422536 146 0 101 10 0 0
    cpu1 53646 997 44683 410906 819 0 149 13 0 0
    intr 2588582 0 0 0 0 0 0 0
    ctxt 8923644
    btime 1795547822
    processes 1218483
    procs_running 1
    procs_blocked 0
    softirq 2487187 0 215080 4 702 136974 0 2 370455 0 1763970

    """
}

private let slice = "sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope"

@Suite struct SystemReadingsTests {
    // MARK: Parsing

    @Test func cpuMaxUnlimited() {
        #expect(CgroupLimits.parse(cpuMax: "max", memoryMax: nil, memoryCurrent: nil).cpuQuota == nil)
        #expect(CgroupLimits.parse(cpuMax: "max 100000\n", memoryMax: nil, memoryCurrent: nil).cpuQuota == nil)
    }

    @Test func cpuMaxQuotas() {
        #expect(CgroupLimits.parse(cpuMax: "200000 100000\n", memoryMax: nil, memoryCurrent: nil).cpuQuota == 2.0)
        #expect(CgroupLimits.parse(cpuMax: "50000 100000", memoryMax: nil, memoryCurrent: nil).cpuQuota == 0.5)
        #expect(CgroupLimits.parse(cpuMax: "  150000   100000  \n", memoryMax: nil, memoryCurrent: nil).cpuQuota == 1.5)
        // no period: the kernel's default of 100000 µs
        #expect(CgroupLimits.parse(cpuMax: "250000\n", memoryMax: nil, memoryCurrent: nil).cpuQuota == 2.5)
        #expect(CgroupLimits.parse(cpuMax: "10000 50000", memoryMax: nil, memoryCurrent: nil).cpuQuota == 0.2)
    }

    @Test func cpuMaxGarbage() {
        for text in ["", "\n", "abc", "1 2 3", "100000 abc", "-5 100000", "0 100000", "100000 0", "1.5 100000"] {
            #expect(CgroupLimits.parse(cpuMax: text, memoryMax: nil, memoryCurrent: nil).cpuQuota == nil, "\(text)")
        }
    }

    @Test func memoryFiles() {
        let l = CgroupLimits.parse(cpuMax: nil, memoryMax: "123456789\n", memoryCurrent: "27107328\n")
        #expect(l == CgroupLimits(cpuQuota: nil, memoryMax: 123_456_789, memoryCurrent: 27_107_328))
        #expect(CgroupLimits.parse(cpuMax: nil, memoryMax: "max\n", memoryCurrent: "0\n")
            == CgroupLimits(memoryMax: nil, memoryCurrent: 0))
        #expect(CgroupLimits.parse(cpuMax: nil, memoryMax: " 4096 ", memoryCurrent: nil).memoryMax == 4096)
    }

    @Test func memoryGarbage() {
        for text in ["", "lots", "12 34", "-1", "1G", "0"] {
            #expect(CgroupLimits.parse(cpuMax: nil, memoryMax: text, memoryCurrent: nil).memoryMax == nil, "\(text)")
        }
        #expect(CgroupLimits.parse(cpuMax: nil, memoryMax: nil, memoryCurrent: "x").memoryCurrent == nil)
        #expect(CgroupLimits.parse(cpuMax: nil, memoryMax: nil, memoryCurrent: nil) == CgroupLimits())
    }

    @Test func unifiedLineOfProcSelfCgroup() {
        #expect(CgroupLimits.unifiedPath(cgroupFile: "0::/user.slice/session-3.scope\n") == "/user.slice/session-3.scope")
        #expect(CgroupLimits.unifiedPath(cgroupFile: hybridCgroup) == "/")
        #expect(CgroupLimits.unifiedPath(cgroupFile: "4:memory:/a\n1:cpu:/\n") == nil)
    }

    @Test func cgroup2MountPoint() throws {
        let m = try #require(CgroupLimits.cgroup2Mount(mountinfo: mountinfo))
        #expect(m.root == "/" && m.point == "/sys/fs/cgroup")
        // hybrid: the v1 controllers and a cgroup2 at unified, as on systemd's hybrid setup
        let hybrid = """
            31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
            """
        #expect(CgroupLimits.cgroup2Mount(mountinfo: hybrid)?.point == "/sys/fs/cgroup/unified")
        // an escaped space in the mount point
        let escaped = "41 31 0:38 /sub /mnt/my\\040cg rw - cgroup2 none rw\n"
        let e = try #require(CgroupLimits.cgroup2Mount(mountinfo: escaped))
        #expect(e.root == "/sub" && e.point == "/mnt/my cg")
        #expect(CgroupLimits.cgroup2Mount(mountinfo: "22 27 0:21 / /proc rw - proc proc rw\n") == nil)
    }

    @Test func cpuList() {
        #expect(countCPUList("0-1\n") == 2)
        #expect(countCPUList("0") == 1)
        #expect(countCPUList("0-3,8,10-11") == 7)
        #expect(countCPUList("x") == nil)
    }

    @Test func meminfoInBytes() {
        let m = parseMeminfo(meminfo)
        #expect(m["MemTotal"] == 16_384_000 * 1024)
        #expect(m["MemAvailable"] == 12_000_000 * 1024)
        #expect(m["HugePages_Total"] == 0)
    }

    // MARK: A fixture tree

    /// A cgroup nested three levels deep whose memory limit and a CPU quota are set only on
    /// an ancestor (user-1000.slice), and a looser CPU quota on the process's own level.
    private func limitedTree() -> FixtureRoot {
        let root = try! FixtureRoot()
        root.write("proc/self/cgroup", "0::/user.slice/user-1000.slice/session-3.scope\n")
        root.write("proc/self/mountinfo", mountinfo)
        root.write("proc/self/status", "Name:\tqw\nCpus_allowed:\tff\nCpus_allowed_list:\t0-7\n")
        root.write("proc/meminfo", meminfo)
        root.write("proc/stat", procStat([100, 0, 100, 800, 0, 0, 0, 0]))
        // the cgroup root has no cpu.max or memory.max
        root.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
        root.write("sys/fs/cgroup/user.slice/cpu.max", "max 100000\n")
        root.write("sys/fs/cgroup/user.slice/memory.max", "max\n")
        root.write("sys/fs/cgroup/user.slice/memory.current", "3000000000\n")
        root.write("sys/fs/cgroup/user.slice/user-1000.slice/cpu.max", "150000 100000\n")
        root.write("sys/fs/cgroup/user.slice/user-1000.slice/memory.max", "4294967296\n")     // 4 GiB
        root.write("sys/fs/cgroup/user.slice/user-1000.slice/memory.current", "1073741824\n") // 1 GiB
        root.write("sys/fs/cgroup/user.slice/user-1000.slice/memory.stat",
                   "anon 536870912\nfile 536870912\ninactive_file 268435456\nactive_file 268435456\n")
        root.write("\(slice)/cpu.max", "400000 100000\n")
        root.write("\(slice)/memory.max", "max\n")
        root.write("\(slice)/memory.current", "524288000\n")
        return root
    }

    @Test func directoriesWalkUpToTheMountPoint() {
        let root = limitedTree()
        let dirs = CgroupLimits.directories(root: root.path)
        #expect(dirs == [
            root.path + "/" + slice,
            root.path + "/sys/fs/cgroup/user.slice/user-1000.slice",
            root.path + "/sys/fs/cgroup/user.slice",
            root.path + "/sys/fs/cgroup",
        ])
    }

    @Test func ancestorLimitsWin() {
        let root = limitedTree()
        let reading = CgroupLimits.readHierarchy(root: root.path)
        #expect(reading.directory == root.path + "/" + slice)
        // cpu: 4 cores on our level, 1.5 on the ancestor; memory: only the ancestor
        #expect(reading.limits == CgroupLimits(cpuQuota: 1.5, memoryMax: 4_294_967_296, memoryCurrent: 1_073_741_824))
        // 4 GiB - (1 GiB - 256 MiB inactive file)
        #expect(reading.memoryHeadroom == 4_294_967_296 - (1_073_741_824 - 268_435_456))
    }

    @Test func capacityFromTheFixture() {
        let root = limitedTree()
        let cap = MachineCapacity.read(root: root.path)
        #expect(cap.cores == 1.5)  // 8 CPUs allowed, quota 1.5
        #expect(cap.memoryTotal == 4_294_967_296)  // 16 GB machine, 4 GiB limit
        #expect(cap.cgroup.memoryMax == 4_294_967_296)
        #expect(cap.cgroup.cpuQuota == 1.5)
    }

    @Test func cpusCapTheQuota() {
        let root = limitedTree()
        root.write("proc/self/status", "Cpus_allowed_list:\t0\n")
        #expect(MachineCapacity.read(root: root.path).cores == 1)
        #expect(MachineCapacity.read(root: root.path, onlineCPUs: 1).cores == 1)
        #expect(MachineCapacity.read(root: root.path, onlineCPUs: 64).cores == 1.5)
    }

    @Test func memoryFromTheFixture() {
        let root = limitedTree()
        let m = MemoryReading.read(root: root.path)
        #expect(m.total == 4_294_967_296)
        let available = 4_294_967_296 - (1_073_741_824 - 268_435_456)
        #expect(m.available == available)
        #expect(m.usedPercent == Double(4_294_967_296 - available) / 4_294_967_296 * 100)
        // the same through the capacity's remembered directories
        let again = MachineCapacity.read(root: root.path).readMemory()
        #expect(again.total == m.total && again.available == m.available)
    }

    @Test func machineAvailableIsTighterThanTheCgroup() {
        let root = limitedTree()
        root.write("proc/meminfo", "MemTotal: 16384000 kB\nMemFree: 500000 kB\nMemAvailable: 1000000 kB\n")
        let m = MemoryReading.read(root: root.path)
        #expect(m.total == 4_294_967_296)
        #expect(m.available == 1_000_000 * 1024)
    }

    @Test func aFullerLooserAncestorLimitsTheRoom() {
        // the parent allows 8 GiB but its other children use almost all of it
        let root = limitedTree()
        root.write("sys/fs/cgroup/user.slice/memory.max", "8589934592\n")
        root.write("sys/fs/cgroup/user.slice/memory.current", "8485076992\n")  // 100 MiB left
        let reading = CgroupLimits.readHierarchy(root: root.path)
        #expect(reading.limits.memoryMax == 4_294_967_296)
        #expect(reading.memoryHeadroom == 100 * 1_048_576)
        #expect(MemoryReading.read(root: root.path).available == 100 * 1_048_576)
    }

    @Test func usageOverTheLimitLeavesNothing() {
        let root = limitedTree()
        root.write("sys/fs/cgroup/user.slice/user-1000.slice/memory.current", "5000000000\n")
        root.write("sys/fs/cgroup/user.slice/user-1000.slice/memory.stat", "inactive_file 0\n")
        let m = MemoryReading.read(root: root.path)
        #expect(m.available == 0)
        #expect(m.usedPercent == 100)
    }

    @Test func noCgroupV2MeansMachineValues() {
        // a hybrid machine like this one: cgroup2 mounted at unified, no controllers there
        let root = try! FixtureRoot()
        root.write("proc/self/cgroup", hybridCgroup)
        root.write("proc/self/mountinfo", "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
        root.write("proc/self/status", "Cpus_allowed_list:\t0-1\n")
        root.write("proc/meminfo", meminfo)
        root.write("sys/fs/cgroup/unified/cgroup.controllers", "\n")
        #expect(CgroupLimits.directories(root: root.path) == [root.path + "/sys/fs/cgroup/unified"])
        let cap = MachineCapacity.read(root: root.path)
        #expect(cap.cores == 2)
        #expect(cap.memoryTotal == 16_384_000 * 1024)
        #expect(cap.cgroup == CgroupLimits())
        let m = MemoryReading.read(root: root.path)
        #expect(m.total == 16_384_000 * 1024 && m.available == 12_000_000 * 1024)
        #expect(m.usedPercent == 4_384_000.0 / 16_384_000.0 * 100)
    }

    @Test func missingMountinfoDefaultsToSysFsCgroup() {
        let root = try! FixtureRoot()
        root.write("proc/self/cgroup", "0::/app\n")
        root.write("proc/meminfo", meminfo)
        root.write("sys/fs/cgroup/app/memory.max", "1048576000\n")
        root.write("sys/fs/cgroup/app/memory.current", "48576000\n")
        #expect(CgroupLimits.directories(root: root.path) == [root.path + "/sys/fs/cgroup/app", root.path + "/sys/fs/cgroup"])
        #expect(MemoryReading.read(root: root.path).available == 1_000_000_000)
    }

    @Test func cgroupOutsideTheNamespaceReadsItsRoot() {
        // in a cgroup namespace, a cgroup outside it shows as a path going up
        let root = try! FixtureRoot()
        root.write("proc/self/cgroup", "0::/../../other\n")
        root.write("proc/self/mountinfo", mountinfo)
        root.write("sys/fs/cgroup/cpu.max", "100000 100000\n")
        #expect(CgroupLimits.directories(root: root.path) == [root.path + "/sys/fs/cgroup"])
        #expect(CgroupLimits.readHierarchy(root: root.path).limits.cpuQuota == 1)
    }

    @Test func subtreeMountStripsItsRoot() {
        let root = try! FixtureRoot()
        root.write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
        root.write("proc/self/mountinfo", "50 40 0:30 /kubepods/pod1 /sys/fs/cgroup ro - cgroup2 cgroup rw\n")
        root.write("sys/fs/cgroup/ctr/memory.max", "2097152\n")
        #expect(CgroupLimits.directories(root: root.path) == [root.path + "/sys/fs/cgroup/ctr", root.path + "/sys/fs/cgroup"])
        #expect(CgroupLimits.readHierarchy(root: root.path).limits.memoryMax == 2_097_152)
    }

    @Test func notInAnyCgroup() {
        let root = try! FixtureRoot()
        root.write("proc/meminfo", meminfo)
        #expect(CgroupLimits.directories(root: root.path) == [])
        let cap = MachineCapacity.read(root: root.path, onlineCPUs: 3)
        #expect(cap.cores == 3 && cap.memoryTotal == 16_384_000 * 1024 && cap.cgroup == CgroupLimits())
    }

    // MARK: CPU sampling

    @Test func samplerGivesTheBusyShareBetweenSamples() {
        let root = limitedTree()
        let sampler = CPUSampler(root: root.path)
        root.write("proc/stat", procStat([1000, 50, 500, 8000, 100, 10, 20, 5]))
        #expect(sampler.sample() == nil)  // the baseline
        // +300 user, +50 system, +600 idle, +50 iowait: busy 350 of 1000
        root.write("proc/stat", procStat([1300, 50, 550, 8600, 150, 10, 20, 5]))
        #expect(sampler.sample() == 35)
        // no tick since: the previous value, baseline unchanged
        #expect(sampler.sample() == 35)
        // fully busy: +100 user, +100 steal
        root.write("proc/stat", procStat([1400, 50, 550, 8600, 150, 10, 20, 105]))
        #expect(sampler.sample() == 100)
        // fully idle
        root.write("proc/stat", procStat([1400, 50, 550, 9600, 150, 10, 20, 105]))
        #expect(sampler.sample() == 0)
    }

    @Test func guestTimeIsNotCountedTwice() {
        let root = limitedTree()
        let sampler = CPUSampler(root: root.path)
        root.write("proc/stat", "cpu  100 0 0 100 0 0 0 0 0 0\n")
        _ = sampler.sample()
        // 100 ticks of guest, already inside user's +100
        root.write("proc/stat", "cpu  200 0 0 200 0 0 0 0 100 0\n")
        #expect(sampler.sample() == 50)
    }

    @Test func samplerRestartsWhenCountersGoBack() {
        let root = limitedTree()
        let sampler = CPUSampler(root: root.path)
        root.write("proc/stat", procStat([1000, 0, 0, 1000, 0, 0, 0, 0]))
        _ = sampler.sample()
        root.write("proc/stat", procStat([10, 0, 0, 10, 0, 0, 0, 0]))
        #expect(sampler.sample() == nil)
        root.write("proc/stat", procStat([40, 0, 0, 20, 0, 0, 0, 0]))
        #expect(sampler.sample() == 75)
    }

    @Test func samplerWithoutProcStat() {
        let root = try! FixtureRoot()
        let sampler = CPUSampler(root: root.path)
        #expect(sampler.sample() == nil)
        #expect(sampler.sample() == nil)
        root.write("proc/stat", "intr 1 2 3\n")
        #expect(sampler.sample() == nil)
    }

    // MARK: This machine

    @Test func realMachineIsSane() {
        let cap = MachineCapacity.read()
        #expect(cap.cores >= 1 || cap.cgroup.cpuQuota != nil)
        #expect(cap.cores > 0)
        #expect(cap.cores <= Double(sysconf(Int32(_SC_NPROCESSORS_CONF))))
        #expect(cap.memoryTotal > 0)
        let m = MemoryReading.read()
        #expect(m.total == cap.memoryTotal)
        #expect(m.available > 0 && m.available <= m.total)
        #expect(m.usedPercent >= 0 && m.usedPercent <= 100)
        let fast = cap.readMemory()
        #expect(fast.total == m.total && fast.available <= fast.total)

        let sampler = CPUSampler()
        #expect(sampler.sample() == nil)
        // burn a little CPU so at least one tick passes
        let end = monotonicSeconds() + 0.05
        var x = 0.0
        while monotonicSeconds() < end { x += 1 }
        #expect(x > 0)
        if let busy = sampler.sample() {
            #expect(busy >= 0 && busy <= 100)
        }
    }
}
