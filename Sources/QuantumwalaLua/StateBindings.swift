import CLua
import Glibc
import LuaHost
import QuantumwalaCore

extension Runtime {
    /// Where the store is: `--state`, else `$QW_STATE`, else `.qw/state.db`.
    public var statePath: String { Self.statePath(options.statePath) }

    /// Where the store is when `--state` says `explicit` (nil: not given).
    public static func statePath(_ explicit: String?) -> String {
        explicit ?? getenv("QW_STATE").map { String(cString: $0) } ?? ".qw/state.db"
    }

    /// The store, opened on first use (or by the ``RuntimeOptions/storeOpening`` under way).
    func stateStore() throws(LuaArgumentError) -> StateStore {
        if let s = storeHandle { return s }
        let path = statePath
        do {
            let s: StateStore
            if let ahead = options.storeOpening, ahead.path == path {
                s = try ahead.wait()
            } else {
                s = try StateStore(path: path, busyWait: options.storeBusyWait)
            }
            storeHandle = s
            return s
        } catch {
            throw LuaArgumentError(error.message)
        }
    }

    func registerState(in t: Int32) {
        // qw._state_get(key) -> value, version (nil, 0 when absent)
        lua.setFunction("_state_get", in: t) { [unowned self] call in
            let s = call.stack
            guard let key = s.type(at: 1) == .string ? s.string(at: 1) : nil else {
                throw LuaArgumentError("qw.state: the key must be a string (got \(s.type(at: 1).name))")
            }
            let store = try stateStore()
            guard let v = try storeCall({ () throws(StoreError) in try store.get(key) }) else {
                s.pushNil()
                s.push(0)
                return .values(2)
            }
            do {
                s.push(try JSON.decode(v.json))
            } catch {
                throw LuaArgumentError("qw.state: the stored value of '\(key)' is not valid JSON: \(error)")
            }
            s.push(v.version)
            return .values(2)
        }

        // qw._state_commit(sets, deletes, expect) -> committed
        lua.setFunction("_state_commit", in: t) { [unowned self] call in
            let s = call.stack
            var sets: [(String, [UInt8])] = []
            var deletes: [String] = []
            var expect: [String: Int64] = [:]
            s.pushNil()
            while s.next(1) {
                defer { s.pop() }
                let key = s.string(at: -2) ?? "?"
                let value: LuaValue
                do {
                    value = try s.value(at: -1, name: key)
                } catch {
                    throw LuaArgumentError("qw.state: cannot store '\(key)': \((error as? LuaArgumentError)?.message ?? "\(error)")")
                }
                do {
                    sets.append((key, try JSON.encode(value)))
                } catch {
                    throw LuaArgumentError("qw.state: cannot store '\(key)': \(String(describing: error).dropPrefix("JSON: "))")
                }
            }
            for i in 0..<s.rawLength(2) {
                s.getIndex(2, i + 1)
                deletes.append(s.string(at: -1) ?? "")
                s.pop()
            }
            s.pushNil()
            while s.next(3) {
                defer { s.pop() }
                if let k = s.string(at: -2), let v = s.integer(at: -1) { expect[k] = v }
            }
            let store = try stateStore()
            let ok = try storeCall { () throws(StoreError) in try store.commit(sets: sets, deletes: deletes, expect: expect) }
            s.push(ok)
            return .values(1)
        }

        // qw._state_keys(prefix) -> { keys... }
        lua.setFunction("_state_keys", in: t) { [unowned self] call in
            let prefix = call.stack.string(at: 1) ?? ""
            let store = try stateStore()
            let keys = try storeCall { () throws(StoreError) in try store.keys(prefix: prefix) }
            call.stack.newTable(array: Int32(keys.count))
            for (i, k) in keys.enumerated() {
                call.stack.push(k)
                call.stack.setIndex(-2, i + 1)
            }
            return .values(1)
        }

        // qw._state_path() -> the store's path (opening it)
        lua.setFunction("_state_path", in: t) { [unowned self] call in
            call.stack.push(try stateStore().path)
            return .values(1)
        }
    }

    /// Prints where the store is and what it holds (`qw state`).
    public func printStateStats() -> RunOutcome {
        do {
            let store = try stateStore()
            let st = try storeCall { () throws(StoreError) in try store.stats() }
            let check = try storeCall { () throws(StoreError) in try store.integrityCheck() }
            writeAll(1, """
                store      \(store.path)
                keys       \(st.keys)
                events     \(st.events)
                size       \(formatBytes(st.bytes)) (plus its write-ahead log)
                integrity  \(check)

                """)
            return .ok
        } catch {
            return .failed(LuaError(.runtime, error.message))
        }
    }

    @discardableResult
    func storeCall<T>(_ body: () throws(StoreError) -> T) throws(LuaArgumentError) -> T {
        do {
            return try body()
        } catch {
            throw LuaArgumentError(error.message)
        }
    }
}

extension String {
    func dropPrefix(_ p: String) -> String { hasPrefix(p) ? String(dropFirst(p.count)) : self }
}
