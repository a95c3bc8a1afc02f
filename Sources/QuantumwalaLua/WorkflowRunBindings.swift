import CLua
import CLuaShims
import Glibc
import LuaHost
import QuantumwalaCore

/// The Lua side of one workflow run: worker coroutines in stdlib ask it for the next ready
/// task and report how each ended; it keeps the engine's records flowing to the store in
/// batches: at 20,000 changes, every 0.5 s, and 20 ms after a change whenever the event
/// loop runs (so a finished task is on disk before the engine sits waiting).
final class WorkflowRunHandle {
    let run: WorkflowRun
    unowned let runtime: Runtime
    private var waiters: [Waiter] = []
    private var lastFlush = monotonicSeconds()
    private var flushTimer: Reactor.TimerID?
    /// A flush from the timer that failed: raised at the next call.
    private var flushError: String?

    static let maxPending = 20_000
    static let flushEvery = 0.5
    static let idleFlush = 0.02

    /// The report's results table (registry reference), where a task the engine fails after
    /// it returned (a declared output missing) gets its error.
    var resultsRef: Int32 = LUA_NOREF

    init(run: WorkflowRun, runtime: Runtime) {
        self.run = run
        self.runtime = runtime
    }

    deinit {
        if resultsRef != LUA_NOREF && !runtime.handles.closing { runtime.lua.release(resultsRef) }
    }

    /// What changed is written at most ``idleFlush`` seconds later, whenever the event loop
    /// runs (a long stretch of tasks that never wait is covered by the other two bounds).
    private func armFlush() {
        guard run.pendingChanges > 0, flushTimer == nil else { return }
        flushTimer = runtime.reactor.after(Self.idleFlush) { [unowned self] in
            flushTimer = nil
            do throws(LuaArgumentError) { try flush() } catch { flushError = error.message }
        }
    }

    /// Hands the changes since the last flush to the store's writer thread; with `wait`,
    /// until they (and all before them) are written. A failed write is raised here, at the
    /// latest by the next flush.
    func flush(wait: Bool = false) throws(LuaArgumentError) {
        if let t = flushTimer {
            runtime.reactor.cancel(t)
            flushTimer = nil
        }
        let writer = runtime.storeWriter
        if let e = flushError ?? writer.takeFailure() {
            flushError = nil
            throw LuaArgumentError(e)
        }
        let store = try runtime.stateStore()
        if run.pendingChanges > 0 {
            let c = run.takeChanges(), name = run.name
            writer.submit { () throws(StoreError) in try store.saveTasks(name, c.records, attempts: c.attempts, events: c.events, counts: c.counts) }
        }
        lastFlush = monotonicSeconds()
        if wait, let e = writer.drain() { throw LuaArgumentError(e) }
    }

    /// The 1-based index of the next ready task (now running), waiting while tasks run that
    /// may make one ready; nothing once all have ended.
    func next(_ call: LuaCall) throws(LuaArgumentError) -> LuaReturn {
        try runtime.scheduler.checkCancelled()
        call.stack.top = 1
        if let e = flushError {
            flushError = nil
            throw LuaArgumentError(e)
        }
        if let i = run.next() {
            // the task is running now: say so soon, even if no other worker ever waits (a
            // workflow of one long task would otherwise show it only when it ended)
            armFlush()
            call.stack.push(i + 1)
            return .values(1)
        }
        if run.finished { return .values(0) }
        // nothing ready yet: wait for a task to end
        armFlush()
        let w = runtime.scheduler.waiter()
        waiters.append(w)
        w.onCancel = { [unowned self, weak w] reason in
            if let w { waiters.removeAll { $0 === w } }
            w?.fail(reason)
        }
        return runtime.scheduler.wait(w, call)
    }

    /// Hands ready tasks to waiting workers, and ends the wait of all once nothing is left.
    private func wake() {
        while !waiters.isEmpty, let i = run.next() {
            let w = waiters.removeFirst()
            w.succeed { s in
                s.push(i + 1)
                return 1
            }
        }
        if run.finished {
            let ws = waiters
            waiters = []
            for w in ws { w.succeed { _ in 0 } }
        }
    }

    /// Task i (argument 2) ended: `ok` (3) false means it raised `value` (4); a result table
    /// with `ok == false` counts as a failure. `attempts` (5) is how many a retry policy made.
    func done(_ call: LuaCall) throws(LuaArgumentError) {
        let s = call.stack
        // a task cut short by a cancel (Ctrl-C, an error elsewhere) did not end: it stays
        // running in the store, and runs again next time
        try runtime.scheduler.checkCancelled()
        guard let n = s.integer(at: 2), n >= 1, Int(n) <= run.ids.count else { throw LuaArgumentError("h:done: bad task index") }
        let i = Int(n) - 1
        var e = WorkflowRun.Ending(ok: s.bool(at: 3))
        let v: Int32 = 4
        if !e.ok {
            e.error = s.type(at: v) == .string ? s.string(at: v) : s.type(at: v) == .table ? field(s, v, "error") : "failed"
        } else if s.type(at: v) == .table {
            s.getField(v, "ok")
            if s.type(at: -1) == .boolean && !s.bool(at: -1) {
                e.ok = false
                e.error = field(s, v, "error") ?? "failed"
            }
            s.pop()
            e.attempts = number(s, v, "attempts").map { Int($0) }
            e.duration = number(s, v, "duration")
            e.code = number(s, v, "code").map { Int($0) }
            e.maxRSS = number(s, v, "max_rss").map { Int($0) }
            e.cpuTime = number(s, v, "cpu_time")
        }
        if s.type(at: v) != .nil {
            // a result that cannot be stored (a function, a process handle) is kept as its kind
            if let value = try? s.value(at: v), let json = try? JSON.encode(value) {
                e.result = json
            } else {
                e.result = try? JSON.encode(.string("<\(s.type(at: v).name)>"))
            }
        }
        if let t = s.integer(at: 5) { e.attempts = Int(t) }
        if let why = run.end(i, e), resultsRef != LUA_NOREF {
            // the task's own result said ok: make the report say why it failed
            if s.type(at: v) == .table {
                s.push(false); s.setField(v, "ok")
                s.push(why); s.setField(v, "error")
            } else {
                runtime.lua.pushRef(resultsRef, on: s)
                s.newTable(hash: 2)
                s.push(false); s.setField(-2, "ok")
                s.push(why); s.setField(-2, "error")
                s.setField(-2, run.ids[i])
                s.pop()
            }
        }
        if run.pendingChanges >= Self.maxPending || monotonicSeconds() - lastFlush > Self.flushEvery { try flush() }
        armFlush()
        wake()
    }

    private func field(_ s: LuaStack, _ t: Int32, _ k: String) -> String? {
        s.getField(t, k)
        defer { s.pop() }
        return s.type(at: -1) == .nil ? nil : s.string(at: -1) ?? "<\(s.type(at: -1).name)>"
    }

    private func number(_ s: LuaStack, _ t: Int32, _ k: String) -> Double? {
        s.getField(t, k)
        defer { s.pop() }
        return s.type(at: -1) == .number ? s.number(at: -1) : nil
    }

    /// `h:attempt(i, result)`: a failed attempt of a task with a retry policy.
    func attempt(_ call: LuaCall) throws(LuaArgumentError) -> LuaReturn {
        let s = call.stack
        guard let n = s.integer(at: 2), n >= 1, Int(n) <= run.ids.count else { throw LuaArgumentError("h:attempt: bad task index") }
        let r: Int32 = 3
        let isTable = s.type(at: r) == .table
        run.noteFailedAttempt(Int(n) - 1, error: isTable ? field(s, r, "error") : s.string(at: r),
                              code: isTable ? number(s, r, "code").map { Int($0) } : nil,
                              duration: isTable ? number(s, r, "duration") : nil,
                              maxRSS: isTable ? number(s, r, "max_rss").map { Int($0) } : nil,
                              cpuTime: isTable ? number(s, r, "cpu_time") : nil)
        return .values(0)
    }
}

extension Runtime {
    static let workflowRunMetatable = "qw.workflow_run"

    /// Reads the tasks that stdlib hands over, from stack index `at` on: the workflow's task
    /// table (ids and dependencies, see qw_wf_task_adder), then lists in definition order of
    /// opts (a table, or false), fingerprints, and by place for the tasks that have them, bases,
    /// inputs and outputs.
    ///
    /// A dependency on a task defined before it is a place already; the others are resolved
    /// here, by name.
    ///
    /// - Throws: the engine's message for a dependency on an unknown task.
    private func readTaskDefs(_ s: LuaStack, at first: Int32, workflow: String) throws(LuaArgumentError) -> [WorkflowTaskDef] {
        let optss = first + 1, fps = first + 2, bases = first + 3, inputs = first + 4, outputs = first + 5
        guard let table = qw_wf_defs_at(s.L, first) else { throw LuaArgumentError("_wf_prepare: the tasks must be a workflow's task table") }
        for (k, what) in [(optss, "opts"), (fps, "fingerprints"), (bases, "bases"), (inputs, "inputs"), (outputs, "outputs")]
        where s.type(at: k) != .table {
            throw LuaArgumentError("_wf_prepare: the \(what) must be a table")
        }
        func text(_ p: UnsafePointer<CChar>?, _ len: Int) -> String {
            guard let p, len > 0 else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: UnsafeRawPointer(p), count: len), as: UTF8.self)
        }
        func id(_ i: Int) -> String {
            var len = 0
            let p = qw_wf_defs_id(table, UInt32(i), &len)
            return text(p, len)
        }
        let n = Int(qw_wf_defs_count(table))
        var defs: [WorkflowTaskDef] = []
        defs.reserveCapacity(n)
        let kRetry = s.top + 1
        s.push("retry")
        defer { s.top = kRetry - 1 }
        func strings(_ t: Int32) -> [String] {
            let m = s.rawLength(t)
            var out: [String] = []
            out.reserveCapacity(m)
            for k in 0..<m {
                s.getIndex(t, k + 1)
                out.append(s.text(at: -1) ?? s.string(at: -1) ?? "")
                s.pop()
            }
            return out
        }
        let cwd = currentDirectory()
        for i in 0..<n {
            let id = id(i)
            var count: UInt32 = 0
            var deps: [Int32] = []
            if let d = qw_wf_defs_deps(table, UInt32(i), &count) {
                deps.reserveCapacity(Int(count))
                for k in 0..<Int(count) {
                    var j = d[k]
                    if j < 0 {
                        var len = 0
                        let name = qw_wf_defs_name(table, j, &len)
                        let found = qw_wf_defs_find(table, name, len)
                        guard found >= 0 else {
                            throw LuaArgumentError("workflow '\(workflow)': task '\(id)' depends on unknown task '\(text(name, len))'")
                        }
                        j = Int32(found)
                    }
                    deps.append(j)
                }
            }
            s.getIndex(fps, i + 1); let fp = s.text(at: -1) ?? ""; s.pop()
            var retries = false, taskInputs: [String]?, taskOutputs: [String]?, base: String?
            if s.getIndex(optss, i + 1) == .table {
                retries = s.getField(-1, keyAt: kRetry) != .nil
                s.pop()
            }
            s.pop()
            if s.getIndex(bases, i + 1) == .string { base = s.text(at: -1) }
            s.pop()
            if s.getIndex(inputs, i + 1) == .table { taskInputs = strings(s.top) }
            s.pop()
            if s.getIndex(outputs, i + 1) == .table { taskOutputs = strings(s.top) }
            s.pop()
            var def = WorkflowTaskDef(id: id, deps: [], fingerprint: fp, inputs: taskInputs, outputs: taskOutputs,
                                      base: base.map { PathPattern.absolute($0, base: cwd) } ?? cwd, retries: retries)
            def.depIndices = deps
            defs.append(def)
        }
        return defs
    }

    func registerWorkflowRuns(in t: Int32) {
        // qw._wf_prepare(name, tasks, opts, fingerprints, bases, inputs, outputs) -> handle;
        // raises on an unknown dependency or a cycle (see readTaskDefs)
        lua.setFunction("_wf_prepare", in: t) { [unowned self] call in
            let s = call.stack
            let name = s.string(at: 1) ?? ""
            let defs = try readTaskDefs(s, at: 2, workflow: name)
            let run: WorkflowRun
            do throws(WorkflowError) {
                // the store's cache of content hashes (the store opens on first use)
                run = try WorkflowRun(name: name, tasks: defs, hashes: ContentHashes(lookup: { [unowned self] path in
                    (try? stateStore()).flatMap { try? $0.cachedHash(path) } ?? nil
                }))
            } catch {
                throw LuaArgumentError(error.message)
            }
            pushHandle(WorkflowRunHandle(run: run, runtime: self), metatable: Self.workflowRunMetatable, on: s)
            return .values(1)
        }

        luaL_newmetatable(lua.L, Self.workflowRunMetatable)
        lua.stack.newTable()
        func handle(_ call: LuaCall) throws(LuaArgumentError) -> WorkflowRunHandle {
            guard let h = handleObject(call.stack, metatable: Self.workflowRunMetatable, as: WorkflowRunHandle.self)
            else { throw LuaArgumentError("expected a workflow run (call its methods with ':')") }
            return h
        }
        // h:levels() -> { {ids}, ... }: what can run in parallel, by dependency depth
        lua.setFunction("levels", in: -1) { call in
            let run = try handle(call).run
            let s = call.stack
            let levels = run.levels()
            s.newTable(array: Int32(levels.count))
            for (k, level) in levels.enumerated() {
                s.newTable(array: Int32(level.count))
                for (j, i) in level.enumerated() {
                    s.push(run.ids[i])
                    s.setIndex(-2, j + 1)
                }
                s.setIndex(-2, k + 1)
            }
            return .values(1)
        }
        // h:decide(fresh, list) -> (when list is true) { { id, run, reason, reasons }, ... } in
        // definition order
        lua.setFunction("decide", in: -1) { [unowned self] call in
            let h = try handle(call)
            let fresh = call.stack.bool(at: 2)
            let store = try stateStore()
            let previous = fresh ? [] : try storeCall { () throws(StoreError) in try store.tasks(of: h.run.name) }
            let hashes = h.run.hashes
            do throws(WorkflowError) {
                try h.run.decide(previous: previous, fresh: fresh)
            } catch {
                throw LuaArgumentError(error.message)
            }
            try storeCall { () throws(StoreError) in try store.cacheHashes(hashes.takeFresh()) }
            let s = call.stack
            guard s.bool(at: 3) else { return .values(0) }
            s.newTable(array: Int32(h.run.ids.count))
            for (i, d) in h.run.decisions.enumerated() {
                s.newTable(hash: 4)
                s.push(h.run.ids[i]); s.setField(-2, "id")
                s.push(d.run); s.setField(-2, "run")
                if let r = d.reasons.first {
                    s.push(r); s.setField(-2, "reason")
                    s.newTable(array: Int32(d.reasons.count))
                    for (k, r) in d.reasons.enumerated() { s.push(r); s.setIndex(-2, k + 1) }
                    s.setField(-2, "reasons")
                }
                s.setIndex(-2, i + 1)
            }
            return .values(1)
        }
        // h:begin(results) -> number of tasks to run; results of kept tasks go into `results`
        lua.setFunction("begin", in: -1) { call in
            let h = try handle(call)
            let s = call.stack
            s.pushValue(at: 2)
            lua_xmove(s.L, h.runtime.lua.L, 1)  // refs are taken on the main stack
            h.resultsRef = h.runtime.lua.ref()
            for i in h.run.begin() {
                if let json = h.run.previousRecord(i)?.result, let v = try? JSON.decode(json) {
                    s.push(v)
                    s.setField(2, h.run.ids[i])
                }
            }
            s.push(h.run.decisions.reduce(0) { $0 + ($1.run ? 1 : 0) })
            return .values(1)
        }
        // h:step([i, ok, value, attempts]) -> the next task to run: reports how task i ended
        // first, when given
        lua.setFunction("step", in: -1) { call in
            let h = try handle(call)
            if call.stack.top >= 2 { try h.done(call) }
            return try h.next(call)
        }
        lua.setFunction("attempt", in: -1) { call in try handle(call).attempt(call) }
        // h:flush() -> once every change so far is written
        lua.setFunction("flush", in: -1) { call in
            try handle(call).flush(wait: true)
            return .values(0)
        }
        // h:prepare(i) -> nil, or why the task cannot start (an input cannot be read)
        lua.setFunction("prepare", in: -1) { call in
            let h = try handle(call)
            guard let n = call.stack.integer(at: 2) else { return .values(0) }
            guard let e = h.run.prepareInputs(Int(n) - 1) else { return .values(0) }
            call.stack.push(e)
            return .values(1)
        }
        // h:hashed() -> { files, bytes }: what was read to hash inputs
        lua.setFunction("hashed", in: -1) { call in
            let hashes = try handle(call).run.hashes
            call.stack.newTable(hash: 2)
            call.stack.push(hashes.filesRead); call.stack.setField(-2, "files")
            call.stack.push(Int(hashes.bytesRead)); call.stack.setField(-2, "bytes")
            return .values(1)
        }
        // h:outcome() -> succeeded, failed, skipped (lists of ids, in definition order)
        lua.setFunction("outcome", in: -1) { call in
            let run = try handle(call).run
            let s = call.stack
            let o = run.outcome()
            for list in [o.succeeded, o.failed, o.skipped] {
                s.newTable(array: Int32(list.count))
                for (k, i) in list.enumerated() {
                    s.push(run.ids[i])
                    s.setIndex(-2, k + 1)
                }
            }
            return .values(3)
        }
        lua.stack.setField(-2, "__index")
        lua.setFunction("__gc", in: -1) { [handles] call in
            if let ud = call.stack.userdata(at: 1, Self.workflowRunMetatable) { handles.drop(ud.load(as: Int.self)) }
            return .values(0)
        }
        lua.stack.pop()
    }
}
