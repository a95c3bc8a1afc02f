import ArgumentParser
import QuantumwalaLua

/// `qw repl`: the interactive shell.
struct Repl: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start the interactive Lua shell.")

    @OptionGroup var global: GlobalOptions

    mutating func run() throws {
        try ReplSession(runtime: try global.makeRuntime()).run()
    }
}
