import ArgumentParser
import Dispatch
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
        // a page that goes away mid-answer is the server's to notice, not a signal's
        signal(SIGPIPE, SIG_IGN)
        if let p = port, !(0...65535).contains(p) { throw ValidationError("--port must be between 0 and 65535 (got \(p))") }
        let store = try openStore(global)
        let runtime = try global.makeRuntime()
        guard let stdlib = runtime.stdlibPath, access(stdlib + "/dashboard/index.html", R_OK) == 0 else {
            writeAll(2, "qw dashboard: its pages are missing (stdlib/dashboard/index.html under \(runtime.stdlibPath ?? "?")); reinstall qw\n")
            throw ExitCode(1)
        }
        var bind = UInt16(port ?? 8642)
        if port == nil {
            // like a notebook server: the next port when the usual one is taken
            var tries = 0
            while !portFree(host, bind) && tries < 20 { bind += 1; tries += 1 }
        } else if bind != 0 && !portFree(host, bind) {
            writeAll(2, "qw dashboard: cannot listen on \(host):\(bind): it is in use or not an address of this machine (try another --port)\n")
            throw ExitCode(1)
        }
        var cwd = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let project = getcwd(&cwd, cwd.count) != nil ? cwd.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : "."
        let model = DashboardModel(store: store, runtime: runtime, project: project)
        let feed = LiveFeed(model: model)
        do {
            try feed.start()
        } catch {
            writeAll(2, "qw dashboard: \(error)\n")
            throw ExitCode(1)
        }
        let server: DashboardServer
        do {
            server = try DashboardServer(model: model, feed: feed, host: host, port: bind, assets: stdlib + "/dashboard")
        } catch {
            writeAll(2, "qw dashboard: cannot listen on \(host): \(error)\n")
            throw ExitCode(1)
        }
        let shown = host.contains(":") ? "[\(host)]" : host
        let openIt = open
        let storePath = store.path
        let host = self.host
        Task.detached {
            do {
                try await server.run { bound in
                    let url = "http://\(shown == "0.0.0.0" ? "127.0.0.1" : shown):\(bound)/?token=\(server.token)"
                    writeAll(1, "qw dashboard: \(url)\n")
                    writeAll(1, "reading \(storePath); Ctrl-C stops\n")
                    if openIt { openInBrowser(url) }
                }
            } catch {
                writeAll(2, "qw dashboard: cannot serve on \(host):\(bind): \(error)\n")
                Glibc.exit(1)
            }
        }
        // Ctrl-C and SIGTERM end the streams and the process, cleanly
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .main)
            source.setEventHandler {
                feed.stop()
                Glibc.exit(0)
            }
            source.resume()
            Self.signalSources.append(source)
        }
        dispatchMain()
    }

    nonisolated(unsafe) static var signalSources: [any DispatchSourceSignal] = []
}

/// Whether a TCP socket can bind `host:port` now.
private func portFree(_ host: String, _ port: UInt16) -> Bool {
    let six = host.contains(":")
    let fd = socket(six ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var yes: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
    if six {
        var a = sockaddr_in6()
        a.sin6_family = sa_family_t(AF_INET6)
        a.sin6_port = port.bigEndian
        guard inet_pton(AF_INET6, host, &a.sin6_addr) == 1 else { return false }
        return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } } == 0
    }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = port.bigEndian
    guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &a.sin_addr) == 1 else { return false }
    return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}

/// Starts the desktop's browser on `url`, not waiting for it.
private func openInBrowser(_ url: String) {
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("xdg-open"), strdup(url), nil]
    defer { for p in argv { free(p) } }
    if posix_spawnp(&pid, "xdg-open", nil, nil, argv, environ) != 0 {
        writeAll(2, "qw dashboard: could not run xdg-open; open \(url) yourself\n")
    }
}
