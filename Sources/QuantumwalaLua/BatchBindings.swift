import CLua
import LuaHost
import QuantumwalaCore

/// The Swift side of `qw.batch`: launches items up to `max_concurrent` at a time and hands
/// back each finished item, in finishing order, to the Lua loop in stdlib that calls
/// `on_done` and fills the results in item order.
final class Batch {
    enum Item {
        indirect case command(ExecOptions)
        /// A Lua function, anchored in the registry.
        case function(ref: Int32)
        /// Already started (its definition is no longer needed).
        case launched
    }

    enum Outcome {
        case process(ProcessResult, name: String)
        /// A function's first return value, anchored in the registry (or nil: LUA_NOREF).
        case value(ref: Int32)
        case failed(message: String, traceback: String?)
    }

    private(set) var items: [Item]
    let maxConcurrent: Int
    /// Cancel the rest as soon as an item fails (before another one is launched).
    let failFast: Bool
    unowned let runtime: Runtime
    private var nextIndex = 0
    private var running = 0
    private var children: [Int: AdmittedProcess] = [:]
    private var tasks: [Int: Task] = [:]
    private var done: [(Int, Outcome)] = []
    private var doneHead = 0
    private var waiter: Waiter?
    private var drainWaiters: [Waiter] = []
    private(set) var cancelled: String?

    init(items: [Item], maxConcurrent: Int, failFast: Bool, runtime: Runtime) {
        self.items = items
        self.maxConcurrent = max(1, maxConcurrent)
        self.failFast = failFast
        self.runtime = runtime
    }

    /// Adds an item after the start (workflows add tasks as their dependencies finish).
    ///
    /// - Returns: its 0-based index.
    func add(_ item: Item) -> Int {
        items.append(item)
        if cancelled != nil, case .function(let ref) = item { runtime.lua.release(ref) }
        pump()
        return items.count - 1
    }

    /// Set while ``pump()`` runs: an item can finish within its launch (a command that
    /// cannot start), and the loop here goes on instead of nesting one level per item.
    private var pumping = false

    /// Launches items while slots remain.
    func pump() {
        guard !pumping else { return }
        pumping = true
        defer { pumping = false }
        while running < maxConcurrent && nextIndex < items.count && cancelled == nil {
            let i = nextIndex
            nextIndex += 1
            running += 1
            launch(i)
        }
    }

    private func launch(_ i: Int) {
        let scheduler = runtime.scheduler
        let item = items[i]
        items[i] = .launched
        switch item {
        case .command(let o):
            let spec = o.spec, check = o.check
            let child = runtime.startProcess(o) { [unowned self] r in
                children[i] = nil
                if check && !r.ok {
                    finished(i, .failed(message: checkFailureMessage(r, label: spec.label), traceback: nil), failed: true)
                } else {
                    finished(i, .process(r, name: spec.label), failed: !r.ok)
                }
            }
            if let child, child.running { children[i] = child }
        case .function(let ref):
            runtime.lua.pushRef(ref)
            runtime.lua.release(ref)
            let task = scheduler.start { [unowned self] task, end in
                tasks[i] = nil
                switch end {
                case .returned(let count):
                    let s = task.stack
                    if count == 0 {
                        finished(i, .value(ref: LUA_NOREF))
                    } else {
                        s.top = s.top - count + 1  // keep the first result
                        // a returned result table with ok == false counts as a failure
                        var failed = false
                        if s.type(at: -1) == .table {
                            s.getField(-1, "ok")
                            failed = s.type(at: -1) == .boolean && !s.bool(at: -1)
                            s.pop()
                        }
                        lua_xmove(task.thread, runtime.lua.L, 1)
                        finished(i, .value(ref: runtime.lua.ref()), failed: failed)
                    }
                case .failed(let message, let traceback):
                    finished(i, .failed(message: message, traceback: traceback), failed: true)
                }
            }
            if !task.finished { tasks[i] = task }
        case .launched:
            preconditionFailure("batch item \(i) launched twice")
        }
    }

    private func finished(_ i: Int, _ outcome: Outcome, failed: Bool = false) {
        running -= 1
        if doneHead > 1024 && doneHead * 2 > done.count {  // handed-back outcomes need no room
            done.removeFirst(doneHead)
            doneHead = 0
        }
        if failed && failFast { cancel("cancelled") }
        done.append((i, outcome))
        deliver()
        if running == 0 {
            let ws = drainWaiters
            drainWaiters = []
            for w in ws { w.succeed { _ in 0 } }
        }
        pump()
    }

    /// Cancels the timeout of the waiting next(), once it is answered.
    private var deliverHook: (() -> Void)?

    private func deliver() {
        guard let w = waiter, doneHead < done.count else { return }
        waiter = nil
        deliverHook?()
        deliverHook = nil
        let (i, outcome) = done[doneHead]
        doneHead += 1
        w.succeed { [unowned self] s in push(i, outcome, on: s) }
    }

    /// Finished items that `next()` has not handed back yet.
    var undelivered: Int { done.count - doneHead }

    /// Whether every launched item has been handed back and nothing more will launch.
    private var exhausted: Bool {
        doneHead == done.count && running == 0 && (nextIndex == items.count || cancelled != nil)
    }

    /// `b:next()`: the index and result of the next finished item, waiting when none has
    /// finished yet; nothing when all are handed back.
    func next(_ call: LuaCall) throws(LuaArgumentError) -> LuaReturn {
        if doneHead < done.count {
            let (i, outcome) = done[doneHead]
            doneHead += 1
            return .values(push(i, outcome, on: call.stack))
        }
        if exhausted { return .values(0) }
        guard waiter == nil else { throw LuaArgumentError("batch:next() is already being waited on") }
        let scheduler = runtime.scheduler
        let w = scheduler.waiter()
        waiter = w
        // next(timeout): give up after that long, answering nil, "timeout"
        var timer: Reactor.TimerID?
        if call.stack.type(at: 2) == .number, let t = call.stack.number(at: 2), t >= 0 {
            timer = runtime.reactor.after(t) { [unowned self, weak w] in
                guard let w, waiter === w else { return }
                waiter = nil
                w.succeed { s in
                    s.pushNil()
                    s.push("timeout")
                    return 2
                }
            }
        }
        w.onCancel = { [unowned self, weak w] reason in
            if let timer { runtime.reactor.cancel(timer) }
            cancel(reason)
            if let w, waiter === w {
                waiter = nil
                w.fail(reason)
            }
        }
        if let timer {
            deliverHook = { [unowned self] in runtime.reactor.cancel(timer) }
        }
        return scheduler.wait(w, call)
    }

    /// Stops launching, terminates running processes and cancels running functions.
    func cancel(_ reason: String) {
        guard cancelled == nil else { return }
        cancelled = reason
        for c in children.values { c.terminate(reason: reason) }
        for t in tasks.values { runtime.scheduler.cancel(t, reason: reason) }
        for case .function(let ref) in items[nextIndex...] { runtime.lua.release(ref) }
    }

    /// `b:cancel()`: cancels and waits until every running item has ended.
    func cancelAndDrain(_ call: LuaCall, reason: String) -> LuaReturn {
        cancel(reason)
        if running == 0 { return .values(0) }
        let w = runtime.scheduler.waiter()
        w.cleanup = true
        drainWaiters.append(w)
        return runtime.scheduler.wait(w, call)
    }

    private func push(_ i: Int, _ outcome: Outcome, on s: LuaStack) -> Int32 {
        s.push(i + 1)
        switch outcome {
        case .process(let r, let name):
            pushResult(s, r, name: name)
        case .value(let ref):
            if ref == LUA_NOREF {
                s.pushNil()
            } else {
                runtime.lua.pushRef(ref, on: s)
                runtime.lua.release(ref)
            }
        case .failed(let message, let traceback):
            s.newTable(hash: 3)
            s.push(false); s.setField(-2, "ok")
            s.push(message); s.setField(-2, "error")
            if let traceback { s.push(traceback); s.setField(-2, "traceback") }
            runtime.lua.pushRef(runtime.itemErrorMetatableRef, on: s)
            lua_setmetatable(s.L, -2)
        }
        return 2
    }
}

extension Runtime {
    static let batchMetatable = "qw.batch"

    /// Turns the value on top of `s` (popping it) into a batch item: a command spec or a
    /// function (anchored in the registry).
    func batchItem(_ s: LuaStack, label: String) throws(LuaArgumentError) -> Batch.Item {
        switch s.type(at: -1) {
        case .function:
            lua_xmove(s.L, lua.L, 1)
            return .function(ref: lua.ref())
        case .string, .table:
            defer { s.pop() }
            var o = try CommandSpecParser(function: label).parse(s, at: -1, options: nil)
            o.spec = prepare(o)
            return .command(o)
        default:
            let t = s.type(at: -1).name
            s.pop()
            throw LuaArgumentError("\(label) must be a command (string or table) or a function (got \(t))")
        }
    }

    func registerBatch(in t: Int32) {
        // qw._batch_start(items, max_concurrent) -> batch handle
        lua.setFunction("_batch_start", in: t) { [unowned self] call in
            let s = call.stack
            guard s.type(at: 1) == .table else {
                throw LuaArgumentError("qw.batch: items must be a table (got \(s.type(at: 1).name))")
            }
            try scheduler.checkCancelled()
            let n = s.rawLength(1)
            var items: [Batch.Item] = []
            items.reserveCapacity(n)
            do {
                for i in 0..<n {
                    s.getIndex(1, i + 1)
                    items.append(try batchItem(s, label: "qw.batch: item \(i + 1)"))
                }
            } catch {
                for case .function(let ref) in items { lua.release(ref) }
                throw error
            }
            let maxConcurrent = s.type(at: 2) == .number ? Int(s.integer(at: 2) ?? Int64(n)) : max(n, 1)
            let batch = Batch(items: items, maxConcurrent: maxConcurrent, failFast: s.bool(at: 3), runtime: self)
            pushHandle(batch, metatable: Self.batchMetatable, on: s)
            batch.pump()
            return .values(1)
        }

        luaL_newmetatable(lua.L, Self.batchMetatable)
        lua.stack.newTable()
        func batch(_ call: LuaCall) throws(LuaArgumentError) -> Batch {
            guard let b = handleObject(call.stack, metatable: Self.batchMetatable, as: Batch.self)
            else { throw LuaArgumentError("expected a batch handle (call its methods with ':')") }
            return b
        }
        lua.setFunction("next", in: -1) { call in try batch(call).next(call) }
        // b:pending() -> finished items not handed back yet (so next() will not wait)
        lua.setFunction("pending", in: -1) { call in
            call.stack.push(try batch(call).undelivered)
            return .values(1)
        }
        // b:add(item) -> index (1-based)
        lua.setFunction("add", in: -1) { [unowned self] call in
            let b = try batch(call)
            call.stack.pushValue(at: 2)
            let label = call.stack.type(at: 3) == .string ? call.stack.string(at: 3)! : "qw.batch: item \(b.items.count + 1)"
            let item = try batchItem(call.stack, label: label)
            call.stack.push(b.add(item) + 1)
            return .values(1)
        }
        lua.setFunction("cancel", in: -1) { call in
            let b = try batch(call)
            return b.cancelAndDrain(call, reason: call.stack.string(at: 2) ?? "cancelled")
        }
        lua.stack.setField(-2, "__index")
        lua.setFunction("__gc", in: -1) { [handles] call in
            if let ud = call.stack.userdata(at: 1, Self.batchMetatable) {
                let id = ud.load(as: Int.self)
                if !handles.closing { (handles.object(id) as? Batch)?.cancel("cancelled") }
                handles.drop(id)
            }
            return .values(0)
        }
        lua.stack.pop()
    }
}
