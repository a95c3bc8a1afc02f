import CLua
import Glibc
import LuaHost
import QuantumwalaCore

/// Pushes a `qw.exec` result table for `r`.
func pushResult(_ s: LuaStack, _ r: ProcessResult, name: String, attempts: Int = 1) {
    s.newTable(hash: 14)
    s.push(r.ok); s.setField(-2, "ok")
    s.push(Int(r.code)); s.setField(-2, "code")
    if let sig = r.signal { s.push(Int(sig)); s.setField(-2, "signal") }
    s.push(r.timedOut); s.setField(-2, "timed_out")
    s.push(bytes: r.stdout); s.setField(-2, "stdout")
    s.push(bytes: r.stderr); s.setField(-2, "stderr")
    s.push(r.duration); s.setField(-2, "duration")
    s.push(attempts); s.setField(-2, "attempts")
    if r.pid > 0 { s.push(Int(r.pid)); s.setField(-2, "pid") }
    s.push(r.maxRSS); s.setField(-2, "max_rss")
    s.push(r.cpuTime); s.setField(-2, "cpu_time")
    if let e = r.error { s.push(e); s.setField(-2, "error") }
    s.push(name); s.setField(-2, "name")
}

/// The message `check = true` raises for a failed command: what ran, why it failed, and the
/// end of its standard error.
func checkFailureMessage(_ r: ProcessResult, label: String) -> String {
    var msg = "command failed: \(label): \(r.error ?? "exited with code \(r.code)")"
    let tail = lastLines(r.stderr, count: 5)
    if !tail.isEmpty { msg += "\n" + tail }
    return msg
}

func lastLines(_ bytes: [UInt8], count: Int) -> String {
    var end = bytes.endIndex
    while end > bytes.startIndex && (bytes[end - 1] == 10 || bytes[end - 1] == 13) { end -= 1 }
    var start = end
    var lines = 0
    while start > bytes.startIndex {
        if bytes[start - 1] == 10 {
            lines += 1
            if lines == count { break }
        }
        start -= 1
    }
    return String(decoding: bytes[start..<end], as: UTF8.self)
}

/// A process started by `qw.spawn`, as its Lua handle sees it.
final class SpawnedProcess {
    var child: AdmittedProcess?
    var result: ProcessResult?
    var waiters: [Waiter] = []
    /// `handle:read()` calls waiting for more output, and how much of it they have had.
    var readers: [Waiter] = []
    var readOffset = 0
    let name: String
    init(name: String) { self.name = name }
    /// 0 while it waits for admission.
    var pid: Int32 { child?.pid ?? result?.pid ?? 0 }

    /// The standard output not yet given to `read`, or nil when the process has ended and all
    /// of it was given.
    func unread() -> [UInt8]? {
        if let r = result {
            guard readOffset < r.stdout.count else { return nil }
            return Array(r.stdout[readOffset...])
        }
        return child?.child?.stdout(from: readOffset) ?? []
    }

    /// Answers the waiting readers with what came since (all of them get the same piece).
    func wakeReaders() {
        guard !readers.isEmpty else { return }
        let bytes = unread()
        if let bytes, bytes.isEmpty { return }  // nothing new yet
        readOffset += bytes?.count ?? 0
        let ws = readers
        readers = []
        for w in ws {
            w.succeed { s in
                if let bytes { s.push(bytes: bytes) } else { s.pushNil() }
                return 1
            }
        }
    }
}

extension Runtime {
    static let processMetatable = "qw.process"

    /// Starts a parsed command through admission, watching its memory when it asked for some.
    ///
    /// - Parameter onStart: called once the process runs.
    func startProcess(_ o: ExecOptions, onStart: ((ChildProcess) -> Void)? = nil,
                      onExit: @escaping (ProcessResult) -> Void) -> AdmittedProcess? {
        let request = o.request ?? estimate(for: o.spec)
        let label = o.spec.label
        let enforce = o.request.map { $0.memory > 0 } ?? false
        return scheduler.startProcess(o.spec, request: request, admissionTimeout: o.admissionTimeout,
                                      onStart: enforce || onStart != nil ? { [unowned self] child in
                                          if enforce { memoryWatch.watch(child, limit: request.memory) }
                                          onStart?(child)
                                      } : nil) { [unowned self] r in
            var r = r
            let sampled = enforce ? memoryWatch.peak(of: r.pid) : nil
            if let sampled { r.maxRSS = max(r.maxRSS, sampled) }
            history.record(label, r, sampled: sampled)
            onExit(r)
        }
    }

    /// Builds the CommandSpec for a parsed exec call, filling in the log file.
    func prepare(_ o: ExecOptions) -> CommandSpec {
        var spec = o.spec
        if o.logToRunFolder { spec.logPath = newLogPath(for: spec.label) }
        return spec
    }

    func registerExec(in t: Int32) {
        // qw.exec(spec[, opts]) -> result
        lua.setFunction("exec", in: t) { [unowned self] call in
            let o = try CommandSpecParser(function: "qw.exec").parse(call.stack, at: 1, options: 2)
            try scheduler.checkCancelled()
            let spec = prepare(o)
            let w = scheduler.waiter()
            var prepared = o
            prepared.spec = spec
            let child = startProcess(prepared) { r in
                if o.check && !r.ok {
                    w.fail(checkFailureMessage(r, label: spec.label))
                } else {
                    w.succeed { s in
                        pushResult(s, r, name: spec.label)
                        return 1
                    }
                }
            }
            if let child { w.onCancel = { reason in child.terminate(reason: reason) } }
            return scheduler.wait(w, call)
        }

        // qw.spawn(spec[, opts]) -> handle
        lua.setFunction("spawn", in: t) { [unowned self] call in
            let o = try CommandSpecParser(function: "qw.spawn").parse(call.stack, at: 1, options: 2)
            try scheduler.checkCancelled()
            let spec = prepare(o)
            let p = SpawnedProcess(name: spec.label)
            var prepared = o
            prepared.spec = spec
            p.child = startProcess(prepared, onStart: { [weak p] child in
                child.onStdout = { p?.wakeReaders() }
            }) { r in
                p.result = r
                p.child = nil
                p.wakeReaders()
                let ws = p.waiters
                p.waiters = []
                for w in ws {
                    w.succeed { s in
                        pushResult(s, r, name: spec.label)
                        return 1
                    }
                }
            }
            pushHandle(p, metatable: Self.processMetatable, on: call.stack)
            return .values(1)
        }
    }

    /// Creates the metatable of spawn handles: `pid`, `wait`, `read`, `kill`, `running`, `write`,
    /// `close_input`, `set_timeout`, `cpu_time`.
    func registerProcessHandle() {
        let s = lua.stack
        luaL_newmetatable(lua.L, Self.processMetatable)
        s.newTable()
        func process(_ call: LuaCall, _ method: String) throws(LuaArgumentError) -> SpawnedProcess {
            guard let p = handleObject(call.stack, metatable: Self.processMetatable, as: SpawnedProcess.self)
            else { throw LuaArgumentError("process:\(method)() needs a process handle (call it with ':')") }
            return p
        }
        lua.setFunction("wait", in: -1) { [unowned self] call in
            let p = try process(call, "wait")
            if let r = p.result {
                pushResult(call.stack, r, name: p.name)
                return .values(1)
            }
            try scheduler.checkCancelled()
            let w = scheduler.waiter()
            p.waiters.append(w)
            w.onCancel = { [weak p] reason in
                // Cancelling a wait stops the wait, and the process with it (no orphans).
                p?.child?.terminate(reason: reason)
            }
            return scheduler.wait(w, call)
        }
        // handle:read() -> the standard output that came since the last read (waiting for
        // some when there is none yet), or nil once the process has ended and all was read
        lua.setFunction("read", in: -1) { [unowned self] call in
            let p = try process(call, "read")
            if let bytes = p.unread(), p.result != nil || !bytes.isEmpty {
                p.readOffset += bytes.count
                call.stack.push(bytes: bytes)
                return .values(1)
            }
            if p.result != nil {
                call.stack.pushNil()
                return .values(1)
            }
            try scheduler.checkCancelled()
            let w = scheduler.waiter()
            p.readers.append(w)
            w.onCancel = { [weak p] reason in p?.child?.terminate(reason: reason) }
            return scheduler.wait(w, call)
        }
        lua.setFunction("kill", in: -1) { call in
            let p = try process(call, "kill")
            var sig = SIGTERM
            if call.argCount >= 2 {
                if let n = call.stack.integer(at: 2) {
                    sig = Int32(truncatingIfNeeded: n)
                } else if let name = call.stack.string(at: 2), let n = signalNumber(name) {
                    sig = n
                } else {
                    throw LuaArgumentError("process:kill(): unknown signal '\(call.stack.string(at: 2) ?? "?")'")
                }
            }
            if let c = p.child {
                if sig == SIGTERM || sig == SIGKILL { c.terminate(reason: "killed by \(signalName(sig))") }
                if sig != SIGTERM { c.send(sig) }
                call.stack.push(true)
            } else {
                call.stack.push(false)
            }
            return .values(1)
        }
        // handle:write(text) -> whether it was taken: more standard input for a process
        // spawned with stdin = true (written as the pipe takes it)
        lua.setFunction("write", in: -1) { call in
            let p = try process(call, "write")
            guard let bytes = call.stack.bytes(at: 2), call.stack.type(at: 2) == .string
            else { throw LuaArgumentError("process:write(text): text must be a string (got \(call.stack.type(at: 2).name))") }
            guard let c = p.child else {
                call.stack.push(false)  // it has ended
                return .values(1)
            }
            guard c.spec.stdinOpen else { throw LuaArgumentError("process:write(): the process was not spawned with stdin = true") }
            call.stack.push(c.write(bytes))
            return .values(1)
        }
        // handle:close_input(): ends the standard input (the child reads end of file)
        lua.setFunction("close_input", in: -1) { call in
            let p = try process(call, "close_input")
            p.child?.closeInput()
            return .values(0)
        }
        // handle:cpu_time() -> the CPU seconds the running process has used so far (its
        // threads, in clock ticks), or nil once it has ended or while it waits to start
        lua.setFunction("cpu_time", in: -1) { call in
            let p = try process(call, "cpu_time")
            if let c = p.child, c.pid > 0, p.result == nil, let s = processCPUSeconds(c.pid) { call.stack.push(s) } else { call.stack.pushNil() }
            return .values(1)
        }
        // handle:set_timeout(seconds | nil): the timeout, counted from now (nil: none)
        lua.setFunction("set_timeout", in: -1) { call in
            let p = try process(call, "set_timeout")
            var t: Double?
            if call.argCount >= 2 && call.stack.type(at: 2) != .nil {
                guard call.stack.type(at: 2) == .number, let v = call.stack.number(at: 2), v > 0, v.isFinite
                else { throw LuaArgumentError("process:set_timeout(seconds): seconds must be a positive number (or nil)") }
                t = v
            }
            p.child?.setTimeout(t)
            return .values(0)
        }
        lua.setFunction("running", in: -1) { call in
            let p = try process(call, "running")
            call.stack.push(p.result == nil)
            return .values(1)
        }
        processMethodsRef = lua.ref()  // the methods table, for __index below
        lua.setFunction("__gc", in: -1) { [handles] call in
            if let ud = call.stack.userdata(at: 1, Self.processMetatable) { handles.drop(ud.load(as: Int.self)) }
            return .values(0)
        }
        lua.setFunction("__tostring", in: -1) { [unowned self] call in
            if let ud = call.stack.userdata(at: 1, Self.processMetatable), let p = object(ud.load(as: Int.self)) as? SpawnedProcess {
                call.stack.push("qw.process(pid \(p.pid), \(p.result == nil ? "running" : "exited"))")
            } else {
                call.stack.push("qw.process")
            }
            return .values(1)
        }
        // handle.pid, or a method
        lua.pushFunction { [unowned self] call in
            let st = call.stack
            guard st.type(at: 2) == .string, let key = st.string(at: 2) else {
                st.pushNil()
                return .values(1)
            }
            if key == "pid", let ud = st.userdata(at: 1, Self.processMetatable),
               let p = object(ud.load(as: Int.self)) as? SpawnedProcess {
                st.push(Int(p.pid))
                return .values(1)
            }
            lua.pushRef(processMethodsRef, on: st)
            st.getField(-1, key)
            return .values(1)
        }
        s.setField(-2, "__index")
        s.pop()  // metatable
    }
}

/// SIGTERM / "TERM" / "term" -> 15.
func signalNumber(_ name: String) -> Int32? {
    let n = name.uppercased()
    let base = n.hasPrefix("SIG") ? String(n.dropFirst(3)) : n
    let table: [String: Int32] = ["HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "TERM": 15,
                                  "CONT": 18, "STOP": 19, "TSTP": 20, "ALRM": 14]
    return table[base]
}
