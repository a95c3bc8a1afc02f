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

    @Option(name: .customLong("state"), help: "The state store (default: $QW_STATE, else .qw/state.db).")
    var state: String?

    @Option(name: .customLong("policy"), help: "The policy script run at start (default: .qw/policy.lua when it exists).")
    var policy: String?

    /// A runtime set up from these options, or a message naming what is wrong.
    func makeRuntime() throws -> Runtime {
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
        // what it runs shows in `qw resources` from any terminal
        if let board = WorkBoard() { runtime.publishWork(on: board) }
        return runtime
    }
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
        subcommands: [Run.self, Repl.self, Status.self, Resume.self, Resources.self, State.self]
    )

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

