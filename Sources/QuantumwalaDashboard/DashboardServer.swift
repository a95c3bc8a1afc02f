import FlyingFox
import FlyingSocks
import Foundation
import Glibc
import QuantumwalaCore
import QuantumwalaLua

/// The store's JSON (FlyingFox has a type of this name too).
typealias JSONValue = QuantumwalaCore.JSONValue

/// The dashboard's HTTP side: pages, assets, the JSON API and the live stream (see
/// docs/dashboard.md), with the access rules: loopback by default, a token for anything
/// but reading and for any binding beyond loopback, and a `Host` check against DNS
/// rebinding.
final class DashboardServer: Sendable {
    let model: DashboardModel
    let feed: LiveFeed
    let token: String
    let host: String
    let port: UInt16
    let loopback: Bool
    /// The folder of index.html, app.js and app.css.
    let assets: String
    let server: HTTPServer

    init(model: DashboardModel, feed: LiveFeed, host: String, port: UInt16, assets: String) throws {
        self.model = model
        self.feed = feed
        self.host = host
        self.port = port
        self.assets = assets
        self.token = Self.randomToken()
        loopback = host == "127.0.0.1" || host == "::1" || host == "localhost" || host.hasPrefix("127.")
        let address: any SocketAddress = host.contains(":")
            ? try sockaddr_in6.inet6(ip6: host, port: port)
            : try sockaddr_in.inet(ip4: host == "localhost" ? "127.0.0.1" : host, port: port)
        server = HTTPServer(address: address, timeout: 30, logger: .disabled)
    }

    /// 32 hex digits from the kernel's random source.
    static func randomToken() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        let fd = Glibc.open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            _ = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 16) }
            close(fd)
        }
        return bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// Binds and serves until the task is cancelled; `ready` gets the port bound (for port 0).
    func run(ready: @escaping @Sendable (UInt16) -> Void) async throws {
        await server.appendRoute("*") { [self] request in await self.respond(request) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.server.run() }
            try await server.waitUntilListening(timeout: 5)
            var bound = port
            if case .ip4(_, let p)? = await server.listeningAddress { bound = p }
            if case .ip6(_, let p)? = await server.listeningAddress { bound = p }
            ready(bound)
            try await group.next()
        }
    }

    // MARK: answering

    func respond(_ request: HTTPRequest) async -> HTTPResponse {
        let rawPath = request.target.path()
        let segments = rawPath.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map {
            String($0).removingPercentEncoding ?? String($0)
        }
        let isAPI = segments.first == "api"
        if let refusal = check(request) { return refusal }
        do {
            switch (request.method, segments.first ?? "") {
            case (.GET, "api"), (.POST, "api"):
                return try await api(request, Array(segments.dropFirst()))
            case (.GET, "assets"):
                guard segments.count == 2, let (name, type) = Self.assetFiles[segments[1]] else { throw DashboardError(status: 404, "no such asset") }
                return try file(name, type)
            case (.GET, _):
                // the pages: each is the same document, which reads its URL
                let page = segments.first ?? ""
                let known = (page == "" && segments.count == 1) || ((page == "cost" || page == "events") && segments.count == 1)
                    || ((page == "workflows" || page == "specs") && segments.count == 2 && !segments[1].isEmpty)
                guard known else { throw DashboardError(status: 404, "no such page: \(rawPath)") }
                var response = try file("index.html", "text/html; charset=utf-8")
                if let t = request.query.first(where: { $0.name == "token" })?.value, t == token {
                    response.headers[HTTPHeader("Set-Cookie")] = "qw_token=\(token); Path=/; HttpOnly; SameSite=Strict"
                }
                return response
            default:
                throw DashboardError(status: 405, "\(request.method.rawValue) is not answered here")
            }
        } catch let e as DashboardError {
            return isAPI || e.status != 404 ? json(.object([("error", .string(e.message))]), status: e.status) : text(e.message, status: 404)
        } catch {
            return json(.object([("error", .string("\(error)"))]), status: 500)
        }
    }

    /// Files served, by the name in /assets/NAME: nothing else is read from disk.
    static let assetFiles: [String: (String, String)] = [
        "app.js": ("app.js", "text/javascript; charset=utf-8"),
        "app.css": ("app.css", "text/css; charset=utf-8"),
        // the shared worker that keeps one stream for every tab of the dashboard
        "stream-worker.js": ("stream-worker.js", "text/javascript; charset=utf-8"),
    ]

    /// Nil when the request may go on; else the answer that refuses it.
    private func check(_ request: HTTPRequest) -> HTTPResponse? {
        // DNS rebinding: a page on another name must not reach a loopback server
        if let h = request.headers[HTTPHeader("Host")] {
            let name = h.hasPrefix("[") ? String(h[..<(h.firstIndex(of: "]").map { h.index(after: $0) } ?? h.endIndex)])
                : String(h.split(separator: ":").first ?? "")
            let allowed = !loopback || ["127.0.0.1", "localhost", "[::1]", host, "[\(host)]"].contains(name.lowercased())
            if !allowed { return text("this dashboard answers to \(host), not \(name)", status: 421) }
        }
        let authorized = presentedToken(request, cookie: true) == token
        if !loopback && !authorized {
            return text("this dashboard needs its token: open the address qw dashboard printed (with ?token=...)", status: 403)
        }
        // changes: the token in a header or the query (a cookie alone would let another site's form post)
        if request.method != .GET && request.method != .HEAD && presentedToken(request, cookie: false) != token {
            return json(.object([("error", .string("this needs the dashboard's token (X-QW-Token)"))]), status: 403)
        }
        return nil
    }

    private func presentedToken(_ request: HTTPRequest, cookie: Bool) -> String? {
        if let h = request.headers[HTTPHeader("X-QW-Token")] { return h }
        if let q = request.query.first(where: { $0.name == "token" })?.value { return q }
        guard cookie, let c = request.headers[HTTPHeader("Cookie")] else { return nil }
        for part in c.split(separator: ";") {
            let kv = part.trimmingCharacters(in: .whitespaces)
            if kv.hasPrefix("qw_token=") { return String(kv.dropFirst(9)) }
        }
        return nil
    }

    private func api(_ request: HTTPRequest, _ path: [String]) async throws -> HTTPResponse {
        func q(_ name: String) -> String? { request.query.first { $0.name == name }?.value }
        func int(_ name: String, _ fallback: Int) throws -> Int {
            guard let v = q(name), !v.isEmpty else { return fallback }
            guard let i = Int(v) else { throw DashboardError(status: 400, "\(name) must be a whole number (got '\(v)')") }
            return i
        }
        func number(_ name: String) throws -> Double? {
            guard let v = q(name), !v.isEmpty else { return nil }
            guard let d = Double(v) else { throw DashboardError(status: 400, "\(name) must be a number (got '\(v)')") }
            return d
        }
        func found(_ v: JSONValue?, _ what: String) throws -> HTTPResponse {
            guard let v else { throw DashboardError(status: 404, what) }
            return json(v)
        }
        switch (request.method, path.count, path.first ?? "") {
        case (.GET, 1, "overview"):
            return json(try await model.run { try $0.overview() })
        case (.GET, 2, "workflows"):
            let name = path[1]
            let from: Int? = (q("waves") ?? "").isEmpty ? nil : try int("waves", 0)
            return try found(try await model.run { try $0.workflow(name, wavesFrom: from) }, "no workflow named '\(name)'")
        case (.GET, 3, "workflows") where path[2] == "tasks":
            let name = path[1]
            let offset = try int("offset", 0), limit = try int("limit", 100)
            let status = q("status"), query = q("q")
            let wave: Int? = (q("wave") ?? "").isEmpty ? nil : try int("wave", 0)
            return try found(try await model.run { try $0.tasks(name, offset: offset, limit: limit, status: status, wave: wave, query: query) },
                             "no workflow named '\(name)'")
        case (.GET, 5, "workflows") where path[2] == "tasks" && path[4] == "log":
            let name = path[1], id = path[3]
            let offset: Int? = (q("offset") ?? "").isEmpty ? nil : try int("offset", 0)
            return try found(try await model.run { try $0.log(name, id, offset: offset) }, "no task '\(id)' in workflow '\(name)'")
        case (.GET, 4, "workflows") where path[2] == "tasks":
            let name = path[1], id = path[3]
            return try found(try await model.run { try $0.task(name, id) }, "no task '\(id)' in workflow '\(name)'")
        case (.GET, 2, "specs"):
            let name = path[1]
            return try found(try await model.run { try $0.spec(name) }, "no spec named '\(name)'")
        case (.POST, 3, "specs") where path[2] == "approve":
            let name = path[1]
            guard let phase = q("phase") else { throw DashboardError(status: 400, "approve needs ?phase=requirements|design|tasks") }
            return json(try await model.run { try $0.approve(spec: name, phase: phase) })
        case (.GET, 1, "cost"):
            let since = try number("since")
            return json(try await model.run { try $0.cost(since: since) })
        case (.GET, 1, "events"):
            let limit = try int("limit", 200), before = try number("before")
            let sources = Set((q("source") ?? "engine,hook,suggestion").split(separator: ",").map(String.init))
            let kind = q("kind").flatMap { $0.isEmpty ? nil : $0 }, workflow = q("workflow").flatMap { $0.isEmpty ? nil : $0 }
            let after = q("after").flatMap { $0.isEmpty ? nil : $0 }
            return json(try await model.run { try $0.events(limit: limit, before: before, after: after, sources: sources, kind: kind, workflow: workflow) })
        case (.GET, 1, "stream"):
            // one page: workflow=NAME&task=ID&events=1; a worker serving many pages says all
            // it wants in one: watch={"workflows":[...],"logs":[["W","T"],...],"events":true}
            var workflows = Set(request.query.filter { $0.name == "workflow" && !$0.value.isEmpty }.map(\.value))
            var logs: [(String, String)] = []
            if let w = q("workflow"), !w.isEmpty, let t = q("task"), !t.isEmpty { logs.append((w, t)) }
            var wantsEvents = q("events") == "1"
            if let watch = q("watch") {
                guard let o = (try? JSONSerialization.jsonObject(with: Data(watch.utf8))) as? [String: Any] else {
                    throw DashboardError(status: 400, "watch must be a JSON object: {\"workflows\": [...], \"logs\": [[workflow, task], ...], \"events\": true}")
                }
                for w in o["workflows"] as? [String] ?? [] { workflows.insert(w) }
                for pair in o["logs"] as? [[String]] ?? [] where pair.count == 2 {
                    workflows.insert(pair[0])
                    logs.append((pair[0], pair[1]))
                }
                if o["events"] as? Bool == true { wantsEvents = true }
            }
            let last = request.headers[HTTPHeader("Last-Event-ID")] ?? q("last")
            let (id, stream) = feed.connect(workflows: workflows, logs: logs, wantsEvents: wantsEvents, lastEventID: last)
            return HTTPResponse(statusCode: .ok, headers: [
                HTTPHeader("Content-Type"): "text/event-stream; charset=utf-8",
                HTTPHeader("Cache-Control"): "no-store",
                HTTPHeader("X-Accel-Buffering"): "no",
            ], body: HTTPBodySequence(from: EventStreamBody(stream: stream, lease: FeedLease(feed, id))))
        default:
            throw DashboardError(status: 404, "no such API: /api/\(path.joined(separator: "/"))")
        }
    }

    // MARK: answers

    private static let securityHeaders: [(String, String)] = [
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Content-Security-Policy",
         "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    ]

    private func headers(_ type: String, _ extra: [(String, String)] = []) -> HTTPHeaders {
        var h = HTTPHeaders()
        h[HTTPHeader("Content-Type")] = type
        for (k, v) in Self.securityHeaders + extra { h[HTTPHeader(k)] = v }
        return h
    }

    func json(_ v: JSONValue, status: Int = 200) -> HTTPResponse {
        HTTPResponse(statusCode: Self.status(status), headers: headers("application/json; charset=utf-8", [("Cache-Control", "no-store")]),
                     body: Data(v.text.utf8))
    }

    func text(_ s: String, status: Int) -> HTTPResponse {
        HTTPResponse(statusCode: Self.status(status), headers: headers("text/plain; charset=utf-8"), body: Data((s + "\n").utf8))
    }

    private func file(_ name: String, _ type: String) throws -> HTTPResponse {
        guard let data = FileManager.default.contents(atPath: assets + "/" + name) else {
            throw DashboardError(status: 500, "the dashboard's \(name) is missing from \(assets)")
        }
        return HTTPResponse(statusCode: .ok, headers: headers(type, [("Cache-Control", "no-cache")]), body: data)
    }

    static func status(_ code: Int) -> HTTPStatusCode {
        switch code {
        case 200: .ok
        case 400: .badRequest
        case 403: .forbidden
        case 404: .notFound
        case 405: .methodNotAllowed
        case 421: HTTPStatusCode(421, phrase: "Misdirected Request")
        default: .internalServerError
        }
    }
}

/// Drops a client from the feed when its connection's body goes away.
final class FeedLease: Sendable {
    let feed: LiveFeed
    let id: Int
    init(_ feed: LiveFeed, _ id: Int) {
        self.feed = feed
        self.id = id
    }
    deinit { feed.disconnect(id) }
}

/// An SSE response body: the messages of the feed's stream, as they come.
struct EventStreamBody: AsyncBufferedSequence, Sendable {
    typealias Element = UInt8
    let stream: AsyncStream<[UInt8]>
    let lease: FeedLease

    func makeAsyncIterator() -> Iterator { Iterator(base: stream.makeAsyncIterator(), lease: lease) }

    struct Iterator: AsyncBufferedIteratorProtocol {
        var base: AsyncStream<[UInt8]>.Iterator
        let lease: FeedLease
        var pending: [UInt8] = []
        var offset = 0

        mutating func next() async -> UInt8? {
            guard let b = await nextBuffer(suggested: 1) else { return nil }
            return b.first
        }

        mutating func nextBuffer(suggested count: Int) async -> ArraySlice<UInt8>? {
            if offset >= pending.count {
                guard let chunk = await base.next() else { return nil }
                pending = chunk
                offset = 0
            }
            let end = Swift.min(pending.count, offset + Swift.max(count, 1))
            defer { offset = end }
            return pending[offset..<end]
        }
    }
}
