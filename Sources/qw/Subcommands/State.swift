import ArgumentParser
import LuaHost
import QuantumwalaCore
import QuantumwalaLua

/// `qw state`: the store's location and size, its keys, and their values.
struct State: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect the durable state store.",
        discussion: """
            qw state              where the store is, how many keys and events it holds
            qw state keys [PREFIX] the keys (starting with PREFIX)
            qw state get KEY      a key's value, as JSON
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "keys, get, or nothing for statistics.")
    var action: String?

    @Argument(help: "The prefix (keys) or the key (get).")
    var name: String?

    mutating func run() throws {
        let runtime = try global.makeRuntime()
        let code: String
        switch action {
        case nil, "stats":
            code = ""
        case "keys":
            code = "for _, k in ipairs(qw.state.keys(...)) do print(k) end"
        case "get":
            guard name != nil else { throw ValidationError("qw state get needs a KEY") }
            code = """
                local v = qw.state.get(...)
                if v == nil then io.stderr:write("no such key: ", (...), "\\n"); os.exit(1) end
                print(qw.json.encode(v, { pretty = true }))
                """
        default:
            throw ValidationError("unknown action '\(action!)' (keys, get, or none)")
        }
        if action == nil || action == "stats" {
            try finish(runtime.printStateStats())
            return
        }
        try runtime.lua.load(Array(code.utf8), name: "=qw state")
        try finish(runtime.runFunctionOnTop(args: name.map { [$0] } ?? []))
    }
}
