import CLua
import CSystem
import Glibc
import LuaHost
import QuantumwalaCore

extension Runtime {
    /// The primitives of stdlib/qw/hooks.lua and suggestions.lua: hook events, the suggestion
    /// queue, spec phases, and waiting for a file to change.
    func registerHooks(in t: Int32) {
        func str(_ s: LuaStack, _ k: String, at i: Int32 = 1) -> String? {
            s.getField(i, k)
            defer { s.pop() }
            return s.type(at: -1) == .string ? s.string(at: -1) : nil
        }
        func num(_ s: LuaStack, _ k: String, at i: Int32 = 1) -> Double? {
            s.getField(i, k)
            defer { s.pop() }
            return s.type(at: -1) == .number ? s.number(at: -1) : nil
        }
        func event(from s: LuaStack, at i: Int32 = 1) -> HookEventRecord {
            func t(_ k: String) -> String? { str(s, k, at: i) }
            func n(_ k: String) -> Double? { num(s, k, at: i) }
            var e = HookEventRecord(at: n("at") ?? monotonicWallClock(), event: t("event") ?? "?", outcome: t("outcome") ?? "ok")
            e.session = t("session"); e.run = t("run"); e.workflow = t("workflow"); e.task = t("task")
            e.agent = t("agent"); e.tool = t("tool"); e.summary = t("summary"); e.paths = t("paths")
            e.durationMS = n("duration_ms"); e.reason = t("reason"); e.latencyMS = n("latency_ms"); e.detail = t("detail")
            return e
        }
        func push(_ s: LuaStack, _ e: HookEventRecord) {
            s.newTable(hash: 16)
            s.push(Int(e.id)); s.setField(-2, "id")
            s.push(e.at); s.setField(-2, "at")
            s.push(e.event); s.setField(-2, "event")
            s.push(e.outcome); s.setField(-2, "outcome")
            for (k, v) in [("session", e.session), ("run", e.run), ("workflow", e.workflow), ("task", e.task), ("agent", e.agent),
                           ("tool", e.tool), ("summary", e.summary), ("paths", e.paths), ("reason", e.reason), ("detail", e.detail)] {
                if let v { s.push(v); s.setField(-2, k) }
            }
            if let d = e.durationMS { s.push(d); s.setField(-2, "duration_ms") }
            if let d = e.latencyMS { s.push(d); s.setField(-2, "latency_ms") }
        }
        func push(_ s: LuaStack, _ r: SuggestionRecord) {
            s.newTable(hash: 12)
            s.push(Int(r.id)); s.setField(-2, "id")
            s.push(r.createdAt); s.setField(-2, "created_at")
            s.push(r.argv); s.setField(-2, "argv_json")
            s.push(r.state); s.setField(-2, "state")
            s.push(r.attempts); s.setField(-2, "attempts")
            s.push(r.notBefore); s.setField(-2, "not_before")
            for (k, v) in [("source", r.source), ("spec", r.spec), ("consumer", r.consumer), ("error", r.error)] {
                if let v { s.push(v); s.setField(-2, k) }
            }
            if let v = r.startedAt { s.push(v); s.setField(-2, "started_at") }
            if let v = r.finishedAt { s.push(v); s.setField(-2, "finished_at") }
        }
        func pushList<T>(_ s: LuaStack, _ items: [T], _ each: (T) -> Void) {
            s.newTable(array: Int32(items.count))
            for (i, x) in items.enumerated() {
                each(x)
                s.setIndex(-2, i + 1)
            }
        }
        // the items of the list at `i` that `read` takes, up to the first it does not
        func list<T>(_ s: LuaStack, at i: Int32, _ read: () -> T?) -> [T] {
            guard s.type(at: i) == .table else { return [] }
            var out: [T] = []
            var n = 1
            while true {
                s.getIndex(i, n)
                defer { s.pop() }
                guard let v = read() else { break }
                out.append(v)
                n += 1
            }
            return out
        }
        func strings(_ s: LuaStack, at i: Int32) -> [String] {
            list(s, at: i) { s.type(at: -1) == .string ? s.string(at: -1) : nil }
        }

        // qw._hook_record({ event, session, run, ..., outcome }, wait) -> id; `wait`: seconds
        // for another process's lock (default: the store's)
        lua.setFunction("_hook_record", in: t) { [unowned self] call in
            let s = call.stack
            guard s.type(at: 1) == .table else { throw LuaArgumentError("_hook_record: a table is needed") }
            let e = event(from: s)
            let wait = s.number(at: 2)
            let store = try stateStore()
            s.push(Int(try storeCall { () throws(StoreError) in
                try store.withBusyWait(wait ?? options.storeBusyWait) { () throws(StoreError) in try store.recordHookEvent(e) }
            }))
            return .values(1)
        }
        // qw._hook_record_many({ records }, wait) -> how many: in one transaction (the events a
        // fallback file kept)
        lua.setFunction("_hook_record_many", in: t) { [unowned self] call in
            let s = call.stack
            guard s.type(at: 1) == .table else { throw LuaArgumentError("_hook_record_many: a list is needed") }
            var events: [HookEventRecord] = []
            var n = 1
            while true {
                s.getIndex(1, n)
                guard s.type(at: -1) == .table else { s.pop(); break }
                events.append(event(from: s, at: s.top))
                s.pop()
                n += 1
            }
            let wait = s.number(at: 2)
            let store = try stateStore()
            try storeCall { () throws(StoreError) in
                try store.withBusyWait(wait ?? options.storeBusyWait) { () throws(StoreError) in try store.recordHookEvents(events) }
            }
            s.push(events.count)
            return .values(1)
        }
        // qw._hook_events{ session, run, event, after, limit } -> { records }
        lua.setFunction("_hook_events", in: t) { [unowned self] call in
            let s = call.stack
            let hasOpts = s.type(at: 1) == .table
            let session = hasOpts ? str(s, "session") : nil, run = hasOpts ? str(s, "run") : nil
            let ev = hasOpts ? str(s, "event") : nil
            let after = hasOpts ? Int64(num(s, "after") ?? 0) : 0, limit = hasOpts ? Int(num(s, "limit") ?? 1000) : 1000
            let store = try stateStore()
            let list = try storeCall { () throws(StoreError) in try store.hookEvents(session: session, run: run, event: ev, afterID: after, limit: limit) }
            pushList(s, list) { push(s, $0) }
            return .values(1)
        }
        // qw._suggest(argv_json, source, spec, state, error) -> id, added
        lua.setFunction("_suggest", in: t) { [unowned self] call in
            let s = call.stack
            guard let argv = s.string(at: 1) else { throw LuaArgumentError("_suggest: the argv (JSON) is needed") }
            let source = s.string(at: 2), spec = s.string(at: 3), state = s.string(at: 4) ?? "pending", err = s.string(at: 5)
            let store = try stateStore()
            let (id, added) = try storeCall { () throws(StoreError) in
                try store.enqueueSuggestion(argv: argv, source: source, spec: spec, state: state, error: err)
            }
            s.push(Int(id))
            s.push(added)
            return .values(2)
        }
        // qw._suggest_claim(consumer, lease) -> the record, or nil
        lua.setFunction("_suggest_claim", in: t) { [unowned self] call in
            let s = call.stack
            let consumer = s.string(at: 1) ?? "?", lease = s.number(at: 2) ?? 60
            let store = try stateStore()
            if let r = try storeCall({ () throws(StoreError) in try store.claimSuggestion(consumer: consumer, lease: lease) }) {
                push(s, r)
            } else {
                s.pushNil()
            }
            return .values(1)
        }
        // qw._suggest_renew({ids}, consumer, lease)
        lua.setFunction("_suggest_renew", in: t) { [unowned self] call in
            let s = call.stack
            let ids = list(s, at: 1) { s.integer(at: -1) }
            let consumer = s.string(at: 2) ?? "?", lease = s.number(at: 3) ?? 60
            let store = try stateStore()
            try storeCall { () throws(StoreError) in try store.renewSuggestions(ids, consumer: consumer, lease: lease) }
            return .values(0)
        }
        // qw._suggest_finish(id, consumer, state, error, not_before) -> whether it was still ours
        lua.setFunction("_suggest_finish", in: t) { [unowned self] call in
            let s = call.stack
            guard let id = s.integer(at: 1), let consumer = s.string(at: 2), let state = s.string(at: 3) else {
                throw LuaArgumentError("_suggest_finish: id, consumer and state are needed")
            }
            let err = s.string(at: 4), notBefore = s.number(at: 5) ?? 0
            let store = try stateStore()
            s.push(try storeCall { () throws(StoreError) in
                try store.finishSuggestion(id: Int64(id), consumer: consumer, state: state, error: err, notBefore: notBefore)
            })
            return .values(1)
        }
        // qw._suggestions({states}, limit) -> { records }
        lua.setFunction("_suggestions", in: t) { [unowned self] call in
            let s = call.stack
            let states = strings(s, at: 1), limit = Int(s.number(at: 2) ?? 1000)
            let store = try stateStore()
            let list = try storeCall { () throws(StoreError) in try store.suggestions(states: states, limit: limit) }
            pushList(s, list) { push(s, $0) }
            return .values(1)
        }
        // qw._suggest_due() -> the soonest time a waiting consumer has something to do, or nil
        lua.setFunction("_suggest_due", in: t) { [unowned self] call in
            let store = try stateStore()
            if let d = try storeCall({ () throws(StoreError) in try store.nextSuggestionDue() }) { call.stack.push(d) } else { call.stack.pushNil() }
            return .values(1)
        }
        // qw._spec_phase(spec, phase, state, source); qw._spec_phases(spec) -> { {phase, state, source, at} }
        lua.setFunction("_spec_phase", in: t) { [unowned self] call in
            let s = call.stack
            guard let spec = s.string(at: 1), let phase = s.string(at: 2), let state = s.string(at: 3) else {
                throw LuaArgumentError("_spec_phase: spec, phase and state are needed")
            }
            let source = s.string(at: 4)
            let store = try stateStore()
            try storeCall { () throws(StoreError) in try store.recordSpecPhase(spec: spec, phase: phase, state: state, source: source) }
            return .values(0)
        }
        lua.setFunction("_spec_phases", in: t) { [unowned self] call in
            let s = call.stack
            let spec = s.string(at: 1) ?? ""
            let store = try stateStore()
            let list = try storeCall { () throws(StoreError) in try store.specPhases(spec: spec) }
            pushList(s, list) { p in
                s.newTable(hash: 4)
                s.push(p.phase); s.setField(-2, "phase")
                s.push(p.state); s.setField(-2, "state")
                if let src = p.source { s.push(src); s.setField(-2, "source") }
                s.push(p.at); s.setField(-2, "at")
            }
            return .values(1)
        }
        // qw._state_path() -> the store's path
        lua.setFunction("_state_path", in: t) { [unowned self] call in
            call.stack.push(statePath)
            return .values(1)
        }
        // qw._exe() -> the running qw binary
        lua.setFunction("_exe", in: t) { call in
            call.stack.push(resolvedPath("/proc/self/exe") ?? CommandLine.arguments[0])
            return .values(1)
        }
        // qw._realpath(path) -> the absolute path with links resolved, or nil when it does not exist
        lua.setFunction("_realpath", in: t) { call in
            if let p = call.stack.string(at: 1).flatMap(resolvedPath) { call.stack.push(p) } else { call.stack.pushNil() }
            return .values(1)
        }
        // qw._append_line(path, text) -> ok, error: one write(2) with O_APPEND, so that lines
        // of processes appending at once never interleave
        lua.setFunction("_append_line", in: t) { call in
            let s = call.stack
            guard let path = s.string(at: 1), let text = s.string(at: 2) else { throw LuaArgumentError("_append_line: a path and a text are needed") }
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                s.push(false)
                s.push("cannot open \(path): \(errnoText(errno))")
                return .values(2)
            }
            defer { close(fd) }
            var bytes = Array(text.utf8)
            if bytes.last != 10 { bytes.append(10) }
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            s.push(n == bytes.count)
            if n == bytes.count { s.pushNil() } else { s.push("cannot write \(path): \(errnoText(errno))") }
            return .values(2)
        }
        // qw._wait_change({paths}, timeout) -> true when one changed, false at the timeout.
        // A folder is watched for what happens in it; a missing file through its folder.
        lua.setFunction("_wait_change", in: t) { [unowned self] call in
            let s = call.stack
            let paths = strings(s, at: 1), timeout = max(0, s.number(at: 2) ?? 1)
            try scheduler.checkCancelled()
            let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
            guard fd >= 0 else { throw LuaArgumentError("cannot watch files: \(errnoText(errno))") }
            let mask = UInt32(IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO | IN_DELETE)
            for p in paths {
                if inotify_add_watch(fd, p, mask) < 0, let slash = p.lastIndex(of: "/") {
                    _ = inotify_add_watch(fd, slash == p.startIndex ? "/" : String(p[..<slash]), mask)
                }
            }
            let w = scheduler.waiter()
            var done = false
            var timer: Reactor.TimerID?
            func end(_ changed: Bool) {
                guard !done else { return }
                done = true
                if let timer { reactor.cancel(timer) }
                reactor.unwatch(fd)
                close(fd)
                w.succeed { st in st.push(changed); return 1 }
            }
            reactor.watch(fd, events: UInt32(QW_EPOLLIN)) { _ in end(true) }
            timer = reactor.after(timeout) { end(false) }
            w.onCancel = { [unowned self] reason in
                guard !done else { return }
                done = true
                if let timer { reactor.cancel(timer) }
                reactor.unwatch(fd)
                close(fd)
                w.fail(reason)
            }
            return scheduler.wait(w, call)
        }
    }
}
