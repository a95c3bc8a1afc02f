import ArgumentParser
import QuantumwalaLua

/// `qw init [--force] [--dry-run] [--check]`: installs the agent catalogue, the slash
/// commands, the steering templates and the hook settings into the project
/// (stdlib/qw/setup.lua).
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Install .claude/agents, .claude/commands, the steering templates and the hook settings into this project.",
        discussion: """
            A file qw installed and nobody changed is brought up to date; a file someone changed, \
            or that qw did not install, is kept unless --force. .qw/installed.json notes what qw \
            installed. The hook registrations (qw hook) are merged into .claude/settings.json: only \
            the events where no hook runs qw hook get one, everything else is kept, and the old file \
            is kept as .claude/settings.json.bak. --check reports what is wrong in the agents, the \
            commands and the settings files as FILE:LINE: MESSAGE.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Replace files that were changed since qw installed them, or that qw did not install.")
    var force = false

    @Flag(name: .customLong("dry-run"), help: "Say what would be written, and write nothing.")
    var dryRun = false

    @Flag(help: "Check the project's agents, commands and settings files instead of installing.")
    var check = false

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        try finish(runtime.runChunk(
            "os.exit(qw.setup.report{ force = \(force), dry_run = \(dryRun), check = \(check) })", name: "=(qw init)"))
    }
}
