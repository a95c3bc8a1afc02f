import CLua
import CLuaShims
import Glibc
import LuaHost
import QuantumwalaCore

/// The version `qw --version` and `qw.version` report.
public let quantumwalaVersion = "0.1.0"

extension Runtime {
    func registerHelpers(in t: Int32) {
        let s = lua.stack
        s.push(quantumwalaVersion)
        s.setField(t, "version")

        // qw.now() -> monotonic seconds
        // qw._loadfile(path) -> the chunk, or nil and a message: loadfile through the cache of
        // compiled chunks that init.lua is loaded through (stdlib modules, at each qw start)
        lua.setFunction("_loadfile", in: t) { [unowned self] call in
            guard let path = call.stack.string(at: 1) else { throw LuaArgumentError("_loadfile: a path is needed") }
            do throws(LuaError) {
                try lua.loadFile(path, cacheDir: Self.bytecodeCache)
                // loaded on the main state's stack: onto the caller's (a task's coroutine)
                if call.stack.L != lua.L { lua_xmove(lua.L, call.stack.L, 1) }
                return .values(1)
            } catch {
                call.stack.pushNil()
                call.stack.push(error.message)
                return .values(2)
            }
        }
        lua.setFunction("now", in: t) { call in
            call.stack.push(monotonicSeconds())
            return .values(1)
        }

        // qw.sleep(seconds)
        lua.setFunction("sleep", in: t) { [unowned self] call in
            guard call.stack.type(at: 1) == .number, let secs = call.stack.number(at: 1), secs >= 0, secs.isFinite else {
                throw LuaArgumentError("qw.sleep: seconds must be a number >= 0 (got \(call.stack.type(at: 1).name))")
            }
            try scheduler.checkCancelled()
            let w = scheduler.waiter()
            let timer = reactor.after(secs) { w.succeed { _ in 0 } }
            w.onCancel = { [unowned self] reason in
                reactor.cancel(timer)
                w.fail(reason)
            }
            return scheduler.wait(w, call)
        }

        // qw._log(level, message): levels debug, info, warn, error
        lua.setFunction("_log", in: t) { [unowned self] call in
            let level = call.stack.string(at: 1) ?? "info"
            if level == "debug" && !options.verbose { return .values(0) }
            let msg = call.stack.string(at: 2) ?? ""
            writeLog(level: level, msg)
            return .values(0)
        }

        // qw._isatty(fd) -> bool
        lua.setFunction("_isatty", in: t) { call in
            call.stack.push(isatty(Int32(call.stack.integer(at: 1) ?? 1)) == 1)
            return .values(1)
        }

        // qw._color() -> whether to colour stderr (a terminal, NO_COLOR unset)
        lua.setFunction("_color", in: t) { call in
            call.stack.push(useColor(fd: 2))
            return .values(1)
        }

        // Coroutine support for stdlib's pass-through of host yields.
        lua_pushlightuserdata(lua.L, LuaState.hostYieldTag)
        s.setField(t, "_host_tag")
        lua.setFunction("_in_task_thread", in: t) { [unowned self] call in
            call.stack.push(scheduler.current.map { $0.thread == call.L } ?? true)
            return .values(1)
        }
        lua_pushcclosure(lua.L, qw_co_yield, 0)
        s.setField(t, "_co_yield")
        lua_pushcclosure(lua.L, qw_co_isyieldable, 0)
        s.setField(t, "_co_isyieldable")
        lua_pushcclosure(lua.L, qw_co_make_wrap, 0)
        s.setField(t, "_co_make_wrap")
        lua.setFunction("_is_root_task", in: t) { [unowned self] call in
            call.stack.push(scheduler.current.map { $0.rootID == $0.id } ?? true)
            return .values(1)
        }
        // qw._where() -> "file:line: " of the nearest caller outside stdlib
        lua.setFunction("_where", in: t) { call in
            qw_push_where(call.L)
            return .values(1)
        }
        lua.setFunction("_wait_here", in: t) { [unowned self] call in scheduler.waitHere(call) }
        // qw._failure_message(result) -> what check = true raises for it
        lua.setFunction("_failure_message", in: t) { call in
            let st = call.stack
            var r = ProcessResult()
            st.getField(1, "error"); r.error = st.string(at: -1); st.pop()
            st.getField(1, "code"); r.code = Int32(truncatingIfNeeded: st.integer(at: -1) ?? 1); st.pop()
            st.getField(1, "stderr"); r.stderr = st.bytes(at: -1) ?? []; st.pop()
            st.getField(1, "name"); let label = st.string(at: -1) ?? "command"; st.pop()
            st.push(checkFailureMessage(r, label: label))
            return .values(1)
        }

        s.newTable()
        lua.setFunction("encode", in: -1) { call in
            let v = try call.stack.value(at: 1, name: "qw.json.encode: the value")
            let pretty = call.stack.type(at: 2) == .table && { call.stack.getField(2, "pretty"); defer { call.stack.pop() }; return call.stack.bool(at: -1) }()
            do {
                call.stack.push(bytes: try JSON.encode(v, pretty: pretty))
            } catch {
                throw LuaArgumentError("qw.json.encode: " + jsonMessage(error))
            }
            return .values(1)
        }
        lua.setFunction("decode", in: -1) { call in
            guard let b = call.stack.type(at: 1) == .string ? call.stack.bytes(at: 1) : nil else {
                throw LuaArgumentError("qw.json.decode: expects a string (got \(call.stack.type(at: 1).name))")
            }
            do {
                call.stack.push(try JSON.decode(b))
            } catch {
                throw LuaArgumentError("qw.json.decode: " + jsonMessage(error))
            }
            return .values(1)
        }
        s.setField(t, "json")
    }

    /// `info: message` on stderr, coloured on a terminal unless NO_COLOR is set.
    func writeLog(level: String, _ msg: String) {
        let color: String
        switch level {
        case "error": color = "\u{1B}[31m"
        case "warn": color = "\u{1B}[33m"
        case "debug": color = "\u{1B}[2m"
        default: color = "\u{1B}[36m"
        }
        let line = useColor(fd: 2) ? "\(color)\(level)\u{1B}[0m: \(msg)\n" : "\(level): \(msg)\n"
        writeAll(2, line)
    }
}

/// Colour only on a terminal, and never with NO_COLOR set.
public func useColor(fd: Int32) -> Bool {
    if let v = getenv("NO_COLOR"), v.pointee != 0 { return false }
    return isatty(fd) == 1
}

private func jsonMessage(_ error: any Error) -> String {
    let m = "\(error)"
    return m.hasPrefix("JSON: ") ? String(m.dropFirst(6)) : m
}
