import Glibc
import QuantumwalaCore
import QuantumwalaDashboard

// The dashboard's server, which `qw dashboard` runs after checking its arguments:
//   qw-dashboard --state PATH [--host ADDR] [--port N] [--open] [--policy FILE]
var options = DashboardOptions(state: ".qw/state.db")
var args = CommandLine.arguments.dropFirst()
@MainActor func value(_ flag: String) -> String {
    guard let v = args.popFirst() else {
        writeAll(2, "qw-dashboard: \(flag) needs a value\n")
        exit(2)
    }
    return v
}
while let a = args.popFirst() {
    switch a {
    case "--state": options.state = value(a)
    case "--host": options.host = value(a)
    case "--port":
        let v = value(a)
        guard let p = Int(v), (0...65535).contains(p) else {
            writeAll(2, "qw-dashboard: --port must be between 0 and 65535 (got \(v))\n")
            exit(2)
        }
        options.port = p
    case "--open": options.open = true
    case "--policy": options.policy = value(a)
    default:
        writeAll(2, "qw-dashboard: unknown argument \(a) (run it as qw dashboard)\n")
        exit(2)
    }
}
exit(serveDashboard(options))
