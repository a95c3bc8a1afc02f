import CLua
import CLuaShims
import CSystem
import Glibc
import LuaHost
import QuantumwalaCore

/// Pushes the answer for a waiting call onto a thread's stack: `true` and the results, or
/// `false` and an error. Returns how many values it pushed.
typealias Answer = (LuaStack) -> Int32

/// The pending answer of one waiting primitive (a process exit, a timer, a batch item...).
///
/// Whatever is being waited for must eventually call ``succeed(_:)`` or ``fail(_:)``, also
/// after ``Scheduler/cancel(_:reason:)`` asked it to stop through `onCancel`.
final class Waiter {
    unowned let scheduler: Scheduler
    fileprivate(set) var task: Task?
    fileprivate var inPlace = false
    fileprivate(set) var answer: Answer?
    /// Set when the waiting task is cancelled: the answer becomes this error.
    fileprivate(set) var cancelReason: String?
    /// Asks what is waited for to stop early (terminate a process, drop a timer).
    var onCancel: ((String) -> Void)?
    /// A wait for cleanup to finish (processes being terminated): cancelling the task does
    /// not cut it short.
    var cleanup = false

    init(scheduler: Scheduler) { self.scheduler = scheduler }

    var isComplete: Bool { answer != nil }

    /// Completes with results pushed by `results` (which returns how many it pushed).
    func succeed(_ results: @escaping (LuaStack) -> Int32) {
        complete { s in
            s.push(true)
            return 1 + results(s)
        }
    }

    /// Completes with a Lua error.
    func fail(_ message: String) {
        complete { s in
            s.push(false)
            s.push(message)
            return 2
        }
    }

    private func complete(_ a: @escaping Answer) {
        guard answer == nil else { return }
        if let reason = cancelReason {
            answer = { s in
                s.push(false)
                s.push(reason)
                return 2
            }
        } else {
            answer = a
        }
        onCancel = nil  // nothing left to stop; and it may hold this waiter
        scheduler.completed(self)
    }

    fileprivate func cancel(_ reason: String) {
        guard answer == nil, cancelReason == nil, !cleanup else { return }
        cancelReason = reason
        if let onCancel {
            self.onCancel = nil
            onCancel(reason)
        } else {
            fail(reason)
        }
    }
}

/// A Lua coroutine run by the scheduler: a script's main chunk, a batch item, a REPL line.
final class Task {
    let id: Int
    let thread: OpaquePointer
    let ref: Int32
    /// The top-level task this one works for; cancelling a root ends all of its work.
    private(set) var rootID: Int
    var waiter: Waiter?
    var cancelled: String?
    var finished = false
    /// Leases taken with `qw.acquire`: returned when the task ends, however it ends.
    var leases: [Lease] = []
    fileprivate var pending: Answer?
    fileprivate var started = false
    fileprivate let onFinish: (Task, TaskEnd) -> Void

    fileprivate init(id: Int, thread: OpaquePointer, ref: Int32, root: Int?, onFinish: @escaping (Task, TaskEnd) -> Void) {
        self.id = id
        self.thread = thread
        self.ref = ref
        self.rootID = root ?? id
        self.onFinish = onFinish
    }

    var stack: LuaStack { LuaStack(thread) }
}

/// How a task ended.
enum TaskEnd {
    /// Returned normally, its `count` results on top of its thread's stack.
    case returned(count: Int32)
    /// Raised an error (or was cancelled): the message and a stack traceback.
    case failed(message: String, traceback: String?)
}

/// Runs Lua coroutines on the Lua thread and resumes them when what they wait for is done.
///
/// Waiting primitives register a ``Waiter`` and yield (through the C trampoline); the
/// reactor's callbacks complete waiters; completed waiters put their task on the ready
/// queue; ``run(until:)`` resumes ready tasks and otherwise waits in the reactor.
final class Scheduler {
    let lua: LuaState
    let reactor: Reactor
    private var ready: [Task] = []
    private var readyHead = 0
    private var nextID = 0
    private(set) var current: Task?
    /// Live child processes by the root task they work for, so a cancelled root ends them.
    private var processes: [Int: [ObjectIdentifier: AdmittedProcess]] = [:]
    /// Admission for every process started from Lua.
    let resources: ResourceManager
    private var tasksByRoot: [Int: Set<Int>] = [:]
    private var tasks: [Int: Task] = [:]
    /// Set while the to-be-closed variables of a task that died by an error are closed.
    private var closingFailedTask = false
    /// Called with 1 (SIGINT) or 2 (time limit) when a signal arrives.
    var onInterrupt: ((Int32) -> Void)?

    init(lua: LuaState, reactor: Reactor, resources: ResourceManager) {
        self.lua = lua
        self.reactor = reactor
        self.resources = resources
        reactor.onWake = { [unowned self] in
            let r = qw_take_interrupt()
            if r != 0 { self.onInterrupt?(r) }
        }
    }

    /// Starts the function on top of the main stack (popping it) as a new task, with `args`
    /// pushed by `pushArgs` onto its thread.
    @discardableResult
    func start(root: Bool = false, pushArgs: @escaping (LuaStack) -> Int32 = { _ in 0 },
               onFinish: @escaping (Task, TaskEnd) -> Void) -> Task {
        let (co, ref) = lua.newThread()
        lua_xmove(lua.L, co, 1)
        nextID += 1
        let task = Task(id: nextID, thread: co, ref: ref, root: root ? nil : current?.rootID, onFinish: onFinish)
        tasks[task.id] = task
        tasksByRoot[task.rootID, default: []].insert(task.id)
        task.pending = pushArgs
        ready.append(task)
        return task
    }

    /// Resumes ready tasks and waits for events until `done()` holds.
    ///
    /// Returns early (false) when nothing can make progress any more.
    @discardableResult
    func run(until done: () -> Bool) -> Bool {
        while !done() {
            if stepOne() { continue }
            if !reactor.hasWork {
                if done() { return true }
                return false
            }
            reactor.runOnce()
        }
        return true
    }

    /// Resumes every task that is ready, and those they make ready.
    func runReady() {
        while stepOne() {}
    }

    private func stepOne() -> Bool {
        guard readyHead < ready.count else { return false }
        let t = ready[readyHead]
        readyHead += 1
        if readyHead > 1024 && readyHead * 2 > ready.count {
            ready.removeFirst(readyHead)
            readyHead = 0
        }
        step(t)
        return true
    }

    private func step(_ task: Task) {
        guard !task.finished, let answer = task.pending else { return }
        task.pending = nil
        let L = task.thread
        let nargs = answer(LuaStack(L))
        if !task.started {
            task.started = true
            if let reason = task.cancelled {  // cancelled before it ever ran
                finish(task, .failed(message: reason, traceback: nil))
                return
            }
        }
        let saved = current, savedRunning = qw_get_running()
        current = task
        qw_set_running(L)
        qw_mem_set_strict(1)
        var nres: Int32 = 0
        let status = lua_resume(L, lua.L, nargs, &nres)
        qw_mem_set_strict(0)
        qw_set_running(savedRunning)
        current = saved
        switch status {
        case LUA_YIELD:
            if nres == 1 && lua_touserdata(L, -1) == LuaState.hostYieldTag {
                lua_settop(L, -2)
                return  // a waiter is registered; its completion puts the task back on the queue
            }
            lua_settop(L, -nres - 1)
            lua.stack.push("attempt to yield from outside a coroutine")
            luaL_traceback(lua.L, L, lua_tolstring(lua.L, -1, nil), 0)
            let tb = lua.stack.string(at: -1) ?? ""
            lua.stack.pop(2)
            finish(task, split(tb))
        case LUA_OK:
            finish(task, .returned(count: nres))
        default:
            if status == LUA_ERRMEM {
                let limit = lua.memoryLimit
                lua_settop(L, 0)
                let msg = limit > 0
                    ? "not enough memory: the Lua heap reached its limit of \(limit / (1 << 20)) MiB (--lua-memory changes it)"
                    : "not enough memory"
                finish(task, .failed(message: msg, traceback: nil))
                return
            }
            qw_push_thread_traceback(lua.L, L, 0)
            let full = lua.stack.string(at: -1) ?? "error"
            lua.stack.pop()
            // A coroutine that dies by an error leaves its to-be-closed variables open (Lua
            // leaves them to coroutine.close): close them, so that the `<close>` cleanups of
            // stdlib and scripts run on errors and interrupts too.
            current = task
            qw_set_running(L)
            closingFailedTask = true
            _ = qw_close_thread(L, lua.L)
            closingFailedTask = false
            qw_set_running(savedRunning)
            current = saved
            finish(task, split(full))
        }
    }

    private func split(_ full: String) -> TaskEnd {
        let e = LuaState.splitTraceback(full)
        return .failed(message: e.message, traceback: e.traceback)
    }

    private func finish(_ task: Task, _ end: TaskEnd) {
        task.finished = true
        task.waiter = nil
        tasks[task.id] = nil
        tasksByRoot[task.rootID]?.remove(task.id)
        if tasksByRoot[task.rootID]?.isEmpty == true { tasksByRoot[task.rootID] = nil }
        for lease in task.leases { resources.release(lease) }
        task.leases = []
        task.onFinish(task, end)
        lua_settop(task.thread, 0)
        lua.release(task.ref)
    }

    // MARK: Waiting

    /// A new waiter for the running task.
    func waiter() -> Waiter { Waiter(scheduler: self) }

    /// Raises (as a Swift error for the binding) when the running task has been cancelled,
    /// so cancelled work starts nothing new.
    func checkCancelled() throws(LuaArgumentError) {
        if let reason = current?.cancelled { throw LuaArgumentError(reason) }
    }

    /// Makes the calling primitive wait for `w`: yields when the caller can yield, otherwise
    /// runs the event loop in place until `w` completes (tasks made ready meanwhile run later).
    func wait(_ w: Waiter, _ call: LuaCall) -> LuaReturn {
        // the cleanups of a task that died cannot wait: the tasks they would wait for are
        // not run meanwhile (they end with the failed task's root anyway)
        if closingFailedTask && !w.isComplete { w.fail("cannot wait in a <close> handler of a task that failed") }
        if !w.isComplete, let task = current {
            w.task = task
            task.waiter = w
            if let reason = task.cancelled, !w.cleanup { w.cancel(reason) }
            if !w.isComplete {
                if call.canYield { return .yield }
                w.inPlace = true
                while !w.isComplete { reactor.runOnce() }
            }
            task.waiter = nil
        } else if !w.isComplete {
            w.inPlace = true
            while !w.isComplete { reactor.runOnce() }
        }
        let s = call.stack
        let base = s.top
        let n = w.answer!(s)
        if s.bool(at: base + 1) {
            s.remove(at: base + 1)
            return .values(n - 1)
        }
        s.top = base + 2
        return .raiseHere
    }

    /// For a host yield that reached a coroutine that cannot pass it on: waits in place for
    /// the running task's waiter and pushes its whole answer (flag first).
    func waitHere(_ call: LuaCall) -> LuaReturn {
        if closingFailedTask, let w = current?.waiter, !w.isComplete { w.fail("cannot wait in a <close> handler of a task that failed") }
        guard let task = current, let w = task.waiter else {
            call.stack.push(false)
            call.stack.push("nothing to wait for")
            return .values(2)
        }
        w.inPlace = true
        while !w.isComplete { reactor.runOnce() }
        task.waiter = nil
        return .values(w.answer!(call.stack))
    }

    fileprivate func completed(_ w: Waiter) {
        guard !w.inPlace, let task = w.task, task.waiter === w else { return }
        task.waiter = nil
        task.pending = w.answer
        ready.append(task)
    }

    /// Cancels a task: what it waits for is asked to stop, and its wait raises `reason`.
    func cancel(_ task: Task, reason: String) {
        guard !task.finished, task.cancelled == nil else { return }
        task.cancelled = reason
        if let w = task.waiter { w.cancel(reason) }
    }

    /// Cancels a root task, every task working for it, and terminates their processes.
    func cancelRoot(_ rootID: Int, reason: String) {
        for id in tasksByRoot[rootID] ?? [] {
            if let t = tasks[id] { cancel(t, reason: reason) }
        }
        for child in processes[rootID]?.values ?? [:].values {
            child.terminate(reason: reason)
        }
    }

    // MARK: Processes

    /// Processes started from Lua and not ended (waiting for admission or running).
    var runningProcesses: Int { processes.values.reduce(0) { $0 + $1.count } }

    /// Processes started from Lua and not ended.
    var admittedProcesses: [AdmittedProcess] { processes.values.flatMap { $0.values } }

    /// Called when a process is started or ends (see ``Runtime/publishWork(on:)``).
    var onWorkChange: (() -> Void)?

    /// Process ids of the running processes started from Lua.
    var runningPids: [Int32] { processes.values.flatMap { $0.values.map(\.pid) }.filter { $0 > 0 } }

    /// Starts a process on behalf of the running task once `request` is admitted; `onExit` is
    /// called on the Lua thread (also when it could not start).
    ///
    /// - Parameters:
    ///   - onStart: called once the process runs (for memory watching).
    /// - Returns: the process, or nil when it has already ended (could not start).
    func startProcess(_ spec: CommandSpec, request: ResourceRequest = ResourceRequest(), admissionTimeout: Double? = nil,
                      onStart: ((ChildProcess) -> Void)? = nil,
                      onExit: @escaping (ProcessResult) -> Void) -> AdmittedProcess? {
        let root = current?.rootID ?? 0
        var key: ObjectIdentifier?
        let p = AdmittedProcess(spec, request: request, admissionTimeout: admissionTimeout, manager: resources,
                                reactor: reactor, onStart: onStart) { [unowned self] result in
            if let key {
                processes[root]?[key] = nil
                if processes[root]?.isEmpty == true { processes[root] = nil }
            }
            onWorkChange?()
            onExit(result)
        }
        guard !p.finished else { return nil }
        key = ObjectIdentifier(p)
        processes[root, default: [:]][key!] = p
        onWorkChange?()
        return p
    }
}
