import ArgumentParser
import Glibc
import QuantumwalaCore
import QuantumwalaLua

/// `qw hook [EVENT]`: the entry point of Claude Code hooks (stdlib/qw/hooks.lua).
struct Hook: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Claude Code hooks: record the event read on stdin and answer with the project's policy.",
        discussion: """
            Register it in .claude/settings.json (qw init does) as {"type": "command", "command": "qw hook"}. \
            The event's name comes from the payload's hook_event_name when EVENT is not given. The policy \
            is qw.hooks.on(...) in .qw/hooks.lua or .qw/policy.lua. It never fails the agent by accident: bad \
            input, a locked store or a broken policy give exit 0 and one line on stderr, and the event is \
            kept beside the store until a later hook imports it.
            """
    )

    @Option(name: .customLong("state"), help: "The state store (default: $QW_STATE, else .qw/state.db).")
    var state: String?

    @Argument(help: "The hook event (PreToolUse, Stop, ...); default: the payload's hook_event_name.")
    var event: String?

    mutating func run() throws {
        let status = Hook.handle(event: event, state: state)
        if status != 0 { throw ExitCode(status) }
    }

    /// How long a hook's write waits for another process's lock before the event is kept
    /// aside: 1 s, or `QW_HOOK_WAIT` seconds.
    static var storeBusyWait: Double {
        getenv("QW_HOOK_WAIT").flatMap { Double(String(cString: $0)) }.map { max(0, $0) } ?? 1.0
    }

    /// Handles one hook call; the exit status (0 unless the policy answers with exit 2).
    static func handle(event: String?, state: String?) -> Int32 {
        let started = monotonicWallClock()
        let input = readAllStdin()
        // the project qw started the run from: its policy files and its store
        if let p = getenv("QW_PROJECT") { _ = chdir(p) }
        var o = RuntimeOptions()
        o.statePath = state
        o.storeBusyWait = storeBusyWait
        let runtime: Runtime
        do {
            runtime = try Runtime(options: o)
        } catch {
            writeAll(2, "qw hook: \(error); the event is not recorded\n")
            return 0
        }
        runtime.setArguments(script: nil, [input, event ?? "", String(started)])
        let outcome = runtime.runChunk("""
            local a = qw.args
            local out, err, code = qw.hooks.main(a[1], a[2] ~= "" and a[2] or nil, tonumber(a[3]))
            io.stdout:write(out)
            io.stderr:write(err)
            io.stdout:flush()
            os.exit(code)
            """, name: "=(qw hook)")
        if case .failed(let e) = outcome {
            // qw.hooks.main never raises; this is a broken stdlib or an interrupt
            writeAll(2, "qw hook: \(e.message.split(separator: "\n").first ?? ""); the event is not recorded\n")
        }
        return 0
    }
}
