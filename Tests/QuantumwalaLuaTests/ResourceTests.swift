import Glibc
import LuaHost
@testable import QuantumwalaLua
import QuantumwalaCore
import Testing

/// qw.limits, qw.acquire, leases, admission of processes and memory enforcement, from Lua.
@Suite(.serialized)
struct ResourceTests {
    @Test func maxConcurrentBoundsEveryProcess() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        let log = dir + "/events"
        let items = (1...6).map { "[[\(timedItem(log, "0.2", echo: "\($0)"))]]" }.joined(separator: ", ")
        let (o, r) = try runScript("""
            qw.limits{ max_concurrent = 2 }
            local t = qw.now()
            local rs = qw.batch({ \(items) })   -- the batch itself allows all 6 at once
            result = { took = qw.now() - t, n = #rs, used = qw.resources().slots_used }
            """)
        #expect(o.error == nil)
        #expect(r["n"] == 6)
        #expect(r["used"] == 0)
        #expect(maxOverlap(readAll(log)) == 2, "never more than 2 children alive")
        let took = try #require(r["took"].flatMap { if case .number(let d) = $0 { d } else { nil } })
        #expect(took >= 0.6, "three rounds of 0.2 s")
    }

    @Test func memoryRequestsAddUpWithinTheBudget() throws {
        let dir = tempDir()
        defer { _ = system("rm -rf '\(dir)'") }
        let log = dir + "/events"
        let (o, r) = try runScript("""
            local budget = qw.resources().memory_total * qw.limits().memory_percent / 100
            local each = math.floor(budget * 0.6)   -- two of these do not fit together
            local item = [[\(timedItem(log, "0.2", echo: "x"))]]
            local rs = qw.batch({ { "sh", "-c", item, resources = { memory = each } },
                                  { "sh", "-c", item, resources = { memory = each } } })
            result = { ok = rs[1].ok and rs[2].ok, granted = qw.resources().memory_granted }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == true)
        #expect(r["granted"] == 0)
        #expect(maxOverlap(readAll(log)) == 1, "the second waited for the first")
    }

    @Test func impossibleRequestsFailAtOnce() throws {
        let (o, r) = try runScript("""
            local t = qw.now()
            local ok, e = pcall(qw.acquire, { memory = "100T" })
            local ok2, e2 = pcall(qw.acquire, { slots = 99 })
            local res = qw.exec({ "true" }, { resources = { cpu = 10000 } })
            result = { ok = ok, e = e, e2 = e2, took = qw.now() - t, exec_ok = res.ok, exec_err = res.error, code = res.code }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == false)
        #expect(r["e"]?.stringValue?.contains("the request needs 100.0 TiB but only") == true)
        #expect(r["e2"]?.stringValue?.contains("needs 99 slots but max_concurrent is 8") == true)
        #expect(r["exec_ok"] == false)
        #expect(r["code"] == 127)
        #expect(r["exec_err"]?.stringValue?.contains("cores but only") == true)
    }

    @Test func acquireTimesOut() throws {
        let (o, r) = try runScript("""
            qw.limits{ max_concurrent = 1 }
            local held = qw.acquire{ slots = 1 }
            local t = qw.now()
            local ok, e = pcall(qw.acquire, { slots = 1, timeout = 0.2 })
            local waited = qw.now() - t
            held:release()
            local again = qw.acquire{ slots = 1, timeout = 0.2 }
            result = { ok = ok, e = e, waited = waited, again = tostring(again), used = qw.resources().slots_used }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == false)
        #expect(r["e"]?.stringValue?.hasPrefix("test.lua:4: resources not available within 0.2 s") == true)
        #expect(r["again"]?.stringValue?.hasPrefix("qw.lease(slots 1") == true)
        #expect(r["used"] == 1)
    }

    @Test func leasesComeBackOnEveryPath() throws {
        let (o, r) = try runScript("""
            local out = {}
            -- error inside with_resources
            pcall(qw.with_resources, { slots = 2, memory = "1M" }, function() error("inside") end)
            out.after_error = qw.resources().slots_used
            -- a batch function that takes a lease and never releases it
            qw.batch({ function() qw.acquire{ slots = 3 } end, function() qw.acquire{ slots = 1 }; error("x") end })
            out.after_tasks = qw.resources().slots_used
            -- fail_fast cancelling items that hold leases and run processes
            qw.batch({ function() local l = qw.acquire{ slots = 1 }; qw.exec{ "sleep", "5" } end,
                       { "sh", "-c", "exit 1" } }, { fail_fast = true })
            out.after_fail_fast = qw.resources().slots_used
            -- release twice, and a to-be-closed lease
            local l = qw.acquire{ slots = 1 }
            l:release(); l:release()
            do local c <close> = qw.acquire{ slots = 2 } end
            out.after_close = qw.resources().slots_used
            out.granted = qw.resources().memory_granted
            result = out
            """)
        #expect(o.error == nil)
        #expect(r["after_error"] == 0)
        #expect(r["after_tasks"] == 0)
        #expect(r["after_fail_fast"] == 0)
        #expect(r["after_close"] == 0)
        #expect(r["granted"] == 0)
    }

    @Test func aProcessPastItsMemoryIsKilledAndItsNeighbourFinishes() throws {
        let (o, r) = try runScript("""
            qw.limits{ memory_margin = 0.2 }
            local hog = "x=$(head -c 400000000 /dev/zero | tr '\\\\0' x); sleep 10"
            local rs = qw.batch({
              { "sh", "-c", hog, resources = { memory = "64M" } },
              { "sh", "-c", "sleep 0.5; echo neighbour", resources = { memory = "64M" } },
            })
            result = { hog_ok = rs[1].ok, hog_err = rs[1].error, n_ok = rs[2].ok, n_out = rs[2].stdout,
                       used = qw.resources().slots_used }
            """)
        #expect(o.error == nil)
        #expect(r["hog_ok"] == false)
        #expect(r["hog_err"]?.stringValue?.hasPrefix("memory limit exceeded: used ") == true)
        #expect(r["hog_err"]?.stringValue?.hasSuffix(", limit 64.0 MiB") == true)
        #expect(r["n_ok"] == true)
        #expect(r["n_out"] == "neighbour\n")
        #expect(r["used"] == 0)
    }

    @Test func waitingForSlotsYourOwnTaskHoldsIsADeadlockError() throws {
        let (o, _) = try runScript("""
            qw.limits{ max_concurrent = 1 }
            qw.with_resources({ slots = 1 }, function()
              qw.exec{ "true" }   -- needs a slot, and the only one is held around it
            end)
            """)
        #expect(o.error?.message.hasPrefix("test.lua:3: deadlock: every task is waiting and nothing can wake them (1 resource request wait") == true,
                "\(o.error?.message ?? "no error")")
    }

    @Test func cpuTimeLimit() throws {
        let (o, r) = try runScript("""
            local spin = qw.exec({ "sh", "-c", "while :; do :; done" }, { cpu_time = 0.5 })
            local idle = qw.exec({ "sleep", "0.2" }, { cpu_time = 1 })
            result = { ok = spin.ok, signal = spin.signal, err = spin.error, idle_ok = idle.ok }
            """)
        #expect(o.error == nil)
        #expect(r["ok"] == false)
        #expect(r["signal"] == 24)
        #expect(r["err"]?.stringValue?.hasPrefix("cpu time limit exceeded: used ") == true)
        #expect(r["idle_ok"] == true, "sleeping costs no CPU time")
    }

    @Test func estimatePolicyAndHistory() throws {
        let (o, r) = try runScript("""
            local seen = {}
            qw.limits{ estimate = function(task) seen[#seen + 1] = task.name; return { memory = "10M" } end }
            qw.exec{ "true" }
            qw.batch({ "echo hi", { "true", name = "named" } })
            qw.limits{ estimate = false }
            qw.exec{ "true" }
            table.sort(seen)
            result = { seen = table.concat(seen, ","), policy = qw.limits().estimate == nil }
            """)
        #expect(o.error == nil)
        #expect(r["seen"] == "echo hi,named,true")
        #expect(r["policy"] == true)
    }

    @Test func badRequestsNameTheField() throws {
        try expectFailures([
            ("qw.acquire{ memory = 'lots' }", "test.lua:1: qw.acquire: resources.memory must be bytes or a size such as \"512M\" or \"2G\" (got 'lots')"),
            ("qw.acquire{ gpus = 1 }", "test.lua:1: qw.acquire: unknown resource 'gpus' (slots, cpu, memory, timeout)"),
            ("qw.limits{ max_concurent = 2 }", "test.lua:1: qw.limits: unknown limit 'max_concurent'"),
            ("qw.limits{ cpu_percent = 150 }", "test.lua:1: qw.limits: cpu_percent must be a number in (0, 100]"),
            ("qw.exec({ 'true' }, { resources = 5 })", "test.lua:1: qw.exec: option 'resources' must be a table"),
        ])
    }
}

/// The admission queue itself: order, fairness, limits.
@Suite struct ResourceManagerTests {
    func manager(_ limits: ResourceLimits = ResourceLimits(), load: LoadReading = LoadReading(cpuBusyPercent: 0, memoryUsedPercent: 0)) -> (ResourceManager, Reactor) {
        let reactor = Reactor()
        return (ResourceManager(reactor: reactor, cores: 4, memoryTotal: 1 << 30, limits: limits) { load }, reactor)
    }

    @Test func aLargeRequestIsNotPassedForever() {
        var limits = ResourceLimits()
        limits.maxConcurrent = 4
        let (m, reactor) = manager(limits)
        defer { withExtendedLifetime(reactor) {} }
        var held: [Lease] = []
        for _ in 0..<4 { m.acquire(ResourceRequest()) { if case .success(let l) = $0 { held.append(l) } } }
        #expect(m.slotsUsed == 4)
        var bigGranted = false
        m.acquire(ResourceRequest(slots: 4)) { if case .success = $0 { bigGranted = true } }
        // a stream of small requests: each release lets one in, until the big one's turn
        var grantsBeforeBig = 0
        for _ in 0..<50 where !bigGranted {
            m.acquire(ResourceRequest()) { if case .success(let l) = $0 { held.append(l); if !bigGranted { grantsBeforeBig += 1 } } }
            if let l = held.first {
                held.removeFirst()
                m.release(l)
            }
        }
        if !bigGranted {  // the small ones still hold slots: release them all
            while let l = held.popLast() { m.release(l) }
        }
        #expect(bigGranted)
        #expect(grantsBeforeBig <= m.maxBypass)
    }

    @Test func liveLoadHoldsBackAllButTheFirst() {
        let (m, reactor) = manager(load: LoadReading(cpuBusyPercent: 99, memoryUsedPercent: 10))
        defer { withExtendedLifetime(reactor) {} }
        var first = false, second = false
        m.acquire(ResourceRequest()) { if case .success = $0 { first = true } }
        m.acquire(ResourceRequest()) { if case .success = $0 { second = true } }
        #expect(first, "nothing of ours runs: granted whatever the load")
        #expect(!second, "the machine is busy: the second waits")
        #expect(m.queued == 1)
    }

    @Test func cancelAndLoweredLimits() {
        let (m, reactor) = manager()
        defer { withExtendedLifetime(reactor) {} }
        var held: Lease?
        m.acquire(ResourceRequest(slots: 8)) { if case .success(let l) = $0 { held = l } }
        var outcome: String?
        let id = m.acquire(ResourceRequest(slots: 4)) { r in
            if case .failure(let e) = r { outcome = e.message }
        }
        #expect(id != nil)
        m.cancel(id!, reason: "no longer needed")
        #expect(outcome == "no longer needed")
        var lowered: String?
        m.acquire(ResourceRequest(slots: 6)) { r in if case .failure(let e) = r { lowered = e.message } }
        var l = m.limits
        l.maxConcurrent = 4
        m.limits = l
        #expect(lowered == "the request needs 6 slots but max_concurrent is 4")
        m.release(held!)
        #expect(m.slotsUsed == 0)
    }

    @Test func sizes() {
        #expect(parseByteSize("512M") == 512 << 20)
        #expect(parseByteSize("1.5G") == 3 << 29)
        #expect(parseByteSize("2gb") == 2 << 30)
        #expect(parseByteSize("4KiB") == 4096)
        #expect(parseByteSize("100") == 100)
        #expect(parseByteSize("lots") == nil)
        #expect(parseByteSize("-1M") == nil)
        #expect(parseByteSize(" 3 ") == 3 && parseByteSize("B") == nil && parseByteSize("G") == nil)
        // past Int: no size, not a trap
        #expect(parseByteSize("99999999999T") == nil && parseByteSize("1e30") == nil)
        #expect(parseByteSize("99999999999999999999") == nil)
        #expect(formatBytes(1536) == "1.5 KiB")
    }
}
