import CLua
import CLuaShims
import CSystem
import Glibc
public import LuaHost
public import QuantumwalaCore

/// How a ``Runtime`` is set up.
public struct RuntimeOptions: Sendable {
    /// Bytes the Lua heap may grow to (0: no limit). Guards against memory bombs.
    public var memoryLimit: Int = 1 << 30
    /// The stdlib folder (holding `qw/init.lua`); found next to the executable or the
    /// checkout when nil, or taken from `QW_STDLIB`.
    public var stdlibPath: String?
    /// Print debug logs.
    public var verbose = false
    /// Wall seconds a run may take before it is stopped (nil: no limit).
    public var timeLimit: Double?
    /// The state store (`--state`); nil: `QW_STATE`, else `.qw/state.db`.
    public var statePath: String?
    /// Seconds a store write waits for another process's lock before it fails.
    public var storeBusyWait: Double = 30
    /// The store, already being opened at ``Runtime/statePath(_:)`` of ``statePath`` (`qw
    /// agent run` starts it before the runtime): the runtime's first use of the store waits
    /// for it instead of opening its own.
    public var storeOpening: StateStore.Opening?
    public init() {}
}

/// What running a script or chunk came to.
public enum RunOutcome: Sendable {
    case ok
    case failed(LuaError)
}

/// Objects that Lua handles (batches, processes) refer to by number.
final class HandleTable {
    private var objects: [Int: AnyObject] = [:]
    private var nextID = 0
    /// Set while the Lua state closes: finalizers then leave Swift objects alone.
    var closing = false

    func store(_ o: AnyObject) -> Int {
        nextID += 1
        objects[nextID] = o
        return nextID
    }
    func object(_ id: Int) -> AnyObject? { objects[id] }
    func drop(_ id: Int) { objects[id] = nil }
}

/// A Lua state with the `qw` library, its scheduler and event loop: what `qw run`, `qw -e`
/// and the REPL drive.
public final class Runtime {
    public let lua: LuaState
    let reactor: Reactor
    let scheduler: Scheduler
    /// Admission for every process and `qw.acquire`.
    let resources: ResourceManager
    /// Enforces the `memory` of processes that requested it.
    let memoryWatch: MemoryWatch
    /// The script `qw run` runs (for `qw resume`), as an absolute path.
    var scriptPath: String?
    /// The state store, once something used it.
    var storeHandle: StateStore?
    /// Past runs' usage by command label, for estimates.
    var history = UsageHistory()
    private let cpuSampler = CPUSampler()
    /// The machine's CPU reading for `qw.resources()`, with its baseline taken at start.
    private let statusSampler = CPUSampler()
    private var cpuPercent: Double?
    private var statusBaseline = 0.0
    let options: RuntimeOptions
    let handles = HandleTable()
    var processMethodsRef: Int32 = LUA_NOREF
    var itemErrorMetatableRef: Int32 = LUA_NOREF
    private var logDir: String?
    private var logSeq = 0
    /// The folder that `require` finds stdlib modules in.
    public let stdlibPath: String?
    /// The root task of the line or script running now.
    /// Writes big batches to the store off the event loop (workflow records).
    lazy var storeWriter = StoreWriter()
    private var activeRoot: Int?
    /// The root task that Ctrl-C cancelled, until its run reports it.
    private var interruptedRoot: Int?
    /// The library table of Swift primitives, kept for `reload()`.
    private var coreRef: Int32 = LUA_NOREF
    /// The policy script that was run, for `reload()`.
    private var policyPath: String?
    /// Called on Ctrl-C when nothing is running (the REPL clears its input line).
    public var idleInterrupt: (() -> Void)?
    /// Publishing this runtime's work (see WorkBoard.swift).
    var workBoard: WorkBoard?
    var workBoardName: String?
    /// The entry's fields that say which process this is.
    var workBoardIdentity: [LuaValue: LuaValue] = [:]
    var workTimer: Reactor.TimerID?
    var workPublished = false
    var lastWorkEntry: LuaValue?
    let runtimeStarted = wallSeconds()

    /// Creates the state, registers the primitives and loads stdlib's `qw` module.
    ///
    /// - Throws: ``LuaError`` when stdlib cannot be found or fails to load.
    public init(options: RuntimeOptions = RuntimeOptions()) throws(LuaError) {
        self.options = options
        qw_install_signal_handlers()
        qw_raise_fd_limit()
        qw_lua_install_stop()
        lua = LuaState(memoryLimit: options.memoryLimit)
        reactor = Reactor()
        // the machine (or cgroup) is measured once, when admission first needs it
        var measured: MachineCapacity?
        let capacity = { () -> MachineCapacity in
            if let m = measured { return m }
            let m = MachineCapacity.read()
            measured = m
            return m
        }
        let limits = ResourceLimits()
        let sampler = cpuSampler
        var own: OwnCPUMeter?
        var othersCPU: Double?
        weak var weakScheduler: Scheduler?
        // The CPU reading that admission uses is other programs' load: the machine's busy
        // share less qw's own (its children included), sampled over the same window.
        resources = ResourceManager(reactor: reactor, capacity: { (capacity().cores, capacity().memoryTotal) }, limits: limits) {
            if own == nil { own = OwnCPUMeter(cores: capacity().cores) }
            let mine = own!.sample(livePids: weakScheduler?.runningPids ?? [])
            if let busy = sampler.sample(), let mine { othersCPU = max(0, busy - mine) }
            return LoadReading(cpuBusyPercent: othersCPU, memoryUsedPercent: capacity().readMemory().usedPercent)
        }
        let manager = resources
        memoryWatch = MemoryWatch(reactor: reactor) { manager.limits.memoryMargin }
        scheduler = Scheduler(lua: lua, reactor: reactor, resources: resources)
        weakScheduler = scheduler
        stdlibPath = options.stdlibPath ?? Self.findStdlib()
        scheduler.onInterrupt = { [unowned self] _ in self.interrupt(reason: "interrupted") }
        try installLibrary()
        _ = statusSampler.sample()
        statusBaseline = monotonicSeconds()
    }

    deinit {
        withdrawWork()
        handles.closing = true
    }

    func store(_ o: AnyObject) -> Int { handles.store(o) }

    /// Pushes a userdata that stands for `o` (kept in the handle table), with the metatable
    /// registered as `metatable`.
    func pushHandle(_ o: AnyObject, metatable: String, on s: LuaStack) {
        let ud = s.newUserdata(size: MemoryLayout<Int>.size, metatable: metatable)
        ud.storeBytes(of: store(o), as: Int.self)
    }

    /// The object that the handle at `index` stands for, when it is one of `metatable`'s and a `T`.
    func handleObject<T: AnyObject>(_ s: LuaStack, at index: Int32 = 1, metatable: String, as _: T.Type) -> T? {
        guard let ud = s.userdata(at: index, metatable) else { return nil }
        return object(ud.load(as: Int.self)) as? T
    }

    /// The CPU busy percentage, sampled since the previous call. The first reading covers
    /// at least ``firstCPUWindow`` seconds since start: a call sooner waits for the rest.
    func lastCPUPercent() -> Double? {
        if let c = statusSampler.sample() { cpuPercent = c }
        if cpuPercent == nil {
            let left = statusBaseline + Self.firstCPUWindow - monotonicSeconds()
            if left > 0 {
                var ts = timespec(tv_sec: 0, tv_nsec: Int(left * 1e9))
                nanosleep(&ts, nil)
            }
            cpuPercent = statusSampler.sample()
        }
        return cpuPercent
    }
    /// Long enough for a reading in steps of 10% on 2 cores (clock ticks of 10 ms).
    static let firstCPUWindow = 0.05
    func object(_ id: Int) -> AnyObject? { handles.object(id) }
    func drop(_ id: Int) { handles.drop(id) }

    /// Where compiled stdlib chunks are kept: `$XDG_CACHE_HOME/qw`, else `~/.cache/qw`
    /// (nil with `QW_NO_BYTECODE_CACHE` set, or no home).
    static let bytecodeCache: String? = {
        if getenv("QW_NO_BYTECODE_CACHE") != nil { return nil }
        let base: String
        if let x = getenv("XDG_CACHE_HOME"), x.pointee != 0 {
            base = String(cString: x)
        } else if let h = getenv("HOME"), h.pointee != 0 {
            base = String(cString: h) + "/.cache"
            _ = mkdir(base, 0o755)
        } else {
            return nil
        }
        _ = mkdir(base + "/qw", 0o700)
        return base + "/qw"
    }()

    /// Searches `QW_STDLIB`, then upwards from the executable (a checkout, or
    /// `PREFIX/share/qw/stdlib` of an installed copy), then the checkout this was built from.
    static func findStdlib() -> String? {
        func ok(_ dir: String) -> Bool { access(dir + "/qw/init.lua", R_OK) == 0 }
        if let env = getenv("QW_STDLIB").map({ String(cString: $0) }), ok(env) { return env }
        if var dir = resolvedPath("/proc/self/exe") {
            while let slash = dir.lastIndex(of: "/"), slash != dir.startIndex {
                dir = String(dir[..<slash])
                if ok(dir + "/stdlib") { return dir + "/stdlib" }
                if ok(dir + "/share/qw/stdlib") { return dir + "/share/qw/stdlib" }
            }
        }
        var source = #filePath
        for _ in 0..<3 { if let s = source.lastIndex(of: "/") { source = String(source[..<s]) } }
        if ok(source + "/stdlib") { return source + "/stdlib" }
        return nil
    }

    private func installLibrary() throws(LuaError) {
        guard let stdlib = stdlibPath else {
            throw LuaError(.file, "cannot find the qw standard library (stdlib/qw/init.lua); set QW_STDLIB to its folder")
        }
        lua.addPackagePath(stdlib)
        qw_set_stdlib_prefix(stdlib + "/")
        let s = lua.stack
        s.newTable()
        let core = s.top
        registerExec(in: core)
        registerProcessHandle()
        registerBatch(in: core)
        registerHelpers(in: core)
        registerResources(in: core)
        registerState(in: core)
        registerWorkflows(in: core)
        registerAgents(in: core)
        registerSpecs(in: core)
        registerHooks(in: core)
        // The metatable that marks a batch item's raised error, so qw.parallel can re-raise it.
        s.newTable()
        s.push("qw.item_error"); s.setField(-2, "__name")
        itemErrorMetatableRef = lua.ref()
        lua.pushRef(itemErrorMetatableRef)
        s.setField(core, "_item_error")
        s.pushValue(at: core)
        coreRef = lua.ref()
        s.top = core - 1
        try loadQwModule()
    }

    /// Runs stdlib's `qw/init.lua` with the primitives and publishes its table as the
    /// global `qw` and `package.loaded.qw`.
    private func loadQwModule() throws(LuaError) {
        let s = lua.stack
        let base = s.top
        defer { s.top = base }
        try lua.loadFile(stdlibPath! + "/qw/init.lua", displayPath: "stdlib/qw/init.lua", cacheDir: Self.bytecodeCache)
        lua.pushRef(coreRef)
        try lua.call(nargs: 1, nresults: 1)
        s.pushValue(at: -1)
        lua_setglobal(lua.L, "qw")
        lua_getglobal(lua.L, "package")
        s.getField(-1, "loaded")
        s.pushValue(at: -3)
        s.setField(-2, "qw")
    }

    /// Forgets loaded modules (stdlib's and the project's; Lua's own libraries stay) and
    /// loads `qw` again, so edited policy takes effect without a restart.
    public func reload() -> RunOutcome {
        let keep: Set<String> = ["_G", "string", "table", "coroutine", "math", "io", "os", "utf8", "debug", "package"]
        let s = lua.stack
        lua_getglobal(lua.L, "package")
        s.getField(-1, "loaded")
        var names: [String] = []
        s.pushNil()
        while s.next(-2) {
            if let k = s.type(at: -2) == .string ? s.string(at: -2) : nil, !keep.contains(k) { names.append(k) }
            s.pop()
        }
        for n in names {
            s.pushNil()
            s.setField(-2, n)
        }
        s.pop(2)
        do {
            try loadQwModule()
        } catch {
            return .failed(error)
        }
        if let policyPath { return runPolicy(policyPath) }
        return .ok
    }

    /// Runs a file in the REPL's state (its globals stay), as `:load` does.
    public func loadAndRun(_ path: String) -> RunOutcome {
        do {
            try lua.loadFile(path)
        } catch {
            return .failed(error)
        }
        return runFunctionOnTop()
    }

    /// Runs the chunk on top of the main stack through `qw.repl.run`, which prints what it
    /// returns.
    public func runPrinting() -> RunOutcome {
        let chunk = lua.ref()
        defer { lua.release(chunk) }
        do {
            try lua.load(Array("return require('qw.repl').run".utf8), name: "=repl")
            try lua.call(nargs: 0, nresults: 1)
        } catch {
            return .failed(error)
        }
        return runFunctionOnTop(pushArgs: { [lua] s in
            lua.pushRef(chunk, on: s)
            return 1
        })
    }

    /// Keeps the event loop (background processes, tasks) going until `done()`, calling
    /// `onReadable` whenever `fd` has input.
    public func waitForInput(fd: Int32, until done: () -> Bool, onReadable: @escaping () -> Void) {
        reactor.watch(fd, events: UInt32(QW_EPOLLIN)) { _ in onReadable() }
        defer { reactor.unwatch(fd) }
        while !done() {
            reactor.runOnce()
            scheduler.runReady()
        }
    }

    /// The project policy script run at start when it exists.
    public static let defaultPolicyPath = ".qw/policy.lua"

    /// Runs a policy script (limits, estimate policy, routing rules); `:reload` runs it again.
    public func runPolicy(_ path: String) -> RunOutcome {
        policyPath = path
        do {
            try lua.loadFile(path)
        } catch {
            return .failed(error)
        }
        return runFunctionOnTop()
    }

    /// Sets the global concurrency limit (as `--max-concurrent` does).
    public func setMaxConcurrent(_ n: Int) {
        var l = resources.limits
        l.maxConcurrent = n
        resources.limits = l
    }

    /// Sets `qw.args` and the global `arg` table (`arg[0]` is the script, as in `lua`).
    public func setArguments(script: String?, _ args: [String]) {
        let s = lua.stack
        s.newTable()
        if let script { s.push(script); s.setIndex(-2, 0) }
        for (i, a) in args.enumerated() { s.push(a); s.setIndex(-2, i + 1) }
        s.pushValue(at: -1)
        lua_setglobal(lua.L, "arg")
        lua_getglobal(lua.L, "qw")
        s.pushValue(at: -2)
        s.setField(-2, "args")
        s.pop(2)
    }

    /// Runs a script file as the main task; `args` become `...`, `arg` and `qw.args`.
    public func runFile(_ path: String, args: [String] = []) -> RunOutcome {
        setArguments(script: path, args)
        scriptPath = resolvedPath(path) ?? path
        do {
            try lua.loadFile(path)
        } catch {
            return .failed(error)
        }
        return runFunctionOnTop(args: args)
    }

    /// Runs a chunk of code as the main task; `args` become its `...`.
    public func runChunk(_ code: String, name: String = "=(command line)", args: [String] = []) -> RunOutcome {
        do {
            try lua.load(Array(code.utf8), name: name)
        } catch {
            return .failed(error)
        }
        return runFunctionOnTop(args: args)
    }

    /// Runs the function on top of the main stack as a root task (popping it) and drives the
    /// scheduler until it ends.
    public func runFunctionOnTop(args: [String] = []) -> RunOutcome {
        runFunctionOnTop(pushArgs: { s in
            for a in args { s.push(a) }
            return Int32(args.count)
        })
    }

    func runFunctionOnTop(pushArgs: @escaping (LuaStack) -> Int32) -> RunOutcome {
        // The time limit: a hook stops running Lua code, a timer cancels what waits.
        var limitTimer: Reactor.TimerID?
        if let t = options.timeLimit {
            qw_set_deadline(lua.L, t)
            limitTimer = reactor.after(t) { [unowned self] in interrupt(reason: "time limit exceeded") }
        }
        defer {
            if let limitTimer {
                reactor.cancel(limitTimer)
                qw_set_deadline(lua.L, 0)
            }
        }
        var end: TaskEnd?
        let task = scheduler.start(root: true, pushArgs: pushArgs) { _, e in end = e }
        let previous = activeRoot
        activeRoot = task.id
        defer { activeRoot = previous }
        if !scheduler.run(until: { end != nil }) {
            var reason = "deadlock: every task is waiting and nothing can wake them"
            if resources.queued > 0 {
                reason += " (\(resources.queued) resource request\(resources.queued == 1 ? "" : "s") wait for what waiting tasks hold: \(resources.slotsUsed) of max_concurrent \(resources.limits.maxConcurrent) slots in use)"
            }
            scheduler.cancelRoot(task.id, reason: reason)
            scheduler.run(until: { end != nil })
        }
        // An interrupt that the stop hook already acted on must not reach the next line.
        let interrupted = qw_take_interrupt() != 0 || interruptedRoot == task.id
        if interruptedRoot == task.id { interruptedRoot = nil }
        qw_drain_wake()
        switch end {
        case .failed(let message, _) where interrupted && message.hasSuffix("interrupted"):
            // Ctrl-C is not an error of the script's: where stdlib was waiting says nothing
            return .failed(LuaError(.interrupted, message))
        case .failed(let message, let traceback):
            return .failed(LuaError(.runtime, message, traceback: traceback))
        default:
            return .ok
        }
    }

    /// Cancels what is running now (Ctrl-C): its tasks' waits raise `reason` and its
    /// processes are terminated.
    public func interrupt(reason: String = "interrupted") {
        if let root = activeRoot {
            if reason == "interrupted" { interruptedRoot = root }
            scheduler.cancelRoot(root, reason: reason)
        } else {
            idleInterrupt?()
        }
    }

    /// A new file in this run's log folder (`.qw/logs/DATE-TIME-PID/N-label.log`).
    func newLogPath(for label: String) -> String {
        if logDir == nil {
            var t = time(nil)
            var tmv = tm()
            localtime_r(&t, &tmv)
            var buf = [CChar](repeating: 0, count: 32)
            strftime(&buf, buf.count, "%Y%m%d-%H%M%S", &tmv)
            let stamp = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            let dir = ".qw/logs/\(stamp)-\(getpid())"
            mkdir(".qw", 0o755)
            mkdir(".qw/logs", 0o755)
            mkdir(dir, 0o755)
            logDir = dir
        }
        logSeq += 1
        let safe = String(label.prefix(40).map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." ? $0 : "_" })
        return "\(logDir!)/\(logSeq)-\(safe).log"
    }
}
