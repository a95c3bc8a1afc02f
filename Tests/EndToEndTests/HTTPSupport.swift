import Foundation
import Glibc
import Testing

/// An HTTP answer as the tests read it.
struct HTTPReply {
    var status: Int
    var headers: [String: String]
    var body: String
    func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// A TCP connection to 127.0.0.1:port with a receive timeout; -1 when it cannot connect.
func connectLoopback(_ port: Int, timeout: Double = 10) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return -1 }
    var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = UInt16(port).bigEndian
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    if rc != 0 { close(fd); return -1 }
    return fd
}

private func sendAll(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    let total = bytes.count
    var off = 0
    while off < total {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, total - off, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { return }
        off += n
    }
}

/// One request, sent as written (the path is not normalised: traversal tests need that);
/// nil when nothing came back in time.
func httpRequest(_ method: String, port: Int, path: String, headers: [String: String] = [:], body: String? = nil,
                 timeout: Double = 30) -> HTTPReply? {
    let fd = connectLoopback(port, timeout: timeout)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var head = "\(method) \(path) HTTP/1.1\r\n"
    var all = ["Host": "127.0.0.1:\(port)", "Connection": "close"]
    for (k, v) in headers { all[k] = v }
    if let body { all["Content-Length"] = String(body.utf8.count); if all["Content-Type"] == nil { all["Content-Type"] = "application/json" } }
    else if method == "POST" || method == "DELETE" { all["Content-Length"] = "0" }
    for (k, v) in all { head += "\(k): \(v)\r\n" }
    sendAll(fd, head + "\r\n" + (body ?? ""))
    var raw: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    var headerEnd: Int?
    var length: Int?
    while true {
        if let h = headerEnd, let l = length, raw.count >= h + l { break }
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 { break }
        raw += buf[0..<n]
        if headerEnd == nil, let r = find(raw, Array("\r\n\r\n".utf8)) {
            headerEnd = r + 4
            let text = String(decoding: raw[0..<r], as: UTF8.self).lowercased()
            for line in text.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                length = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces))
            }
        }
    }
    guard let h = headerEnd else { return nil }
    let lines = String(decoding: raw[0..<(h - 4)], as: UTF8.self).components(separatedBy: "\r\n")
    let parts = lines[0].split(separator: " ")
    guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
    var hs: [String: String] = [:]
    for l in lines.dropFirst() {
        guard let c = l.firstIndex(of: ":") else { continue }
        hs[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
    }
    var bodyBytes = Array(raw[h...])
    if let l = length, bodyBytes.count > l { bodyBytes = Array(bodyBytes[0..<l]) }
    return HTTPReply(status: status, headers: hs, body: String(decoding: bodyBytes, as: UTF8.self))
}

func find(_ hay: [UInt8], _ needle: [UInt8], from: Int = 0) -> Int? {
    guard hay.count >= needle.count else { return nil }
    var i = from
    while i + needle.count <= hay.count {
        if hay[i] == needle[0] && Array(hay[i..<i + needle.count]) == needle { return i }
        i += 1
    }
    return nil
}

/// A Server-Sent Events stream read as it comes (chunked transfer coding undone).
final class EventStream {
    let fd: Int32
    private var raw: [UInt8] = []
    private var body: [UInt8] = []
    private var headerDone = false
    private(set) var status = 0

    init?(port: Int, path: String, headers: [String: String] = [:]) {
        fd = connectLoopback(port, timeout: 10)
        guard fd >= 0 else { return nil }
        var head = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAccept: text/event-stream\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        sendAll(fd, head + "\r\n")
    }

    deinit { close(fd) }

    /// The next message (event name and data) for which `accept` holds, reading at most
    /// `timeout` seconds; nil when none came.
    func next(timeout: Double = 10, _ accept: (String, String) -> Bool) -> (event: String, data: String)? {
        let deadline = monotonicNow() + timeout
        while true {
            while let end = find(body, [10, 10]) {
                let text = String(decoding: body[0..<end], as: UTF8.self)
                body.removeFirst(end + 2)
                var event = "message", data = ""
                for line in text.split(separator: "\n") {
                    if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
                    if line.hasPrefix("data: ") { data += String(line.dropFirst(6)) }
                }
                if accept(event, data) { return (event, data) }
            }
            guard monotonicNow() < deadline, fill() else { return nil }
        }
    }

    /// Reads more and undoes the chunking; false at the end of the stream or on a timeout.
    private func fill() -> Bool {
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 { return false }
        raw += buf[0..<n]
        if !headerDone {
            guard let r = find(raw, Array("\r\n\r\n".utf8)) else { return true }
            let first = String(decoding: raw[0..<r], as: UTF8.self).split(separator: " ")
            status = first.count > 1 ? Int(first[1]) ?? 0 : 0
            raw.removeFirst(r + 4)
            headerDone = true
        }
        while let crlf = find(raw, [13, 10]) {
            guard let size = Int(String(decoding: raw[0..<crlf], as: UTF8.self), radix: 16) else { return false }
            guard raw.count >= crlf + 2 + size + 2 else { break }
            body += raw[(crlf + 2)..<(crlf + 2 + size)]
            raw.removeFirst(crlf + 2 + size + 2)
            if size == 0 { return false }
        }
        return true
    }
}

func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A free TCP port on loopback (bound and released: the caller binds it next).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: a.sin_port))
}

/// Reads one line from a helper's pipe (without closing it).
func readLine(_ fd: Int32) -> String {
    var line: [UInt8] = []
    var c: UInt8 = 0
    while read(fd, &c, 1) == 1 && c != 10 { line.append(c) }
    return String(decoding: line, as: UTF8.self)
}

/// `qw ARGS...` started in `dir` with the tests' environment (see ``spawnHelper(_:withStdin:)``).
func spawnQw(_ args: [String], in dir: String) -> (pid: pid_t, stdin: Int32, stdout: Int32)? {
    spawnHelper(["env", "-C", dir] + qwTestEnv.map { "\($0.0)=\($0.1)" } + [qwBinary] + args)
}

/// Ends a helper however far it got: SIGTERM, then its exit is waited for and its pipe closed.
func stopHelper(_ h: (pid: pid_t, stdin: Int32, stdout: Int32)) {
    kill(h.pid, SIGTERM)
    var st: Int32 = 0
    waitpid(h.pid, &st, 0)
    close(h.stdout)
}

/// Lets a task blocked in `read line < FIFO` go on (opening the FIFO waits for that reader).
func release(_ fifo: String) {
    let fd = open(fifo, O_WRONLY)
    _ = write(fd, "go\n", 3)
    close(fd)
}

/// A dashboard under test: `qw dashboard` on a port of its own, reading `state`.
final class DashboardProcess {
    let pid: pid_t
    let out: Int32
    let port: Int
    let token: String

    init?(state: String, cwd: String, port: Int = 0, extra: [String] = []) {
        guard let h = spawnQw(["dashboard", "--state", state, "--port", String(port)] + extra, in: cwd) else { return nil }
        pid = h.pid
        out = h.stdout
        // "qw dashboard: http://127.0.0.1:PORT/?token=T"
        let line = readLine(out)
        guard let url = line.split(separator: " ").last, let colon = url.lastIndex(of: ":"),
              let slash = url[colon...].firstIndex(of: "/"), let p = Int(url[url.index(after: colon)..<slash]),
              let eq = url.lastIndex(of: "=") else {
            kill(h.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(h.pid, &status, 0)
            close(h.stdout)
            return nil
        }
        self.port = p
        self.token = String(url[url.index(after: eq)...])
        _ = readLine(out)
    }

    func get(_ path: String, headers: [String: String] = [:]) -> HTTPReply? {
        httpRequest("GET", port: port, path: path, headers: headers)
    }

    /// The JSON a GET answers with (nil when it does not answer, or not with JSON).
    func json(_ path: String) -> Any? {
        get(path).flatMap { parseJSON($0.body) }
    }

    /// Ends it with SIGTERM and waits; its exit status.
    @discardableResult
    func stop() -> Int32 {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        close(out)
        return status
    }
}

/// JSON text to Foundation values.
func parseJSON(_ text: String) -> Any? {
    try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
}

/// A WebDriver session in headless Chromium, through chromedriver's HTTP protocol.
final class Browser {
    let driverPID: pid_t
    let driverOut: Int32
    let driverPort: Int
    let session: String
    let profile: String

    /// Starts chromedriver and a headless Chromium; nil (with the reason) when either is
    /// missing or does not start.
    static func start(width: Int = 1400, height: Int = 1000) -> (Browser?, String) {
        let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].first { (p: String) in access(p, X_OK) == 0 }
        let chromium = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"].first { (p: String) in access(p, X_OK) == 0 }
        guard let driver, let chromium else {
            return (nil, "headless Chromium needs the Debian packages chromium and chromium-driver (scripts/test installs them)")
        }
        let port = freePort()
        guard let h = spawnHelper([driver, "--port=\(port)"]) else { return (nil, "chromedriver did not start") }
        // "ChromeDriver was started successfully on port N."
        var line = ""
        for _ in 0..<10 {
            line = readLine(h.stdout)
            if line.contains("started successfully") || line.isEmpty { break }
        }
        let profile = makeTempDir()
        let caps: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": ["binary": chromium,
                                   "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                            "--window-size=\(width),\(height)", "--user-data-dir=\(profile)",
                                            "--no-first-run", "--disable-extensions", "--disable-background-networking"]],
        ]]]
        let body = String(decoding: try! JSONSerialization.data(withJSONObject: caps), as: UTF8.self)
        guard let r = httpRequest("POST", port: port, path: "/session", body: body, timeout: 60),
              let v = (parseJSON(r.body) as? [String: Any])?["value"] as? [String: Any], let id = v["sessionId"] as? String else {
            kill(h.pid, SIGKILL)
            var st: Int32 = 0
            waitpid(h.pid, &st, 0)
            removeTree(profile)
            return (nil, "chromedriver could not start Chromium: \(line)")
        }
        return (Browser(pid: h.pid, out: h.stdout, port: port, session: id, profile: profile), "")
    }

    private init(pid: pid_t, out: Int32, port: Int, session: String, profile: String) {
        driverPID = pid
        driverOut = out
        driverPort = port
        self.session = session
        self.profile = profile
    }

    /// A WebDriver command; its `value`.
    @discardableResult
    func command(_ method: String, _ path: String, _ body: [String: Any]? = nil, timeout: Double = 60) -> Any? {
        let text = body.map { String(decoding: try! JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
        guard let r = httpRequest(method, port: driverPort, path: "/session/\(session)\(path)", body: text ?? (method == "POST" ? "{}" : nil),
                                  timeout: timeout) else { return nil }
        return (parseJSON(r.body) as? [String: Any])?["value"]
    }

    func open(_ url: String) { command("POST", "/url", ["url": url]) }

    /// Runs `script` in the page; its return value.
    func run(_ script: String, _ args: [Any] = []) -> Any? {
        command("POST", "/execute/sync", ["script": script, "args": args])
    }

    /// Resolves when `condition` (a JavaScript expression) holds, watching the DOM change
    /// with a MutationObserver; false when it does not within `timeout` seconds.
    func waitFor(_ condition: String, timeout: Double = 15) -> Bool {
        command("POST", "/timeouts", ["script": Int(timeout * 1000)])
        let script = """
            const done = arguments[arguments.length - 1];
            const test = () => { try { return !!(\(condition)); } catch (e) { return false; } };
            if (test()) { done(true); return; }
            const obs = new MutationObserver(() => { if (test()) { obs.disconnect(); done(true); } });
            obs.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
            """
        return (command("POST", "/execute/async", ["script": script, "args": []], timeout: timeout + 10) as? Bool) == true
    }

    /// A PNG of the window.
    func screenshot() -> Data? {
        (command("GET", "/screenshot") as? String).flatMap { Data(base64Encoded: $0) }
    }

    func quit() {
        command("DELETE", "")
        // chromedriver leaves on /shutdown, not on SIGTERM
        _ = httpRequest("GET", port: driverPort, path: "/shutdown", timeout: 10)
        kill(driverPID, SIGKILL)
        var st: Int32 = 0
        waitpid(driverPID, &st, 0)
        close(driverOut)
        removeTree(profile)
    }
}
