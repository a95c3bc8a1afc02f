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
            new NAME [DESCRIPTION]: make .claude/specs/NAME from the templates. \
            status NAME: its documents and their approvals, task counts, what can start now. \
            run NAME [DESCRIPTION]: the phases (steering, requirements, design, tasks, each with its \
            validation and approval, then implementation in worktrees, testing, review) as one \
            resumable workflow. \
            approve NAME PHASE: approve the requirements, design or tasks document as it is now \
            (a durable record: who, when, the document's hash; an edit needs approval again). \
            mark NAME TASK STATE: set a task's checkbox (only that character changes). \
            tasks NAME: the tasks of NAME's tasks.md, with ids, states, parents and dependencies. \
            lint NAME: duplicate ids, unknown dependencies, cycles, references to requirements \
            that do not exist, done parents with open subtasks; exits 1 when there is one. \
            plan NAME: the waves of tasks that can run at once, and why each task is in its wave. \
            context NAME TASK: the prompt an agent gets for the task (--stats: how much smaller \
            than all the documents, and what was kept). \
            NAME may also be a path to a tasks.md.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "list, new, status, approve, run, tasks, lint, plan, context or mark.")
    var action: String

    @Argument(help: "The spec's name (or a path to its tasks.md).")
    var name: String?

    @Argument(help: "For context and mark: the task's id (for new: the feature's description; for approve: the phase).")
    var task: String?

    @Argument(help: "For mark: the state (x done, - in progress, open).")
    var state: String?

    @Flag(help: "For context: sizes and tokens against all the documents, and what was kept.")
    var stats = false

    @Option(help: "For approve: who approves (default $QW_USER, else $USER).")
    var by: String?

    @Option(help: "For run: the first phase to run.")
    var from: String?

    @Option(name: .customLong("until"), help: "For run: the last phase to run.")
    var until: String?

    @Option(help: "For run: auto (approve each document), ask (wait for qw spec approve) or file (wait for NAME/PHASE.approved).")
    var approve: String?

    @Option(help: "For run: the project's check (a shell command), run in each task's worktree and after each merge.")
    var check: String?

    @Flag(help: "Print JSON.")
    var json = false

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        func quoted(_ s: String?) -> String { s.map { "[==[" + $0 + "]==]" } ?? "nil" }
        try finish(runtime.runChunk(
            "os.exit(qw.spec.report{ action = \(quoted(action)), name = \(quoted(name)), task = \(quoted(task)), state = \(quoted(state)), by = \(quoted(by)), from = \(quoted(from)), [\"until\"] = \(quoted(until)), "
                + "approve = \(quoted(approve)), check = \(quoted(check)), "
                + "json = \(json), stats = \(stats) })",
            name: "=(qw spec)"))
    }
}
