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
        let runtime = try global.makeRuntime()
        func lua(_ s: String?) -> String { s.map { "[==[" + $0 + "]==]" } ?? "nil" }
        func num(_ d: Double?) -> String { d.map { String($0) } ?? "nil" }
        let code = """
            local r = qw.agent.run{ agent = \(agent == "-" ? "nil" : lua(agent)), prompt = \(lua(prompt)), model = \(lua(model)),
              max_turns = \(maxTurns.map(String.init) ?? "nil"), budget_usd = \(num(budgetUSD)), timeout = \(num(timeout)),
              permission_mode = \(lua(permissionMode)), cwd = \(lua(cwd)) }
            if \(json) then
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
        try finish(runtime.runChunk(code, name: "=(qw agent run)"))
    }
}
