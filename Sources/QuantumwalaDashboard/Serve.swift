import Dispatch
import Glibc
import QuantumwalaCore
import QuantumwalaLua

/// How `qw dashboard` was asked to serve.
public struct DashboardOptions: Sendable {
    public var state: String
    public var host = "127.0.0.1"
    /// Nil: the first free port from 8642; 0: any free port.
    public var port: Int?
    public var open = false
    public var policy: String?
    public init(state: String) { self.state = state }
}

/// Serves the dashboard until SIGINT, SIGTERM or SIGHUP; returns only on an error (the
/// message is written to stderr), with the exit status.
public func serveDashboard(_ o: DashboardOptions) -> Int32 {
    // a page that goes away mid-answer is the server's to notice, not a signal's
    signal(SIGPIPE, SIG_IGN)
    func fail(_ message: String) -> Int32 {
        writeAll(2, "qw dashboard: \(message)\n")
        return 1
    }
    let store: StateStore
    let runtime: Runtime
    do {
        store = try StateStore(path: o.state)
        var ro = RuntimeOptions()
        ro.statePath = o.state
        runtime = try Runtime(options: ro)
    } catch {
        return fail("\(error)")
    }
    let policy = o.policy ?? (access(Runtime.defaultPolicyPath, R_OK) == 0 ? Runtime.defaultPolicyPath : nil)
    if let policy, case .failed(let e) = runtime.runPolicy(policy) { return fail(e.message) }
    guard let stdlib = runtime.stdlibPath, access(stdlib + "/dashboard/index.html", R_OK) == 0 else {
        return fail("its pages are missing (stdlib/dashboard/index.html under \(runtime.stdlibPath ?? "?")); reinstall qw")
    }
    var bind = UInt16(o.port ?? 8642)
    if o.port == nil {
        // like a notebook server: the next port when the usual one is taken
        var tries = 0
        while !portFree(o.host, bind) && tries < 20 { bind += 1; tries += 1 }
    } else if bind != 0 && !portFree(o.host, bind) {
        return fail("cannot listen on \(o.host):\(bind): it is in use or not an address of this machine (try another --port)")
    }
    var cwd = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let project = getcwd(&cwd, cwd.count) != nil ? cwd.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : "."
    let model = DashboardModel(store: store, runtime: runtime, project: project)
    let feed = LiveFeed(model: model)
    do {
        try feed.start()
    } catch {
        return fail("\(error)")
    }
    let server: DashboardServer
    do {
        server = try DashboardServer(model: model, feed: feed, host: o.host, port: bind, assets: stdlib + "/dashboard")
    } catch {
        return fail("cannot listen on \(o.host): \(error)")
    }
    let shown = o.host.contains(":") ? "[\(o.host)]" : o.host
    let openIt = o.open, host = o.host, storePath = store.path
    // Ctrl-C, SIGTERM and SIGHUP end the streams and the process, cleanly. In place before
    // the address is printed: whoever reads it may stop the dashboard at once, and a signal
    // that came after SIG_IGN but before its source was registered would be lost.
    var sources: [any DispatchSourceSignal] = []
    let registered = DispatchGroup()
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: DispatchQueue(label: "qw.dashboard.signal"))
        source.setEventHandler {
            feed.stop()
            Glibc.exit(0)
        }
        registered.enter()
        source.setRegistrationHandler { registered.leave() }
        source.resume()
        sources.append(source)
    }
    // (registration is the dispatch manager's at once; the bound only keeps a broken one
    // from hanging the start)
    _ = registered.wait(timeout: .now() + 5)
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
    withExtendedLifetime(sources) { dispatchMain() }
}

/// Whether a TCP socket can bind `host:port` now.
func portFree(_ host: String, _ port: UInt16) -> Bool {
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
