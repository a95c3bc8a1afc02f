import CLua
import Glibc
import LuaHost
import QuantumwalaCore

extension Runtime {
    /// The primitives of stdlib/qw/spec.lua and setup.lua: folders, checkboxes, approvals.
    func registerSpecs(in t: Int32) {
        // qw._set_checkbox(path, line, id, state) -> the state it replaced (see Checkbox)
        lua.setFunction("_set_checkbox", in: t) { call in
            let s = call.stack
            guard let path = s.string(at: 1), let line = s.integer(at: 2), let id = s.string(at: 3),
                  let state = s.string(at: 4), state.utf8.count == 1 else {
                throw LuaArgumentError("_set_checkbox: a path, a line, a task id and one state character are needed")
            }
            do throws(Checkbox.Failure) {
                let old = try Checkbox.set(path: path, line: Int(line), id: id, state: state.utf8.first!)
                s.push(String(decoding: [old], as: UTF8.self))
            } catch {
                throw LuaArgumentError(error.message)
            }
            return .values(1)
        }
        // qw._mkdir(path) -> true when it exists as a folder afterwards
        lua.setFunction("_mkdir", in: t) { call in
            guard let path = call.stack.string(at: 1) else { throw LuaArgumentError("_mkdir: a path is needed") }
            var st = stat()
            let ok = mkdir(path, 0o755) == 0 || (stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR)
            call.stack.push(ok)
            return .values(1)
        }
        // qw._subdirs(path) -> the names of the folders in it, sorted ({} when it is not one)
        lua.setFunction("_subdirs", in: t) { call in
            var names: [String] = []
            if let path = call.stack.string(at: 1), let d = opendir(path) {
                while let e = readdir(d) {
                    let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                    guard name != ".", name != ".." else { continue }
                    var st = stat()
                    if stat(path + "/" + name, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { names.append(name) }
                }
                closedir(d)
            }
            names.sort()
            call.stack.newTable(array: Int32(names.count))
            for (i, n) in names.enumerated() {
                call.stack.push(n)
                call.stack.setIndex(-2, i + 1)
            }
            return .values(1)
        }
        // qw._cwd() -> the absolute working folder
        lua.setFunction("_cwd", in: t) { call in
            call.stack.push(currentDirectory())
            return .values(1)
        }
        // qw._approve(spec, phase, document, hash, by): a durable approval record
        lua.setFunction("_approve", in: t) { [unowned self] call in
            let s = call.stack
            guard let spec = s.string(at: 1), let phase = s.string(at: 2), let doc = s.string(at: 3), let hash = s.string(at: 4) else {
                throw LuaArgumentError("_approve: a spec, a phase, a document and its hash are needed")
            }
            let by = s.string(at: 5) ?? "?"
            let store = try stateStore()
            try storeCall { () throws(StoreError) in try store.approve(spec: spec, phase: phase, document: doc, hash: hash, by: by) }
            return .values(0)
        }
        // qw._approval(spec, phase) -> { hash, by, at, document } of the last approval, or nil
        lua.setFunction("_approval", in: t) { [unowned self] call in
            let s = call.stack
            guard let spec = s.string(at: 1), let phase = s.string(at: 2) else { throw LuaArgumentError("_approval: a spec and a phase are needed") }
            guard access(statePath, F_OK) == 0 else { s.pushNil(); return .values(1) }  // no store: nothing approved
            let store = try stateStore()
            guard let a = try storeCall({ () throws(StoreError) in try store.approval(spec: spec, phase: phase) }) else {
                s.pushNil()
                return .values(1)
            }
            s.newTable(hash: 4)
            s.push(a.hash); s.setField(-2, "hash")
            s.push(a.by); s.setField(-2, "by")
            s.push(a.at); s.setField(-2, "at")
            s.push(a.document); s.setField(-2, "document")
            return .values(1)
        }
    }
}
