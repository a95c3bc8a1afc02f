import LuaHost
import QuantumwalaCore

/// Options of a command spec that Swift itself acts on (`retry` is handled in stdlib).
struct ExecOptions {
    var spec: CommandSpec
    var check = false
    /// `log = true`: a file in the run's log folder.
    var logToRunFolder = false
    /// The `resources` option; nil: the estimate for this command.
    var request: ResourceRequest?
    /// `resources.timeout`: how long to wait for admission.
    var admissionTimeout: Double?
}

/// Reads a command spec (`"shell string"` or `{ argv..., opt = v }`) plus an optional
/// options table from the Lua stack, checking every option by name.
struct CommandSpecParser {
    /// The function name used in error messages (`qw.exec`).
    let function: String

    static let knownOptions: Set<String> = [
        "cwd", "env", "clear_env", "stdin", "timeout", "name", "retry", "check", "log", "kill_grace", "resources", "cpu_time",
    ]

    func parse(_ s: LuaStack, at index: Int32, options optIndex: Int32?) throws(LuaArgumentError) -> ExecOptions {
        var opts: ExecOptions
        switch s.type(at: index) {
        case .string:
            opts = ExecOptions(spec: .shell(s.string(at: index)!))
        case .table:
            let n = s.rawLength(index)
            guard n > 0 else { throw LuaArgumentError("\(function): the command table has no program (its array part is empty)") }
            var argv: [String] = []
            argv.reserveCapacity(n)
            for i in 1...n {
                s.getIndex(index, i)
                defer { s.pop() }
                guard let a = s.type(at: -1) == .string || s.type(at: -1) == .number ? s.string(at: -1) : nil else {
                    throw LuaArgumentError("\(function): argument \(i) of the command must be a string (got \(s.type(at: -1).name))")
                }
                argv.append(a)
            }
            opts = ExecOptions(spec: CommandSpec(argv: argv))
            try apply(s, table: index, to: &opts, skipArray: n)
        default:
            throw LuaArgumentError("\(function): the command must be a string or a table (got \(s.type(at: index).name))")
        }
        if let o = optIndex, s.type(at: o) != .nil, s.type(at: o) != .none {
            guard s.type(at: o) == .table else {
                throw LuaArgumentError("\(function): options must be a table (got \(s.type(at: o).name))")
            }
            try apply(s, table: o, to: &opts, skipArray: 0)
        }
        return opts
    }

    private func apply(_ s: LuaStack, table: Int32, to o: inout ExecOptions, skipArray: Int) throws(LuaArgumentError) {
        let t = s.absolute(table)
        s.pushNil()
        while s.next(t) {
            defer { s.pop() }
            if s.type(at: -2) == .number, let i = s.integer(at: -2), i >= 1, i <= skipArray { continue }
            guard s.type(at: -2) == .string, let key = s.string(at: -2) else {
                throw LuaArgumentError("\(function): options must be named (got a \(s.type(at: -2).name) key)")
            }
            guard Self.knownOptions.contains(key) else {
                throw LuaArgumentError("\(function): unknown option '\(key)'")
            }
            try set(key, s, to: &o)
        }
    }

    private func set(_ key: String, _ s: LuaStack, to o: inout ExecOptions) throws(LuaArgumentError) {
        let t = s.type(at: -1)
        func bad(_ want: String) -> LuaArgumentError {
            LuaArgumentError("\(function): option '\(key)' must be \(want) (got \(t.name))")
        }
        switch key {
        case "cwd":
            guard t == .string else { throw bad("a string") }
            o.spec.cwd = s.string(at: -1)
        case "name":
            guard t == .string else { throw bad("a string") }
            o.spec.name = s.string(at: -1)
        case "stdin":
            if t == .boolean && function == "qw.spawn" {
                // true: a pipe that stays open for handle:write() until handle:close_input()
                o.spec.stdinOpen = s.bool(at: -1)
            } else {
                guard t == .string else { throw bad(function == "qw.spawn" ? "a string or true" : "a string") }
                o.spec.stdin = s.bytes(at: -1)
            }
        case "timeout", "kill_grace", "cpu_time":
            guard t == .number, let v = s.number(at: -1), v > 0, v.isFinite else { throw bad("a positive number of seconds") }
            if key == "timeout" { o.spec.timeout = v } else if key == "kill_grace" { o.spec.killGrace = v } else { o.spec.cpuTimeLimit = v }
        case "clear_env":
            guard t == .boolean else { throw bad("a boolean") }
            o.spec.clearEnv = s.bool(at: -1)
        case "check":
            guard t == .boolean || t == .nil else { throw bad("a boolean") }
            o.check = s.bool(at: -1)
        case "log":
            if t == .boolean {
                o.logToRunFolder = s.bool(at: -1)
            } else if t == .string {
                o.spec.logPath = s.string(at: -1)
            } else {
                throw bad("true or a file path")
            }
        case "env":
            guard t == .table else { throw bad("a table of NAME = value") }
            let env = s.absolute(-1)
            var pairs: [(String, String)] = []
            s.pushNil()
            while s.next(env) {
                defer { s.pop() }
                guard s.type(at: -2) == .string, let k = s.string(at: -2), !k.isEmpty, !k.contains("=") else {
                    throw LuaArgumentError("\(function): option 'env' must map variable names to values")
                }
                switch s.type(at: -1) {
                case .string, .number: pairs.append((k, s.string(at: -1)!))
                case .boolean: pairs.append((k, s.bool(at: -1) ? "1" : "0"))
                default:
                    throw LuaArgumentError("\(function): env.\(k) must be a string or a number (got \(s.type(at: -1).name))")
                }
            }
            o.spec.env = pairs.sorted { $0.0 < $1.0 }
        case "resources":
            guard t == .table else { throw bad("a table such as { memory = \"1G\", cpu = 2 }") }
            let (request, timeout) = try parseResourceRequest(s, at: -1, function: function)
            o.request = request
            o.admissionTimeout = timeout
        case "retry":
            break  // applied by stdlib's qw.exec around the primitive
        default:
            break
        }
    }
}

/// Reads a resource request table `{ slots = 1, cpu = 2, memory = "1G", timeout = 60 }`.
///
/// - Returns: the request and the admission timeout, if one was given.
func parseResourceRequest(_ s: LuaStack, at index: Int32, function: String) throws(LuaArgumentError) -> (ResourceRequest, Double?) {
    let t = s.absolute(index)
    var r = ResourceRequest()
    var timeout: Double?
    s.pushNil()
    while s.next(t) {
        defer { s.pop() }
        guard s.type(at: -2) == .string, let key = s.string(at: -2) else {
            throw LuaArgumentError("\(function): resource requests take named fields (slots, cpu, memory, timeout)")
        }
        let vt = s.type(at: -1)
        func bad(_ want: String) -> LuaArgumentError {
            LuaArgumentError("\(function): resources.\(key) must be \(want) (got \(vt == .string ? "'\(s.string(at: -1) ?? "")'" : vt.name))")
        }
        switch key {
        case "slots":
            guard vt == .number, let n = s.integer(at: -1), n >= 0 else { throw bad("a whole number >= 0") }
            r.slots = Int(n)
        case "cpu":
            guard vt == .number, let n = s.number(at: -1), n >= 0, n.isFinite else { throw bad("a number of cores >= 0") }
            r.cpu = n
        case "memory":
            if vt == .number, let n = s.number(at: -1), n >= 0, n.isFinite {
                r.memory = Int(n)
            } else if vt == .string, let text = s.string(at: -1), let n = parseByteSize(text) {
                r.memory = n
            } else {
                throw bad("bytes or a size such as \"512M\" or \"2G\"")
            }
        case "timeout":
            guard vt == .number, let n = s.number(at: -1), n > 0, n.isFinite else { throw bad("a positive number of seconds") }
            timeout = n
        default:
            throw LuaArgumentError("\(function): unknown resource '\(key)' (slots, cpu, memory, timeout)")
        }
    }
    return (r, timeout)
}
