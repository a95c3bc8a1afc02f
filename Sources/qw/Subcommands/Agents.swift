import ArgumentParser
import QuantumwalaLua

/// `qw agents [--check] [--json]`: the agent definitions of the project and of
/// `~/.claude/agents`, and with `--check` what is wrong in them (stdlib/qw/agents.lua).
struct Agents: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the agents in .claude/agents (and ~/.claude/agents); --check reports what is wrong.",
        discussion: "Problems print as FILE:LINE: MESSAGE; --check exits 1 when there is one."
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Report problems (missing keys, bad YAML, unknown tools and models...) instead of listing.")
    var check = false

    @Flag(help: "Print JSON.")
    var json = false

    @Option(help: "The project's agents folder (default .claude/agents).")
    var dir: String?

    @Flag(name: .customLong("no-user"), help: "Leave ~/.claude/agents out.")
    var noUser = false

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        let dirArg = dir.map { "[==[" + $0 + "]==]" } ?? "nil"
        try finish(runtime.runChunk(
            "os.exit(qw.agents.report{ check = \(check), json = \(json), dir = \(dirArg), user = \(!noUser) })",
            name: "=(qw agents)"))
    }
}
