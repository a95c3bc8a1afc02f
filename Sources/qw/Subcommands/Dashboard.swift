import ArgumentParser
import Glibc
import QuantumwalaCore
import QuantumwalaLua

/// `qw dashboard [--port N] [--host ADDR] [--open]`: the live dashboard in a browser.
struct Dashboard: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a live dashboard of the store's workflows, specs, agents, cost and events.",
        discussion: """
            Reads the store every qw process of the project writes (.qw/state.db, --state or QW_STATE) \
            and shows changes as they happen. It binds 127.0.0.1 unless --host says otherwise, and prints \
            an address with a token: reading from this machine needs no token; approving needs it, and so \
            does everything when the dashboard listens beyond loopback. The API is in docs/dashboard.md.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "The port (0: any free one). Without it, the first free port from 8642.")
    var port: Int?

    @Option(help: "The address to listen on: 127.0.0.1 (the default), ::1, or 0.0.0.0 for every interface.")
    var host = "127.0.0.1"

    @Flag(help: "Open the dashboard in the browser (xdg-open).")
    var open = false

    mutating func run() throws {
        if let p = port, !(0...65535).contains(p) { throw ValidationError("--port must be between 0 and 65535 (got \(p))") }
        // the server is a binary of its own, next to this one (see Package.swift)
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard realpath("/proc/self/exe", &buf) != nil else { throw ExitCode(1) }
        var exe = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        exe = String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]) + "/qw-dashboard"
        guard access(exe, X_OK) == 0 else {
            writeAll(2, "qw dashboard: \(exe) is missing; build it (swift build) or reinstall qw (scripts/install)\n")
            throw ExitCode(1)
        }
        let state = global.state ?? getenv("QW_STATE").map { String(cString: $0) } ?? ".qw/state.db"
        var argv = [exe, "--state", state, "--host", host]
        if let port { argv += ["--port", String(port)] }
        if open { argv.append("--open") }
        if let p = global.policy { argv += ["--policy", p] }
        let c = argv.map { strdup($0) } + [nil]
        execv(exe, c)
        writeAll(2, "qw dashboard: cannot run \(exe): \(String(cString: strerror(errno)))\n")
        throw ExitCode(1)
    }
}
