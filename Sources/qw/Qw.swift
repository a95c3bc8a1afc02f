import ArgumentParser
import Glibc
import LuaHost
import QuantumwalaCore
import QuantumwalaLua

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "Print debug logs (qw.log.debug).")
    var verbose = false

    @Option(name: .customLong("time-limit"), help: "Stop the run after this many seconds (runaway scripts, hung commands).")
    var timeLimit: Double?

    @Option(name: .customLong("lua-memory"), help: "Most memory the Lua heap may use, e.g. 512M or 2G (0: no limit).")
    var luaMemory: String = "1G"

    @Option(name: .customLong("max-concurrent"), help: "Most processes running at once (default 8; wins over .qw/policy.lua).")
    var maxConcurrent: Int?

    @Option(name: .customLong("max-agents"), help: "Most agent runs at once, shared by every qw of the project (default 3).")
    var maxAgents: Int?

    @Option(name: .customLong("state"), help: "The state store (default: $QW_STATE, else .qw/state.db).")
    var state: String?

    @Option(name: .customLong("policy"), help: "The policy script run at start (default: .qw/policy.lua when it exists).")
    var policy: String?

    /// A runtime set up from these options, or a message naming what is wrong.
    func makeRuntime(openStoreAhead: Bool = false) throws -> Runtime {
        try makeQwRuntime(verbose: verbose, timeLimit: timeLimit, luaMemory: luaMemory, maxConcurrent: maxConcurrent,
                          maxAgents: maxAgents, state: state, policy: policy, openStoreAhead: openStoreAhead)
    }
}

/// The global options as the fast path reads them (see ``Qw/fastPath()``).
struct FastOptions {
    var verbose = false
    var timeLimit: Double?
    var luaMemory = "1G"
    var maxConcurrent: Int?
    var maxAgents: Int?
    var state: String?
    var policy: String?

    /// Makes the runtime and runs `body` with it; the exit status.
    func run(openStoreAhead: Bool = false, _ body: (Runtime) throws -> Void) -> Int32 {
        do {
            let runtime = try makeQwRuntime(verbose: verbose, timeLimit: timeLimit, luaMemory: luaMemory,
                                            maxConcurrent: maxConcurrent, maxAgents: maxAgents, state: state, policy: policy,
                                            openStoreAhead: openStoreAhead)
            try body(runtime)
            return 0
        } catch let e as ExitCode {
            return e.rawValue
        } catch let e as ValidationError {
            writeAll(2, "Error: \(e.message)\n")
            return ExitCode.validationFailure.rawValue
        } catch {
            writeAll(2, "qw: \(error)\n")
            return 1
        }
    }
}

/// A runtime with the global options' values; `openStoreAhead` for a command that is sure to
/// use the store soon: it is opened on a thread while the runtime starts (see
/// ``StateStore/Opening``).
func makeQwRuntime(verbose: Bool = false, timeLimit: Double? = nil, luaMemory: String = "1G", maxConcurrent: Int? = nil,
                   maxAgents: Int? = nil, state: String? = nil, policy: String? = nil, openStoreAhead: Bool = false) throws -> Runtime {
    var o = RuntimeOptions()
    o.verbose = verbose
    if let t = timeLimit {
        guard t > 0 else { throw ValidationError("--time-limit must be a positive number of seconds") }
        o.timeLimit = t
    }
    guard let bytes = parseByteSize(luaMemory) else {
        throw ValidationError("--lua-memory: '\(luaMemory)' is not a size (try 512M or 2G)")
    }
    o.memoryLimit = bytes
    o.statePath = state
    if let n = maxConcurrent {
        guard n >= 1 else { throw ValidationError("--max-concurrent must be at least 1") }
    }
    if let n = maxAgents {
        guard n >= 1 else { throw ValidationError("--max-agents must be at least 1") }
    }
    if openStoreAhead { o.storeOpening = StateStore.Opening(path: Runtime.statePath(state), busyWait: o.storeBusyWait) }
    let runtime: Runtime
    do {
        runtime = try Runtime(options: o)
    } catch {
        writeAll(2, "qw: \(error)\n")
        throw ExitCode(1)
    }
    // The project's policy first, then the command line, which is more specific.
    let policyFile = policy ?? (access(Runtime.defaultPolicyPath, R_OK) == 0 ? Runtime.defaultPolicyPath : nil)
    if let policyFile {
        try finish(runtime.runPolicy(policyFile))
    }
    if let n = maxConcurrent { runtime.setMaxConcurrent(n) }
    if let n = maxAgents { try finish(runtime.runChunk("qw.limits{ max_agents = \(n) }", name: "=(--max-agents)")) }
    // what it runs shows in `qw resources` from any terminal
    runtime.publishWork(onBoard: { WorkBoard() })
    return runtime
}

/// Reports a run's outcome the way `lua` does and turns it into an exit status.
func finish(_ outcome: RunOutcome) throws {
    switch outcome {
    case .ok:
        return
    case .failed(let e):
        let color = useColor(fd: 2)
        let head = color ? "\u{1B}[31mqw:\u{1B}[0m " : "qw: "
        writeAll(2, head + e.message + "\n" + (e.traceback.map { $0 + "\n" } ?? ""))
        throw ExitCode(1)
    }
}

@main
struct Qw: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qw",
        abstract: "Quantumwala: orchestrate processes and coding agents from Lua.",
        discussion: "With no command: an interactive Lua shell on a terminal, or the script read from standard input otherwise. `qw run FILE` runs a script; `qw -e CODE` runs a chunk.",
        version: quantumwalaVersion,
        subcommands: [Run.self, Repl.self, Status.self, Resume.self, Resources.self, State.self, Agents.self, AgentCommand.self, Cost.self, Spec.self, Init.self, Worktrees.self, Hook.self, Consume.self, Dashboard.self]
    )

    /// The commands that most start-ups are (`qw -e CODE`, `qw run FILE ARGS...`, `qw hook`,
    /// `qw agent run`, `qw --version`) skip the argument parser, whose type lookups cost more than the rest of
    /// the start; everything else, errors and help included, goes through it.
    static func main() {
        if let status = fastPath() { Glibc.exit(status) }
        main(nil)
    }

    /// Runs the command line when it is one of the common forms: `[OPTIONS] -e CODE...`,
    /// `[OPTIONS] run [OPTIONS] FILE ARGS...` (everything after FILE is the script's),
    /// `[OPTIONS] hook [EVENT]`, `[OPTIONS] agent run [OPTIONS] AGENT PROMPT` (its own options
    /// and the global ones, in any order) and `--version`, where OPTIONS are the global ones. Returns nil
    /// for anything else (other commands, help, unknown options), which the argument parser
    /// then handles. Reads argv
    /// as C strings: the first generic code to run costs type lookups that are a noticeable
    /// part of a start.
    static func fastPath() -> Int32? {
        let argc = Int(CommandLine.argc), argv = CommandLine.unsafeArgv
        func arg(_ i: Int) -> String { String(cString: argv[i]!) }
        func isArg(_ i: Int, _ s: StaticString) -> Bool { strcmp(argv[i]!, UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)) == 0 }
        guard argc >= 2 else { return nil }
        if argc == 2 && isArg(1, "--version") {
            writeAll(1, quantumwalaVersion + "\n")
            return 0
        }
        var o = FastOptions()
        var i = 1
        // options: --name VALUE, --name=VALUE, -v / --verbose; false for anything else
        func option() -> Bool? {
            let a = arg(i)
            guard a.hasPrefix("--") || a == "-v" else { return false }
            if a == "-v" || a == "--verbose" {
                o.verbose = true
                i += 1
                return true
            }
            var name = a, value: String?
            if let eq = a.firstIndex(of: "=") {
                name = String(a[..<eq])
                value = String(a[a.index(after: eq)...])
            }
            guard ["--time-limit", "--lua-memory", "--max-concurrent", "--max-agents", "--state", "--policy"].contains(name) else { return nil }
            if value == nil {
                guard i + 1 < argc else { return nil }
                value = arg(i + 1)
                i += 1
            }
            i += 1
            switch name {
            case "--time-limit": guard let t = Double(value!) else { return nil }; o.timeLimit = t
            case "--lua-memory": o.luaMemory = value!
            case "--max-concurrent": guard let n = Int(value!) else { return nil }; o.maxConcurrent = n
            case "--max-agents": guard let n = Int(value!) else { return nil }; o.maxAgents = n
            case "--state": o.state = value
            default: o.policy = value
            }
            return true
        }
        func options() -> Bool {
            while i < argc {
                guard let took = option() else { return false }
                if !took { break }
            }
            return true
        }
        guard options(), i < argc else { return nil }
        if isArg(i, "-e") {
            var chunks: [String] = []
            while i + 1 < argc && isArg(i, "-e") {
                chunks.append(arg(i + 1))
                i += 2
            }
            guard i == argc else { return nil }
            return o.run { runtime in
                runtime.setArguments(script: nil, [])
                for chunk in chunks { try finish(runtime.runChunk(chunk, name: "=(command line)")) }
            }
        }
        // `qw hook [EVENT]` runs on every tool call of every agent: no parser
        if isArg(i, "hook") && argc - i <= 2 && (i + 1 == argc || argv[i + 1]!.pointee != UInt8(ascii: "-")) {
            return Hook.handle(event: i + 1 < argc ? arg(i + 1) : nil, state: o.state)
        }
        // `qw agent run AGENT PROMPT`: a workflow of agents starts one per run
        if isArg(i, "agent") && i + 1 < argc && isArg(i + 1, "run") {
            i += 2
            var request = AgentRunRequest(), positionals: [String] = []
            while i < argc {
                let a = arg(i)
                if a == "--json" {
                    request.json = true
                    i += 1
                } else if a.hasPrefix("--") {
                    let eq = a.firstIndex(of: "=")
                    let name = eq.map { String(a[..<$0]) } ?? a
                    if AgentRunRequest.valueOptions.contains(name) {
                        // a value that looks like an option is the parser's to judge
                        let value = eq.map { String(a[a.index(after: $0)...]) } ?? (i + 1 < argc ? arg(i + 1) : "-")
                        guard eq != nil || !value.hasPrefix("-"), request.set(name, value) else { return nil }
                        i += eq == nil ? 2 : 1
                    } else {
                        guard option() == true else { return nil }
                    }
                } else if a == "-v" {
                    _ = option()
                } else if a.hasPrefix("-") && a != "-" {
                    return nil
                } else {
                    positionals.append(a)
                    i += 1
                }
            }
            guard positionals.count == 2 else { return nil }
            request.agent = positionals[0]
            request.prompt = positionals[1]
            return o.run(openStoreAhead: true) { runtime in try request.run(runtime) }
        }
        guard isArg(i, "run") else { return nil }
        i += 1
        guard options(), i < argc, argv[i]!.pointee != UInt8(ascii: "-") else { return nil }
        let file = arg(i)
        let args = (i + 1..<argc).map(arg)
        return o.run { runtime in try finish(runtime.runFile(file, args: args)) }
    }

    @OptionGroup var global: GlobalOptions

    @Option(name: .customShort("e"), help: ArgumentHelp("Run a chunk of Lua code (may be repeated).", valueName: "code"))
    var code: [String] = []

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        if !code.isEmpty {
            runtime.setArguments(script: nil, [])
            for chunk in code {
                try finish(runtime.runChunk(chunk, name: "=(command line)"))
            }
            return
        }
        if isatty(0) == 1 {
            try ReplSession(runtime: runtime).run()
            return
        }
        // A script on standard input, as `lua -` reads it.
        let source = readAllStdin()
        runtime.setArguments(script: "-", [])
        try finish(runtime.runChunk(source, name: "=stdin"))
    }
}

func readAllStdin() -> String {
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes.append(contentsOf: buf[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

