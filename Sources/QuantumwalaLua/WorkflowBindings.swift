import CLua
import Glibc
import LuaHost
import QuantumwalaCore

/// FNV-1a, 64 bits, as 16 hex digits: a task's fingerprint (identity, not security).
func fnv1a(_ bytes: [UInt8]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes {
        h ^= UInt64(b)
        h = h &* 0x0000_0100_0000_01b3
    }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

extension Runtime {
    func registerWorkflows(in t: Int32) {
        // qw._hash(string) -> fingerprint
        lua.setFunction("_hash", in: t) { call in
            call.stack.push(fnv1a(call.stack.bytes(at: 1) ?? []))
            return .values(1)
        }

        // qw._time() -> seconds since the epoch (wall clock, sub-second)
        lua.setFunction("_time", in: t) { call in
            call.stack.push(monotonicWallClock())
            return .values(1)
        }

        // qw._script() -> path, cwd of the script being run (nil in -e and the REPL)
        lua.setFunction("_script", in: t) { [unowned self] call in
            guard let path = scriptPath else { return .values(0) }
            call.stack.push(path)
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let cwd = getcwd(&buf, buf.count).map { _ in buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }
            if let cwd { call.stack.push(cwd) } else { call.stack.pushNil() }
            return .values(2)
        }

        // qw._wf_begin(name, script, args, cwd)
        lua.setFunction("_wf_begin", in: t) { [unowned self] call in
            let s = call.stack
            let name = s.string(at: 1) ?? ""
            let args = s.type(at: 3) == .table ? try JSON.encodeValue(s.value(at: 3)) : nil
            let store = try stateStore()
            try storeCall { () throws(StoreError) in
                try store.beginWorkflow(name, script: s.string(at: 2), args: args, cwd: s.string(at: 4))
            }
            return .values(0)
        }

        // qw._wf_end(name, status)
        lua.setFunction("_wf_end", in: t) { [unowned self] call in
            let name = call.stack.string(at: 1) ?? "", status = call.stack.string(at: 2) ?? "finished"
            let store = try stateStore()
            try storeCall { () throws(StoreError) in try store.endWorkflow(name, status: status) }
            return .values(0)
        }

        // qw._wf_reset(name)
        lua.setFunction("_wf_reset", in: t) { [unowned self] call in
            let name = call.stack.string(at: 1) ?? ""
            let store = try stateStore()
            try storeCall { () throws(StoreError) in try store.resetWorkflow(name) }
            return .values(0)
        }

        // qw._wf_tasks(name) -> { [id] = { fingerprint, status, attempts, result, error, ... } }
        lua.setFunction("_wf_tasks", in: t) { [unowned self] call in
            let s = call.stack
            let name = s.string(at: 1) ?? ""
            let store = try stateStore()
            let records = try storeCall { () throws(StoreError) in try store.tasks(of: name) }
            s.newTable(hash: Int32(records.count))
            for r in records {
                pushTaskRecord(r, on: s)
                s.setField(-2, r.id)
            }
            return .values(1)
        }

        // qw._wf_save(name, records, events, attempts)
        lua.setFunction("_wf_save", in: t) { [unowned self] call in
            let s = call.stack
            let name = s.string(at: 1) ?? ""
            var records: [StateStore.TaskRecord] = []
            for i in 0..<s.rawLength(2) {
                s.getIndex(2, i + 1)
                defer { s.pop() }
                records.append(try readTaskRecord(s, at: s.top))
            }
            var events: [(kind: String, task: String, data: [UInt8]?)] = []
            for i in 0..<s.rawLength(3) {
                s.getIndex(3, i + 1)
                defer { s.pop() }
                let e = s.top
                s.getField(e, "kind"); let kind = s.string(at: -1) ?? "?"; s.pop()
                s.getField(e, "task"); let task = s.string(at: -1) ?? ""; s.pop()
                s.getField(e, "data"); let data = s.type(at: -1) == .nil ? nil : try JSON.encodeValue(s.value(at: -1)); s.pop()
                events.append((kind, task, data))
            }
            var attempts: [StateStore.AttemptRecord] = []
            if s.type(at: 4) == .table {
                for i in 0..<s.rawLength(4) {
                    s.getIndex(4, i + 1)
                    defer { s.pop() }
                    let t = s.top
                    func field(_ k: String) -> (LuaType, Double?, String?) {
                        s.getField(t, k)
                        defer { s.pop() }
                        return (s.type(at: -1), s.number(at: -1), s.type(at: -1) == .string ? s.string(at: -1) : nil)
                    }
                    var a = StateStore.AttemptRecord(task: field("task").2 ?? "?", attempt: Int(field("attempt").1 ?? 1),
                                                     ok: field("ok").0 == .boolean && { s.getField(t, "ok"); defer { s.pop() }; return s.bool(at: -1) }())
                    a.duration = field("duration").1
                    a.code = field("code").1.map { Int($0) }
                    a.maxRSS = field("max_rss").1.map { Int($0) }
                    a.cpuTime = field("cpu_time").1
                    a.error = field("error").2
                    attempts.append(a)
                }
            }
            let store = try stateStore()
            try storeCall { () throws(StoreError) in try store.saveTasks(name, records, attempts: attempts, events: events) }
            return .values(0)
        }
    }

    private func pushTaskRecord(_ r: StateStore.TaskRecord, on s: LuaStack) {
        s.newTable(hash: 12)
        s.push(r.id); s.setField(-2, "id")
        s.push(r.fingerprint); s.setField(-2, "fingerprint")
        s.push(r.status); s.setField(-2, "status")
        s.push(r.attempts); s.setField(-2, "attempts")
        if let v = r.startedAt { s.push(v); s.setField(-2, "started_at") }
        if let v = r.finishedAt { s.push(v); s.setField(-2, "finished_at") }
        if let v = r.duration { s.push(v); s.setField(-2, "duration") }
        if let v = r.code { s.push(v); s.setField(-2, "code") }
        if let v = r.maxRSS { s.push(v); s.setField(-2, "max_rss") }
        if let v = r.cpuTime { s.push(v); s.setField(-2, "cpu_time") }
        if let v = r.error { s.push(v); s.setField(-2, "error") }
        if let json = r.result, let v = try? JSON.decode(json) {
            s.push(v)
            s.setField(-2, "result")
        }
    }

    private func readTaskRecord(_ s: LuaStack, at t: Int32) throws(LuaArgumentError) -> StateStore.TaskRecord {
        // one pass over the fields that are there (most records have few)
        var r = StateStore.TaskRecord(id: "?", fingerprint: "", status: "pending")
        s.pushNil()
        while s.next(t) {
            defer { s.pop() }
            guard s.type(at: -2) == .string, let key = s.string(at: -2) else { continue }
            let isNumber = s.type(at: -1) == .number
            switch key {
            case "id": r.id = s.string(at: -1) ?? "?"
            case "fingerprint": r.fingerprint = s.string(at: -1) ?? ""
            case "status": r.status = s.string(at: -1) ?? "pending"
            case "attempts": r.attempts = isNumber ? Int(s.number(at: -1)!) : 0
            case "started_at": r.startedAt = isNumber ? s.number(at: -1) : nil
            case "finished_at": r.finishedAt = isNumber ? s.number(at: -1) : nil
            case "duration": r.duration = isNumber ? s.number(at: -1) : nil
            case "code": r.code = isNumber ? Int(s.number(at: -1)!) : nil
            case "max_rss": r.maxRSS = isNumber ? Int(s.number(at: -1)!) : nil
            case "cpu_time": r.cpuTime = isNumber ? s.number(at: -1) : nil
            case "error": r.error = s.type(at: -1) == .string ? s.string(at: -1) : nil
            case "result":
                // a result that cannot be stored (a function, a process handle) is kept as its kind
                if let v = try? s.value(at: -1), let json = try? JSON.encode(v) {
                    r.result = json
                } else {
                    r.result = try? JSON.encode(.string("<\(s.type(at: -1).name)>"))
                }
            default: break
            }
        }
        return r
    }
}

extension JSON {
    /// Encodes, turning a JSON error into a Lua argument error.
    static func encodeValue(_ v: LuaValue) throws(LuaArgumentError) -> [UInt8] {
        do {
            return try JSON.encode(v)
        } catch {
            throw LuaArgumentError(error.description)
        }
    }
}
