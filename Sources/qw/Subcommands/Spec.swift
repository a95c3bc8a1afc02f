import ArgumentParser
import QuantumwalaLua

/// `qw spec list|tasks|lint|plan [NAME] [--json]`: the specs of the project, the tasks of one
/// as qw reads them, what is wrong in them (as FILE:LINE: MESSAGE), and the waves they run in
/// (stdlib/qw/spec.lua).
struct Spec: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Specs: list them, show a spec's tasks, lint them, plan them into waves.",
        discussion: """
            list: the specs in .claude/specs, specs/ (spec-kit) and .kiro/specs. \
            tasks NAME: the tasks of NAME's tasks.md, with ids, states, parents and dependencies. \
            lint NAME: duplicate ids, unknown dependencies, cycles, references to requirements \
            that do not exist, done parents with open subtasks; exits 1 when there is one. \
            plan NAME: the waves of tasks that can run at once, and why each task is in its wave. \
            NAME may also be a path to a tasks.md.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "list, tasks, lint or plan.")
    var action: String

    @Argument(help: "The spec's name (or a path to its tasks.md).")
    var name: String?

    @Flag(help: "Print JSON.")
    var json = false

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        let nameArg = name.map { "[==[" + $0 + "]==]" } ?? "nil"
        try finish(runtime.runChunk(
            "os.exit(qw.spec.report{ action = [==[\(action)]==], name = \(nameArg), json = \(json) })",
            name: "=(qw spec)"))
    }
}
