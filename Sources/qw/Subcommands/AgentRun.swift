import ArgumentParser
import QuantumwalaLua

/// `qw agent run AGENT PROMPT`: one agent, headless, through `qw.agent.run`.
struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run coding agents.",
        subcommands: [AgentRun.self]
    )
}

struct AgentRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one agent headless and print its answer (its cost and tokens on stderr).",
        discussion: "Exits 0 when the agent's result says it succeeded, 1 otherwise, whatever the CLI's own exit code."
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The agent's name (see qw agents), or - for none.")
    var agent: String

    @Argument(help: "The prompt.")
    var prompt: String

    @Option(help: "The model (an alias or a full id).") var model: String?
    @Option(name: .customLong("max-turns"), help: "Stop after this many model calls.") var maxTurns: Int?
    @Option(name: .customLong("budget-usd"), help: "Stop once the run has cost this much.") var budgetUSD: Double?
    @Option(help: "Seconds before the run is stopped.") var timeout: Double?
    @Option(name: .customLong("permission-mode"), help: "acceptEdits, plan, dontAsk, ...") var permissionMode: String?
    @Option(help: "The working directory of the run.") var cwd: String?

    @Flag(help: "Print the whole result as JSON.") var json = false

    mutating func run() throws {
        let request = AgentRunRequest(agent: agent, prompt: prompt, model: model, maxTurns: maxTurns, budgetUSD: budgetUSD,
                                      timeout: timeout, permissionMode: permissionMode, cwd: cwd, json: json)
        try request.run(global.makeRuntime(openStoreAhead: true))
    }
}

/// What `qw agent run` was asked, whether the argument parser or the fast path (``Qw/fastPath()``)
/// read the command line.
struct AgentRunRequest {
    var agent = "-", prompt = ""
    var model: String?, maxTurns: Int?, budgetUSD: Double?, timeout: Double?, permissionMode: String?, cwd: String?
    var json = false

    /// The options that take a value, as the command line names them.
    static let valueOptions = ["--model", "--max-turns", "--budget-usd", "--timeout", "--permission-mode", "--cwd"]

    /// Sets the option `name` (one of ``valueOptions``) from its text; false when the text is
    /// not a value of its type.
    mutating func set(_ name: String, _ value: String) -> Bool {
        switch name {
        case "--model": model = value
        case "--max-turns": guard let n = Int(value) else { return false }; maxTurns = n
        case "--budget-usd": guard let d = Double(value) else { return false }; budgetUSD = d
        case "--timeout": guard let d = Double(value) else { return false }; timeout = d
        case "--permission-mode": permissionMode = value
        case "--cwd": cwd = value
        default: return false
        }
        return true
    }

    func run(_ runtime: Runtime) throws {
        // the values reach Lua as the chunk's `...` (name, value, ...), never as code
        var args = ["prompt", prompt]
        if agent != "-" { args += ["agent", agent] }
        for (name, value) in [("model", model), ("permission_mode", permissionMode), ("cwd", cwd),
                              ("max_turns", maxTurns.map(String.init)), ("budget_usd", budgetUSD.map { String($0) }),
                              ("timeout", timeout.map { String($0) })] {
            if let value { args += [name, value] }
        }
        if json { args += ["json", "1"] }
        let code = """
            local a, given = {}, { ... }
            for i = 1, #given, 2 do a[given[i]] = given[i + 1] end
            local r = qw.agent.run{ agent = a.agent, prompt = a.prompt, model = a.model, permission_mode = a.permission_mode,
              cwd = a.cwd, max_turns = tonumber(a.max_turns), budget_usd = tonumber(a.budget_usd), timeout = tonumber(a.timeout) }
            if a.json then
              local out = {}
              for k, v in pairs(r) do if k ~= "stdout" then out[k] = v end end
              print(qw.json.encode(out))
            else
              if r.text and r.text ~= "" then print(r.text) end
              io.stderr:write(("%s: %s, $%.4f, %s in / %s out tokens, %s turns, session %s\\n"):format(
                r.ok and "ok" or "failed", r.ok and (r.terminal_reason or "done") or tostring(r.error), r.cost_usd or 0,
                tostring(r.input_tokens or 0), tostring(r.output_tokens or 0), tostring(r.turns or 0), tostring(r.session_id or "-")))
            end
            os.exit(r.ok and 0 or 1)
            """
        try finish(runtime.runChunk(code, name: "=(qw agent run)", args: args))
    }
}
