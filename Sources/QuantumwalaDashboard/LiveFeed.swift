import Dispatch
import QuantumwalaCore
import QuantumwalaLua

/// Pushes the store's changes to every connected page over Server-Sent Events.
///
/// One watcher for all clients: every 50 ms it asks SQLite for `PRAGMA data_version`, which
/// moves when any other connection commits (a few instructions, no reading of tables).
/// When it moved, the feed reads what is new once (the event log and hook events after the
/// last ids it saw, suggestions changed since) and sends each client the part it asked for:
/// events, the changed rows of the workflow it shows, and the overview when that changed.
/// The work per change is paced by the process's own CPU use, so a store taking thousands of
/// changes a second costs the dashboard a bounded share of one core.
final class LiveFeed: @unchecked Sendable {
    let model: DashboardModel
    private var queue: DispatchQueue { model.queue }

    final class Client {
        let id: Int
        /// The workflows whose tasks it shows.
        let workflows: Set<String>
        /// The logs it follows, as ``LiveFeed/logKey(_:_:)``s.
        let logs: Set<String>
        let wantsEvents: Bool
        let continuation: AsyncStream<[UInt8]>.Continuation
        init(id: Int, workflows: Set<String>, logs: Set<String>, wantsEvents: Bool, continuation: AsyncStream<[UInt8]>.Continuation) {
            self.id = id
            self.workflows = workflows
            self.logs = logs
            self.wantsEvents = wantsEvents
            self.continuation = continuation
        }
    }

    private var clients: [Int: Client] = [:]
    private var nextID = 1
    private var timer: (any DispatchSourceTimer)?
    private var version: Int64 = -1
    private var lastEvent: Int64 = 0
    private var lastHook: Int64 = 0
    private var suggestionsSince = 0.0
    private var seenSuggestions: [String: Double] = [:]
    private var dirty = false
    private var overviewDue = false
    private var nextDelta = 0.0
    private var lastDelta: (at: Double, cpu: Double)?
    private var nextOverview = 0.0
    private var lastOverview = ""
    private var lastPing = 0.0
    /// Seconds between polls of the data version.
    static let poll = 0.05
    /// The dashboard's CPU over the wall time between two passes is at most 1 / (pace + 1)
    /// of a core (a 50th) while the store is busy.
    static let pace = 49.0
    /// The most rows of the event log one message carries.
    static let maxRows = 500

    init(model: DashboardModel) {
        self.model = model
    }

    var clientCount: Int { queue.sync { clients.count } }

    /// Starts watching (from the log's current end).
    func start() throws {
        try queue.sync {
            let p = try model.store.logPositions()
            lastEvent = p.events
            lastHook = p.hooks
            version = try model.store.dataVersion()
            suggestionsSince = monotonicWallClock()
        }
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + Self.poll, repeating: Self.poll, leeway: .milliseconds(5))
        t.setEventHandler { [weak self] in self?.tick() }
        t.resume()
        timer = t
    }

    func stop() {
        timer?.cancel()
        queue.sync {
            for c in clients.values { c.continuation.finish() }
            clients = [:]
        }
    }

    /// The id of the position the feed has reached: the last event and hook event ids.
    private var position: String { "\(lastEvent).\(lastHook)" }

    /// A new client; its stream ends when the server stops. `lastEventID` is what a
    /// reconnecting EventSource sends: the events after it are sent again to a client of
    /// events.
    /// `workflows`: those whose task changes it gets; `logs`: (workflow, task) pairs whose log
    /// it follows (one page, or a worker serving many pages).
    func connect(workflows: Set<String>, logs: [(String, String)], wantsEvents: Bool, lastEventID: String?) -> (id: Int, stream: AsyncStream<[UInt8]>) {
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .bufferingNewest(2000))
        let id: Int = queue.sync {
            let id = nextID
            nextID += 1
            let c = Client(id: id, workflows: workflows, logs: Set(logs.map { Self.logKey($0.0, $0.1) }), wantsEvents: wantsEvents,
                           continuation: continuation)
            clients[id] = c
            for (w, t) in logs { follow(w, t) }
            var missed: [StateStore.EventView] = []
            if let last = lastEventID, let dot = last.firstIndex(of: "."),
               let e = Int64(last[..<dot]), let h = Int64(last[last.index(after: dot)...]) {
                if wantsEvents || !workflows.isEmpty {
                    missed = ((try? model.store.engineEvents(afterID: e, limit: Self.maxRows)) ?? []).filter { $0.id <= lastEvent }
                        + ((try? model.store.hookEventViews(afterID: h, limit: Self.maxRows)) ?? []).filter { $0.id <= lastHook }
                }
            }
            send(c, "hello", JSONValue.object([("version", .string(position)), ("resync", .bool(lastEventID != nil))]).text)
            let rows = missed.filter { wants(c, $0.workflow, $0.task) }.suffix(Self.maxRows)
            if !rows.isEmpty { send(c, "events", JSONValue.array(rows.map(\.json)).text) }
            return id
        }
        continuation.onTermination = { [weak self] _ in self?.disconnect(id) }
        return (id, stream)
    }

    func disconnect(_ id: Int) {
        queue.async { self.clients[id] = nil }
    }

    private func send(_ c: Client, _ event: String, _ data: String) {
        // a page whose server went away tries again after a second, not the browser's three
        var msg = event == "hello" ? "retry: 1000\n" : ""
        msg += "id: \(position)\nevent: \(event)\ndata: "
        msg += data
        msg += "\n\n"
        if case .terminated = c.continuation.yield(Array(msg.utf8)) { clients[c.id] = nil }
    }

    /// Every row for a client of events; otherwise the rows of the workflows it shows that
    /// are about no one task (started, finished) and those of the tasks whose logs it
    /// follows (the task panel's activity): not the thousands a second of a busy run.
    private func wants(_ c: Client, _ workflow: String?, _ task: String?) -> Bool {
        if c.wantsEvents { return true }
        guard let w = workflow, c.workflows.contains(w) else { return false }
        guard let t = task else { return true }
        return c.logs.contains(Self.logKey(w, t))
    }

    static func logKey(_ workflow: String, _ task: String) -> String { workflow + "\u{0}" + task }

    // MARK: watching

    private func tick() {
        let now = monotonicWallClock()
        if let v = try? model.store.dataVersion(), v != version {
            version = v
            dirty = true
        }
        if dirty && now >= nextDelta {
            dirty = false
            delta()
            // The whole process's CPU since the last pass (this read and encoding, the sending
            // of the last one to every client, the pages it served) sets when the next may
            // be: at most a 50th of a core from then to the next, as the work it watches
            // comes first; never more often than every 100 ms, nor a page more than 1 s behind.
            let cpu = ownCPUSeconds()
            let share = (lastDelta.map { $0.at + (cpu - $0.cpu) * (Self.pace + 1) } ?? now) - now
            lastDelta = (now, cpu)
            nextDelta = now + min(1, max(0.1, share))
        }
        guard !clients.isEmpty else { return }
        if overviewDue && now >= nextOverview || now - nextOverview > 2 {
            overviewDue = false
            let started = monotonicWallClock()
            pushOverview()
            nextOverview = now + max(0.25, (monotonicWallClock() - started) * Self.pace)
        }
        followLogs()
        if now - lastPing >= 15 {
            lastPing = now
            for c in clients.values { send(c, "ping", "{}") }
        }
    }

    /// Reads what changed since the last pass and sends it.
    private func delta() {
        // answers given before this pass must not undo what it tells the pages next
        model.newGeneration()
        // the engine's rows as stored (a batch of successes is expanded only as far as a
        // client's newest rows need), then hook events and suggestions
        var engine: [StateStore.EventRow] = []
        var rows: [StateStore.EventView] = []
        var touched: [String: [String]] = [:]
        var touchedSeen: [String: Set<String>] = [:]
        if let ev = try? model.store.engineEventRows(afterID: lastEvent, limit: 5000), !ev.isEmpty {
            lastEvent = ev.last!.id
            for e in ev {
                guard let w = e.workflow else { continue }
                if touched[w] == nil { touched[w] = [] }
                guard e.kind.hasPrefix("task") else { continue }
                // past maxRows changed tasks a message says `more` instead: no need to know them all
                e.forEachTask { t in
                    guard touched[w]!.count <= Self.maxRows else { return false }
                    if touchedSeen[w, default: []].insert(t).inserted { touched[w]!.append(t) }
                    return true
                }
            }
            engine = ev
            // more than one read takes: the rest on the next pass
            if ev.count >= 5000 { dirty = true }
        }
        if let hk = try? model.store.hookEventViews(afterID: lastHook), !hk.isEmpty {
            lastHook = hk.last!.id
            rows += hk
        }
        if let sg = try? model.store.suggestionEvents(since: suggestionsSince) {
            for s in sg where seenSuggestions[s.cursor] == nil {
                seenSuggestions[s.cursor] = s.at
                rows.append(s)
                suggestionsSince = max(suggestionsSince, s.at)
            }
            if seenSuggestions.count > 5000 { seenSuggestions = seenSuggestions.filter { $0.value >= suggestionsSince - 1 } }
        }
        model.invalidate(touched.keys)
        overviewDue = true
        // logs asked for before their workflow was in the store
        for c in clients.values {
            for key in c.logs where logs[key] == nil {
                let parts = key.split(separator: "\u{0}", maxSplits: 1, omittingEmptySubsequences: false)
                // all of it is news to the page: it could not read a log that was not there
                if parts.count == 2 { follow(String(parts[0]), String(parts[1]), fromStart: true) }
            }
        }
        guard !clients.isEmpty else { return }
        if !rows.isEmpty || !engine.isEmpty {
            // encoded once per kind of client: all rows, or one workflow's
            var texts: [String: String] = [:]
            for c in clients.values {
                let key = c.wantsEvents ? "" : "w:" + c.workflows.sorted().joined(separator: "\u{0}")
                    + "\u{1}" + c.logs.sorted().joined(separator: "\u{1}")
                if texts[key] == nil {
                    // the newest maxRows rows this client wants, found from the end
                    var mine: [StateStore.EventView] = []
                    for e in rows.reversed() where wants(c, e.workflow, e.task) {
                        mine.append(e)
                        if mine.count == Self.maxRows { break }
                    }
                    for e in engine.reversed() where mine.count < Self.maxRows {
                        guard c.wantsEvents || e.workflow.map(c.workflows.contains) == true else { continue }
                        // a batch is all task rows: of no use to a page that follows none of its tasks
                        if !c.wantsEvents, e.isBatch, let w = e.workflow, !c.logs.contains(where: { $0.hasPrefix(w + "\u{0}") }) { continue }
                        mine += e.newest(Self.maxRows - mine.count) { wants(c, e.workflow, $0) }
                    }
                    texts[key] = mine.isEmpty ? "" : JSONValue.array(mine.reversed().map(\.json)).text
                }
                if let text = texts[key], !text.isEmpty { send(c, "events", text) }
            }
        }
        // the changed rows of each workflow a client shows, read once for all of them
        let shown = clients.values.reduce(into: Set<String>()) { $0.formUnion($1.workflows) }
        for (w, ids) in touched where shown.contains(w) {
            guard let counts = try? model.countsOf(w) else { continue }
            var fields: [(String, JSONValue)] = [("workflow", .string(w)), ("counts", DashboardModel.countsJSON(counts))]
            if ids.count <= Self.maxRows, let changed = try? model.changedTasks(w, ids: ids) {
                fields += [("tasks", .array(changed)), ("more", .bool(false))]
            } else {
                fields += [("tasks", .array([])), ("more", .bool(true))]
            }
            let text = JSONValue.object(fields).text
            for c in clients.values where c.workflows.contains(w) { send(c, "tasks", text) }
        }
    }

    // MARK: logs

    /// The logs followed, by workflow and task: the file and the size sent up to.
    private var logs: [String: (workflow: String, task: String, path: String, size: Int)] = [:]

    /// Starts following a log: from its size now (the page reads what is there itself), or
    /// from its start.
    private func follow(_ workflow: String, _ task: String, fromStart: Bool = false) {
        let key = Self.logKey(workflow, task)
        guard logs[key] == nil, let path = (try? model.logPath(workflow, task)) ?? nil else { return }
        logs[key] = (workflow, task, path, fromStart ? 0 : LogFile.size(path) ?? 0)
    }

    /// Sends what each followed log gained since the last tick (a stat per log and tick).
    private func followLogs() {
        guard !logs.isEmpty else { return }
        let wanted = clients.values.reduce(into: Set<String>()) { $0.formUnion($1.logs) }
        for key in logs.keys where !wanted.contains(key) { logs[key] = nil }
        for (key, l) in logs {
            let size = LogFile.size(l.path) ?? 0
            guard size != l.size else { continue }
            var fields: [(String, JSONValue)] = [("workflow", .string(l.workflow)), ("task", .string(l.task))]
            if size < l.size {
                // a new run of the task started its log again
                fields += [("reset", .bool(true)), ("size", .int(size))]
                logs[key]!.size = 0
            } else {
                let piece = LogFile.read(l.path, from: l.size, size: size)
                guard piece.bytes > 0 else { continue }
                fields += [("offset", .int(piece.offset)), ("bytes", .int(piece.bytes)), ("text", .string(piece.text)), ("size", .int(size))]
                logs[key]!.size = piece.offset + piece.bytes
            }
            let text = JSONValue.object(fields).text
            for c in clients.values where c.logs.contains(key) { send(c, "log", text) }
        }
    }

    private func pushOverview() {
        guard let o = try? model.overview() else { return }
        // `now` moves every time: compare without it
        var fields: [(String, JSONValue)] = []
        if case .object(let f) = o { fields = f.filter { $0.0 != "now" } }
        let key = JSONValue.object(fields).text
        guard key != lastOverview else { return }
        lastOverview = key
        let text = o.text
        for c in clients.values { send(c, "overview", text) }
    }
}
