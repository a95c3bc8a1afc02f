import CLua
import CLuaShims
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

        // qw._wf_task_adder(options, specs, optss, check) -> a workflow's
        // wf:task, its common case in C, and its task table (see qw_wf_task_adder)
        lua_pushcclosure(lua.L, qw_wf_task_adder, 0)
        lua_setfield(lua.L, t, "_wf_task_adder")

        // qw._time() -> seconds since the epoch (wall clock, sub-second)
        lua.setFunction("_time", in: t) { call in
            call.stack.push(monotonicWallClock())
            return .values(1)
        }

        // qw._script() -> path, cwd of the script being run (nil in -e and the REPL)
        lua.setFunction("_script", in: t) { [unowned self] call in
            guard let path = scriptPath else { return .values(0) }
            call.stack.push(path)
            let cwd = currentDirectory()
            if !cwd.isEmpty { call.stack.push(cwd) } else { call.stack.pushNil() }
            return .values(2)
        }

        // qw._wf_begin(name, script, args, cwd, budget_usd)
        lua.setFunction("_wf_begin", in: t) { [unowned self] call in
            let s = call.stack
            let name = s.string(at: 1) ?? ""
            let args = s.type(at: 3) == .table ? try JSON.encodeValue(s.value(at: 3)) : nil
            let budget = s.type(at: 5) == .number ? s.number(at: 5) : nil
            let store = try stateStore()
            try storeCall { () throws(StoreError) in
                try store.beginWorkflow(name, script: s.string(at: 2), args: args, cwd: s.string(at: 4), budgetUSD: budget)
            }
            return .values(0)
        }

        // qw._task_log(workflow, task) -> the task's log file (absolute; emptied), or nil
        lua.setFunction("_task_log", in: t) { call in
            let s = call.stack
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            guard let w = s.string(at: 1), let task = s.string(at: 2), getcwd(&buf, buf.count) != nil else { return .values(0) }
            let root = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if let p = TaskLogs.prepare(root: root, workflow: w, task: task) { s.push(p) } else { s.pushNil() }
            return .values(1)
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

        registerWorkflowRuns(in: t)
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
