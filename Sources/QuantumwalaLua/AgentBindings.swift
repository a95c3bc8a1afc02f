import CLua
import Glibc
import LuaHost
import QuantumwalaCore

extension Runtime {
    func registerAgents(in t: Int32) {
        // qw._mkdtemp(prefix) -> a new private folder (_clean_up removes it)
        lua.setFunction("_mkdtemp", in: t) { call in
            guard let dir = makeTemporaryFolder(prefix: call.stack.string(at: 1) ?? "qw-") else {
                throw LuaArgumentError("cannot make a temporary folder: \(errnoText(errno))")
            }
            call.stack.push(dir)
            return .values(1)
        }
        // qw._store_checkpoint() -> frames copied: the open store's WAL into it (see checkpointWAL)
        lua.setFunction("_store_checkpoint", in: t) { [unowned self] call in
            call.stack.push(storeHandle?.checkpointWAL()?.copied ?? 0)
            return .values(1)
        }
        // qw._last_session(workflow, task, agent) -> the session to resume, or nil
        lua.setFunction("_last_session", in: t) { [unowned self] call in
            let s = call.stack
            let store = try stateStore()
            let id = try storeCall { () throws(StoreError) in
                try store.lastSession(workflow: s.string(at: 1), task: s.string(at: 2), agent: s.string(at: 3))
            }
            if let id { s.push(id) } else { s.pushNil() }
            return .values(1)
        }
        // qw._cost_sum(workflow) -> what the ledger holds for it
        lua.setFunction("_cost_sum", in: t) { [unowned self] call in
            let name = call.stack.string(at: 1) ?? ""
            let store = try stateStore()
            call.stack.push(try storeCall { () throws(StoreError) in try store.costSum(workflow: name) })
            return .values(1)
        }
        // qw._cost_average(agent, model) -> the mean cost of its recent runs, or nil
        lua.setFunction("_cost_average", in: t) { [unowned self] call in
            let s = call.stack
            let store = try stateStore()
            let avg = try storeCall { () throws(StoreError) in try store.averageCost(agent: s.string(at: 1), model: s.string(at: 2)) }
            if let avg { s.push(avg) } else { s.pushNil() }
            return .values(1)
        }
        // qw._gate_acquire(run, max_agents, stagger, backoff[, peek]) -> granted, wait, known, paced, others (see gateAcquire)
        // qw._gate_admitted(run, max_agents, stagger, backoff[, ready]): the model answered the
        // run (ready, unless false: its CLI waited for its prompt at its turn)
        // qw._gate_release(run, limited, retry_after, backoff, max_agents)
        // qw._gate_status() -> { running, closed_until, probing, rate, window }
        func settings(_ s: LuaStack, from: Int32) -> AgentGate.Settings {
            AgentGate.Settings(maxAgents: Int(s.number(at: from) ?? 3), stagger: s.number(at: from + 1) ?? 1,
                               backoff: s.number(at: from + 2) ?? 1)
        }
        lua.setFunction("_gate_acquire", in: t) { [unowned self] call in
            let s = call.stack
            let run = s.string(at: 1) ?? ""
            let store = try stateStore()
            let set = settings(s, from: 2)
            let peek = s.bool(at: 5)
            let (granted, wait, known, paced, others) = try storeCall { () throws(StoreError) in try store.gateAcquire(run: run, settings: set, peek: peek) }
            s.push(granted)
            s.push(wait)
            s.push(known)
            s.push(paced)
            s.push(others)
            return .values(5)
        }
        lua.setFunction("_gate_admitted", in: t) { [unowned self] call in
            let s = call.stack
            let run = s.string(at: 1) ?? ""
            let store = try stateStore()
            let set = settings(s, from: 2)
            let ready = s.type(at: 5) == .nil || s.bool(at: 5)
            try storeCall { () throws(StoreError) in try store.gateAdmitted(run: run, settings: set, ready: ready) }
            return .values(0)
        }
        lua.setFunction("_gate_release", in: t) { [unowned self] call in
            let s = call.stack
            let run = s.string(at: 1) ?? ""
            let limited = s.bool(at: 2)
            let retryAfter = s.type(at: 3) == .number ? s.number(at: 3) : nil
            let set = AgentGate.Settings(maxAgents: Int(s.number(at: 5) ?? 3), backoff: s.number(at: 4) ?? 1)
            let store = try stateStore()
            try storeCall { () throws(StoreError) in try store.gateRelease(run: run, limited: limited, retryAfter: retryAfter, settings: set) }
            return .values(0)
        }
        lua.setFunction("_gate_status", in: t) { [unowned self] call in
            let s = call.stack
            let store = try stateStore()
            let st = try storeCall { () throws(StoreError) in try store.gateStatus() }
            s.newTable(hash: 5)
            s.push(st.running); s.setField(-2, "running")
            if let u = st.closedUntil { s.push(u); s.setField(-2, "closed_until") }
            if let r = st.rate { s.push(r); s.setField(-2, "rate") }
            if let w = st.window { s.push(w); s.setField(-2, "window") }
            s.push(st.probing); s.setField(-2, "probing")
            return .values(1)
        }
        // qw._pid() -> this process's id
        lua.setFunction("_pid", in: t) { call in
            call.stack.push(Int(getpid()))
            return .values(1)
        }
        // qw._cpus() -> the CPUs online (as the gate counts them)
        lua.setFunction("_cpus", in: t) { call in
            call.stack.push(AgentGate.machineCPUs)
            return .values(1)
        }
        // qw._tasks_started() -> the processes and threads started since boot, or nil
        lua.setFunction("_tasks_started", in: t) { call in
            if let n = MarkedProcesses.tasksStarted() { call.stack.push(n) } else { call.stack.pushNil() }
            return .values(1)
        }
        // qw._clean_up(name, value, folder[, pid, tasks_before]) -> a number for _cleaned:
        // kills the processes marked NAME=VALUE, then removes the folder, on a thread while
        // the caller goes on. With the pid of a run's first process and _tasks_started() from
        // before it started, only the processes started after it are looked at, when the
        // pids tell (see MarkedProcesses.startedAfter).
        lua.setFunction("_clean_up", in: t) { [unowned self] call in
            guard let name = call.stack.string(at: 1), let value = call.stack.string(at: 2), !value.isEmpty else {
                throw LuaArgumentError("_clean_up: a name and a value are needed")
            }
            let folder = call.stack.string(at: 3)
            let pid = call.stack.integer(at: 4).map { Int32(truncatingIfNeeded: $0) }
            let before = call.stack.integer(at: 5).map { Int($0) }
            let kill = BackgroundWork {
                let from = pid.flatMap { p in before.flatMap { MarkedProcesses.startedAfter(p, tasksBefore: $0) ? p : nil } } ?? 0
                MarkedProcesses.kill(name: name, value: value, from: from)
            }
            call.stack.push(handles.store(CleanUp(kill: kill, folder: folder.flatMap { $0.count > 1 ? $0 : nil })))
            return .values(1)
        }
        // qw._cleaned(n): waits for the clean-up that _clean_up started
        lua.setFunction("_cleaned", in: t) { [unowned self] call in
            guard let id = call.stack.integer(at: 1), let work = handles.object(Int(id)) as? CleanUp else {
                throw LuaArgumentError("_cleaned: no such clean-up")
            }
            work.wait()
            handles.drop(Int(id))
            return .values(0)
        }
        // qw._kill_marked(name, value) -> how many processes it killed (see MarkedProcesses)
        lua.setFunction("_kill_marked", in: t) { call in
            guard let name = call.stack.string(at: 1), let value = call.stack.string(at: 2), !value.isEmpty else {
                throw LuaArgumentError("_kill_marked: a name and a value are needed")
            }
            call.stack.push(MarkedProcesses.kill(name: name, value: value).count)
            return .values(1)
        }

        // qw._agent_record{ started_at, finished_at, agent, model, workflow, task, session, ok,
        //   session_cost_usd, input_tokens, ..., error } -> this run's own cost
        lua.setFunction("_agent_record", in: t) { [unowned self] call in
            let s = call.stack
            guard s.type(at: 1) == .table else { throw LuaArgumentError("_agent_record: a table is needed") }
            func str(_ k: String) -> String? {
                s.getField(1, k)
                defer { s.pop() }
                return s.type(at: -1) == .string ? s.string(at: -1) : nil
            }
            func num(_ k: String) -> Double? {
                s.getField(1, k)
                defer { s.pop() }
                return s.type(at: -1) == .number ? s.number(at: -1) : nil
            }
            s.getField(1, "ok"); let ok = s.bool(at: -1); s.pop()
            let now = monotonicWallClock()
            var r = StateStore.AgentRunRecord(startedAt: num("started_at") ?? now, finishedAt: num("finished_at") ?? now, ok: ok)
            r.agent = str("agent"); r.model = str("model"); r.workflow = str("workflow"); r.task = str("task")
            r.session = str("session"); r.run = str("run"); r.sessionCostUSD = num("session_cost_usd")
            r.inputTokens = Int(num("input_tokens") ?? 0); r.outputTokens = Int(num("output_tokens") ?? 0)
            r.cacheReadTokens = Int(num("cache_read_tokens") ?? 0); r.cacheCreationTokens = Int(num("cache_creation_tokens") ?? 0)
            r.duration = num("duration"); r.turns = num("turns").map { Int($0) }; r.maxRSS = num("max_rss").map { Int($0) }
            r.terminalReason = str("terminal_reason"); r.error = str("error")
            let store = try stateStore()
            let own = try storeCall { () throws(StoreError) in try store.recordAgentRun(r) }
            s.push(own)
            return .values(1)
        }

        // qw._agent_peak(agent) -> the highest peak memory of its last runs, or nil
        lua.setFunction("_agent_peak", in: t) { [unowned self] call in
            let s = call.stack
            let agent = s.type(at: 1) == .string ? s.string(at: 1) : nil
            let store = try stateStore()
            if let peak = try storeCall({ () throws(StoreError) in try store.agentPeakMemory(agent: agent) }) {
                s.push(peak)
            } else {
                s.pushNil()
            }
            return .values(1)
        }

        // qw._agent_session(run, workflow, task, agent, session, started_at): the CLI named its session
        lua.setFunction("_agent_session", in: t) { [unowned self] call in
            let s = call.stack
            guard let run = s.string(at: 1), let session = s.string(at: 5) else {
                throw LuaArgumentError("_agent_session: a run and a session are needed")
            }
            let (workflow, task, agent) = (s.string(at: 2), s.string(at: 3), s.string(at: 4))
            let at = s.number(at: 6) ?? monotonicWallClock()
            let store = try stateStore()
            try storeCall { () throws(StoreError) in
                try store.agentSessionStarted(run: run, workflow: workflow, task: task, agent: agent, session: session, startedAt: at)
            }
            return .values(0)
        }

        // qw._agent_files(dir) -> { { path, stem, prompt, prompt_line, problems = { {line, message} },
        //   fields = { { key, text, list, line, items = { {text, line} } } } }, ... } (sorted by path)
        lua.setFunction("_agent_files", in: t) { call in
            let s = call.stack
            guard let dir = s.string(at: 1) else { throw LuaArgumentError("_agent_files: a folder is needed") }
            let files = AgentFile.files(in: dir).map(AgentFile.read)
            // { [key] = text, line = N }: a problem (key "message") or a list item (key "text")
            func pushLined(_ text: String, _ line: Int, as key: String) {
                s.newTable(hash: 2)
                s.push(text); s.setField(-2, key)
                s.push(line); s.setField(-2, "line")
            }
            s.newTable(array: Int32(files.count))
            for (i, f) in files.enumerated() {
                s.newTable(hash: 6)
                s.push(f.path); s.setField(-2, "path")
                s.push(f.stem); s.setField(-2, "stem")
                s.push(f.prompt); s.setField(-2, "prompt")
                s.push(f.promptLine); s.setField(-2, "prompt_line")
                s.newTable(array: Int32(f.problems.count))
                for (k, p) in f.problems.enumerated() {
                    pushLined(p.message, p.line, as: "message")
                    s.setIndex(-2, k + 1)
                }
                s.setField(-2, "problems")
                s.newTable(array: Int32(f.fields.count))
                for (k, field) in f.fields.enumerated() {
                    s.newTable(hash: 5)
                    s.push(field.key); s.setField(-2, "key")
                    if let text = field.text { s.push(text); s.setField(-2, "text") }
                    s.push(field.isList); s.setField(-2, "list")
                    s.push(field.line); s.setField(-2, "line")
                    s.newTable(array: Int32(field.items.count))
                    for (j, item) in field.items.enumerated() {
                        pushLined(item.text, item.line, as: "text")
                        s.setIndex(-2, j + 1)
                    }
                    s.setField(-2, "items")
                    s.setIndex(-2, k + 1)
                }
                s.setField(-2, "fields")
                s.setIndex(-2, i + 1)
            }
            return .values(1)
        }
    }
}

/// What `_clean_up` started: the kill of a run's leftover processes and, on a thread of its
/// own meanwhile, the removal of its folder (on some file systems each rmdir takes a fraction
/// of a millisecond). The folder is removed once more after the kill when it is there again:
/// a process that was still running may have written to it.
private final class CleanUp {
    let kill: BackgroundWork<Void>
    let removal: BackgroundWork<Void>?
    let folder: String?

    init(kill: BackgroundWork<Void>, folder: String?) {
        self.kill = kill
        self.folder = folder
        removal = folder.map { f in BackgroundWork { removeFolder(f) } }
    }

    func wait() {
        kill.wait()
        removal?.wait()
        var st = stat()
        if let folder, lstat(folder, &st) == 0 { removeFolder(folder) }
    }
}
