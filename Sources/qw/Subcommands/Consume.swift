import ArgumentParser
import QuantumwalaLua

/// `qw consume [--continuous] [--once] [--dry-run] [--json]`: runs queued suggestions
/// (stdlib/qw/suggestions.lua).
struct Consume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run queued command suggestions: allow-listed, validated, at most once across consumers.",
        discussion: """
            Suggestions come from the hooks' phase policy, qw.suggest{...} and .claude/next_command.txt. \
            A slash command runs as an agent run through the CLI, a qw subcommand as a process; never \
            through a shell. One that fails is retried with backoff and parked after \
            qw.suggestions.max_attempts. What the allow-list (qw.suggestions.allowed) refuses is recorded, \
            never run.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Keep running, and wait for new suggestions (stop with Ctrl-C or SIGTERM).")
    var continuous = false

    @Flag(help: "Run what is due now, then stop (the default).")
    var once = false

    @Flag(name: .customLong("dry-run"), help: "Say what would run or be refused, and run nothing.")
    var dryRun = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        try finish(runtime.runChunk(
            "os.exit(qw.suggestions.report{ continuous = \(continuous), once = \(once), dry_run = \(dryRun), json = \(json) })",
            name: "=(qw consume)"))
    }
}
