import ArgumentParser
import QuantumwalaLua

/// `qw run FILE [ARGS...]`: runs a script non-interactively.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Lua script.",
        discussion: "Exits 0 when the script finishes, 1 on a Lua error; os.exit(n) sets the code."
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The script to run.")
    var file: String

    @Argument(parsing: .captureForPassthrough, help: "Arguments for the script (qw.args, arg, ...).")
    var args: [String] = []

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        try finish(runtime.runFile(file, args: args))
    }
}
