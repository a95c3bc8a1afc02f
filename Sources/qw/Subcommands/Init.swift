import ArgumentParser
import QuantumwalaLua

/// `qw init [--force] [--dry-run] [--check]`: installs the agent catalogue, the slash
/// commands and the steering templates into the project (stdlib/qw/setup.lua).
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Install .claude/agents, .claude/commands and the steering templates into this project.",
        discussion: """
            A file qw installed and nobody changed is brought up to date; a file someone changed, \
            or that qw did not install, is kept unless --force. .qw/installed.json notes what qw \
            installed. --check reports what is wrong in the agents and commands as FILE:LINE: MESSAGE.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Replace files that were changed since qw installed them, or that qw did not install.")
    var force = false

    @Flag(name: .customLong("dry-run"), help: "Say what would be written, and write nothing.")
    var dryRun = false

    @Flag(help: "Check the project's agents and commands instead of installing.")
    var check = false

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        try finish(runtime.runChunk(
            "os.exit(qw.setup.report{ force = \(force), dry_run = \(dryRun), check = \(check) })", name: "=(qw init)"))
    }
}
