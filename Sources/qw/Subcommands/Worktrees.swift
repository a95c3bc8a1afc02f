import ArgumentParser
import QuantumwalaLua

/// `qw worktrees [--gc [--dry-run]]`: qw's git worktrees (branches qw/...) and what each
/// holds; `--gc` removes those whose branch is merged or that hold nothing (stdlib/qw/git.lua).
struct Worktrees: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List qw's git worktrees; --gc removes the merged and the empty ones, never unmerged work.",
        discussion: """
            A worktree goes when its branch is merged into the branch it was made from, or when it \
            has no commits and no changes. One with uncommitted changes, commits not merged, or a \
            lock is kept, and the reason is printed.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Remove the worktrees (and branches) that hold nothing unmerged.")
    var gc = false

    @Flag(name: .customLong("dry-run"), help: "With --gc: say what would be removed, and remove nothing.")
    var dryRun = false

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        try finish(runtime.runChunk("os.exit(qw.git.report{ gc = \(gc), dry_run = \(dryRun) })", name: "=(qw worktrees)"))
    }
}
