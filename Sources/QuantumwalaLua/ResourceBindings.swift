import CLua
import Glibc
import LuaHost
import QuantumwalaCore

/// What past runs of a command used, by its label, for estimating unrequested resources.
struct UsageHistory {
    struct Entry {
        var runs = 0
        var peakRSS = 0
        var cpuPerSecond = 0.0
    }
    private(set) var entries: [String: Entry] = [:]
    /// qw's own peak resident memory as last read (it only grows).
    private var ownPeak = 0

    /// Records a run; `sampled` is the highest memory sample taken while it ran, if any.
    ///
    /// The kernel's `max_rss` counts only when it is above qw's own peak: a child starts in
    /// qw's address space, and Linux folds that space's peak into the child's `max_rss` at
    /// its exec, so a value at or below it may be qw's and says nothing of the command.
    /// (qw's own `getrusage` figure will not do: it holds the peak of whatever started qw,
    /// the same way.)
    mutating func record(_ label: String, _ r: ProcessResult, sampled: Int?) {
        guard r.pid > 0 else { return }
        if r.maxRSS > ownPeak { ownPeak = ownPeakRSS() ?? ownPeak }
        var e = entries[label] ?? Entry()
        e.runs += 1
        e.peakRSS = max(e.peakRSS, r.maxRSS > ownPeak ? r.maxRSS : 0, sampled ?? 0)
        let load = r.duration > 0.05 ? r.cpuTime / r.duration : 0
        e.cpuPerSecond += (load - e.cpuPerSecond) / Double(e.runs)
        entries[label] = e
    }
}

/// This process's peak resident memory (VmHWM, of its own address space), in bytes.
func ownPeakRSS() -> Int? {
    guard let status = readFile("/proc/self/status") else { return nil }
    let text = String(decoding: status, as: UTF8.self)
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kb = Int(line.dropFirst(6).filter { $0 != " " && $0 != "\t" }.dropLast(2))
    else { return nil }
    return kb * 1024
}

/// A lease as its Lua handle holds it.
final class LeaseBox {
    let lease: Lease
    init(_ lease: Lease) { self.lease = lease }
}

extension Runtime {
    static let leaseMetatable = "qw.lease"

    /// The request for a command that named none: one slot, and what its past runs used
    /// (CPU load, peak memory) once it has run before.
    func estimate(for spec: CommandSpec) -> ResourceRequest {
        guard let e = history.entries[spec.label] else { return ResourceRequest() }
        return ResourceRequest(slots: 1, cpu: min(e.cpuPerSecond, resources.cpuBudget),
                               memory: min(e.peakRSS, resources.memoryBudget))
    }

    func registerResources(in t: Int32) {
        // qw.limits{ max_concurrent, cpu_percent, memory_percent, memory_margin } -> limits
        lua.setFunction("limits", in: t) { [unowned self] call in
            let s = call.stack
            if s.type(at: 1) == .table {
                var l = resources.limits
                s.pushNil()
                while s.next(1) {
                    defer { s.pop() }
                    guard let key = s.type(at: -2) == .string ? s.string(at: -2) : nil else {
                        throw LuaArgumentError("qw.limits: limits take named fields")
                    }
                    let n = s.type(at: -1) == .number ? s.number(at: -1) : nil
                    switch key {
                    case "max_concurrent":
                        guard let v = s.type(at: -1) == .number ? s.integer(at: -1) : nil, v >= 1 else {
                            throw LuaArgumentError("qw.limits: max_concurrent must be a whole number >= 1")
                        }
                        l.maxConcurrent = Int(v)
                    case "cpu_percent", "memory_percent":
                        guard let v = n, v > 0, v <= 100 else {
                            throw LuaArgumentError("qw.limits: \(key) must be a number in (0, 100]")
                        }
                        if key == "cpu_percent" { l.cpuPercent = v } else { l.memoryPercent = v }
                    case "memory_margin":
                        guard let v = n, v >= 0, v.isFinite else {
                            throw LuaArgumentError("qw.limits: memory_margin must be a number >= 0 (0.25 allows 25% over)")
                        }
                        l.memoryMargin = v
                    case "estimate":
                        break  // a Lua policy, kept by stdlib
                    default:
                        throw LuaArgumentError("qw.limits: unknown limit '\(key)' (max_concurrent, cpu_percent, memory_percent, memory_margin, estimate)")
                    }
                }
                resources.limits = l
            } else if s.type(at: 1) != .none && s.type(at: 1) != .nil {
                throw LuaArgumentError("qw.limits: expects a table of limits (got \(s.type(at: 1).name))")
            }
            pushLimits(s)
            return .values(1)
        }

        // qw.acquire{ slots, cpu, memory, timeout } -> lease
        lua.setFunction("acquire", in: t) { [unowned self] call in
            let s = call.stack
            guard s.type(at: 1) == .table else {
                throw LuaArgumentError("qw.acquire: expects a request table such as { memory = \"1G\" } (got \(s.type(at: 1).name))")
            }
            let (request, timeout) = try parseResourceRequest(s, at: 1, function: "qw.acquire")
            try scheduler.checkCancelled()
            let task = scheduler.current
            let w = scheduler.waiter()
            let id = resources.acquire(request, timeout: timeout) { [unowned self] result in
                switch result {
                case .failure(let e):
                    w.fail(e.message)
                case .success(let lease):
                    if let task, !task.finished {
                        task.leases.append(lease)
                    } else if task != nil {
                        resources.release(lease)  // its task is gone: nobody can use it
                        w.fail("cancelled")
                        return
                    }
                    w.succeed { [unowned self] st in
                        pushLease(lease, on: st)
                        return 1
                    }
                }
            }
            if let id { w.onCancel = { [unowned self] reason in resources.cancel(id, reason: reason) } }
            return scheduler.wait(w, call)
        }

        // qw.resources() -> { running, queued, slots_used, slots_total, ... }
        lua.setFunction("resources", in: t) { [unowned self] call in
            let s = call.stack
            let mem = MemoryReading.read()
            s.newTable(hash: 14)
            s.push(scheduler.runningProcesses); s.setField(-2, "running")
            s.push(resources.queued); s.setField(-2, "queued")
            s.push(resources.slotsUsed); s.setField(-2, "slots_used")
            s.push(resources.limits.maxConcurrent); s.setField(-2, "slots_total")
            if let c = lastCPUPercent() { s.push(c); s.setField(-2, "cpu_percent") }
            s.push(mem.usedPercent); s.setField(-2, "memory_percent")
            s.push(mem.available); s.setField(-2, "memory_available")
            s.push(resources.cores); s.setField(-2, "cores")
            s.push(resources.memoryTotal); s.setField(-2, "memory_total")
            s.push(resources.cpuGranted); s.setField(-2, "cpu_granted")
            s.push(resources.memoryGranted); s.setField(-2, "memory_granted")
            pushLimits(s)
            s.setField(-2, "limits")
            return .values(1)
        }

        luaL_newmetatable(lua.L, Self.leaseMetatable)
        lua.stack.newTable()
        lua.setFunction("release", in: -1) { [unowned self] call in
            if let ud = call.stack.userdata(at: 1, Self.leaseMetatable), let box = object(ud.load(as: Int.self)) as? LeaseBox {
                resources.release(box.lease)
            } else {
                throw LuaArgumentError("lease:release() needs a lease (call it with ':')")
            }
            return .values(0)
        }
        lua.setFunction("released", in: -1) { [unowned self] call in
            let box = call.stack.userdata(at: 1, Self.leaseMetatable).flatMap { object($0.load(as: Int.self)) as? LeaseBox }
            call.stack.push(box?.lease.released ?? true)
            return .values(1)
        }
        lua.stack.setField(-2, "__index")
        // dropped or closed (local l <close> = qw.acquire{...}): the lease goes back
        for name in ["__gc", "__close"] {
            lua.setFunction(name, in: -1) { [handles, resources] call in
                if !handles.closing, let ud = call.stack.userdata(at: 1, Self.leaseMetatable) {
                    let id = ud.load(as: Int.self)
                    if let box = handles.object(id) as? LeaseBox { resources.release(box.lease) }
                    if name == "__gc" { handles.drop(id) }
                }
                return .values(0)
            }
        }
        lua.setFunction("__tostring", in: -1) { [unowned self] call in
            let box = call.stack.userdata(at: 1, Self.leaseMetatable).flatMap { object($0.load(as: Int.self)) as? LeaseBox }
            call.stack.push(box.map { "qw.lease(\(resources.describe($0.lease.request))\($0.lease.released ? ", released" : ""))" } ?? "qw.lease")
            return .values(1)
        }
        lua.stack.pop()
    }

    private func pushLease(_ lease: Lease, on s: LuaStack) {
        pushHandle(LeaseBox(lease), metatable: Self.leaseMetatable, on: s)
    }

    private func pushLimits(_ s: LuaStack) {
        let l = resources.limits
        s.newTable(hash: 4)
        s.push(l.maxConcurrent); s.setField(-2, "max_concurrent")
        s.push(l.cpuPercent); s.setField(-2, "cpu_percent")
        s.push(l.memoryPercent); s.setField(-2, "memory_percent")
        s.push(l.memoryMargin); s.setField(-2, "memory_margin")
    }
}
