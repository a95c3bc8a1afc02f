import Dispatch
import Glibc
import LuaHost
import QuantumwalaCore
import QuantumwalaLua

/// What the dashboard knows: the store's views as JSON, with the caches that keep a busy
/// store cheap to watch. Everything here runs on ``queue`` (SQLite and Lua calls block: they
/// stay off the threads that serve connections).
final class DashboardModel: @unchecked Sendable {
    let queue = DispatchQueue(label: "qw.dashboard.store")
    let store: StateStore
    /// For what policy knows (specs, the machine's readings): loaded like any qw's.
    let runtime: Runtime
    let project: String

    init(store: StateStore, runtime: Runtime, project: String) {
        self.store = store
        self.runtime = runtime
        self.project = project
    }

    /// Runs `body` on the store's queue.
    func run<T: Sendable>(_ body: @escaping @Sendable (DashboardModel) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            queue.async { c.resume(with: Result { try body(self) }) }
        }
    }

    // MARK: caches

    /// Task counts by state, per workflow; dropped for a workflow when its tasks change.
    private var counts: [String: [(String, Int)]] = [:]

    /// A workflow's tasks in wave order, and each one's wave: worked out again when the set
    /// of tasks or their dependencies may have changed (a new run, or more tasks), and kept
    /// when a new run recorded the same tasks.
    private struct Graph {
        var key: String
        var ids: [String]         // by id, as the store lists them
        var deps: [[String]]
        var index: [String: Int]
        var waveOf: [Int]         // by index into ids
        var order: [Int]          // indices into ids, by wave then id
        var waves: Int
        var edges: [(Int, Int)]
        var builtAt: Double
        var digest: UInt64        // of the tasks and dependencies, as the store has them

        func wave(_ id: String) -> Int? { index[id].map { waveOf[$0] } }
    }
    private var graphs: [String: Graph] = [:]

    func countsOf(_ workflow: String) throws -> [(String, Int)] {
        if let c = counts[workflow] { return c }
        let c = try store.taskCounts(of: workflow)
        counts[workflow] = c
        return c
    }

    /// The tasks of these workflows changed.
    func invalidate(_ workflows: some Sequence<String>) {
        for w in workflows { counts[w] = nil }
    }

    static func countsJSON(_ c: [(String, Int)]) -> JSONValue {
        .object(c.map { ($0.0, .int($0.1)) })
    }

    private func graph(_ workflow: String, runs: Int, total: Int, running: Bool) throws -> Graph {
        let key = "\(runs):\(total)"
        if let g = graphs[workflow] {
            if g.key == key { return g }
            // A large workflow (working its waves out takes a tenth of a second or more):
            // while a run records its tasks again they are fewer than the last run's, and
            // its graph serves until the run ends (a run of other tasks is seen then, or
            // when they outnumber the old ones); a run recording more tasks than before has
            // their waves worked out at most every few seconds (meanwhile the tasks not yet
            // placed are left out).
            if running && g.ids.count > 5000 {
                if total <= g.ids.count { return g }
                if g.key.hasPrefix("\(runs):") && monotonicWallClock() - g.builtAt < 5 { return g }
            }
        }
        let digest = try store.taskGraphDigest(of: workflow)
        if var g = graphs[workflow], g.digest == digest.digest, g.ids.count == digest.count {
            // a new run of the same tasks: the same waves
            g.key = key
            g.builtAt = monotonicWallClock()
            graphs[workflow] = g
            return g
        }
        let (ids, deps, _) = try store.taskGraph(of: workflow)
        var index: [String: Int] = [:]
        index.reserveCapacity(ids.count)
        for (i, id) in ids.enumerated() { index[id] = i }
        // the engine's own graph: the same waves `qw run` plans (a dependency the store no
        // longer has is left out rather than failing the view)
        let defs = ids.enumerated().map { i, id in
            var d = WorkflowTaskDef(id: id, deps: [], fingerprint: "", base: "")
            d.depIndices = deps[i].compactMap { index[$0].map(Int32.init) }
            return d
        }
        var waveOf = Array(repeating: 0, count: ids.count)
        var levels: [[Int]] = ids.isEmpty ? [] : [Array(ids.indices)]
        if let plan = try? WorkflowRun(name: workflow, tasks: defs) { levels = plan.levels() }
        for (l, members) in levels.enumerated() { for i in members { waveOf[i] = l } }
        var edges: [(Int, Int)] = []
        if ids.count <= DashboardModel.graphLimit {
            for (i, d) in deps.enumerated() { for name in d { if let j = index[name] { edges.append((j, i)) } } }
        }
        let order = levels.flatMap { $0.sorted { ids[$0] < ids[$1] } }
        let g = Graph(key: key, ids: ids, deps: deps, index: index, waveOf: waveOf, order: order, waves: levels.count,
                      edges: edges, builtAt: monotonicWallClock(), digest: digest.digest)
        graphs[workflow] = g
        return g
    }

    /// The state of each task of the graph, by its index: a code into `names` (-1: not in
    /// the store now).
    private func states(_ workflow: String, _ g: Graph) throws -> (codes: [Int8], names: [String]) {
        var names = Self.stateNames
        let codes = try store.taskStateCodes(of: workflow, ids: g.ids, index: g.index, names: &names)
        return (codes, names)
    }

    private static let stateNames = ["failed", "pending", "running", "skipped", "succeeded"]

    static func isRunning(_ fields: [(String, JSONValue)]) -> Bool {
        if case .string("running")? = fields.first(where: { $0.0 == "status" })?.1 { return true }
        return false
    }

    /// A workflow of at most this many tasks is drawn as a graph; larger ones by wave.
    static let graphLimit = 400

    // MARK: views

    func workflowList() throws -> [JSONValue] {
        try store.workflowViews().map { w in
            let c = try countsOf(w.name)
            var fields = w.fields
            fields.insert(("tasks", .int(c.reduce(0) { $0 + $1.1 })), at: 3)
            fields.insert(("counts", Self.countsJSON(c)), at: 4)
            return .object(fields)
        }
    }

    /// The machine's readings, taken at most once a second (a CPU reading is a rate).
    private var machine: (at: Double, value: JSONValue)?

    func machineReadings() -> JSONValue {
        let now = monotonicWallClock()
        if let m = machine, now - m.at < 1 { return m.value }
        var value: JSONValue = .null
        if let v = try? machineView(runtime, gate: false), let bytes = try? JSON.encode(v) {
            value = .raw(String(decoding: bytes, as: UTF8.self))
        }
        machine = (now, value)
        return value
    }

    private var maxAgents: Int?

    func overview() throws -> JSONValue {
        var gate = try store.gateView()
        if maxAgents == nil {
            maxAgents = (try? runtime.lua.run("return qw.agent.limits.max_agents or 3").first).flatMap { v -> Int? in
                if case .integer(let i) = v { return Int(i) }
                if case .number(let d) = v { return Int(d) }
                return nil
            } ?? 3
        }
        gate.insert(("max_agents", .int(maxAgents!)), at: 1)
        let queue = try store.suggestions(states: ["pending", "running", "failed"]).map { q in
            JSONValue.object([("id", .int(Int(q.id))), ("state", .string(q.state)), ("attempts", .int(q.attempts)),
                              ("argv", .raw(q.argv)), ("spec", .of(q.spec)), ("error", .of(q.error)),
                              ("created_at", .number(q.createdAt))])
        }
        return .object([
            ("store", .string(store.path)), ("project", .string(project)), ("now", .number(monotonicWallClock())),
            ("workflows", .array(try workflowList())),
            ("specs", specList()),
            ("machine", machineReadings()),
            ("gate", .object(gate)),
            ("agents", .array(try store.liveAgents())),
            ("suggestions", .array(queue)),
            ("cost", try store.costTotals()),
        ])
    }

    /// The specs of the project with the phase each was last seen in (Lua: the spec folders
    /// are policy's to find).
    private var specs: (at: Double, value: JSONValue)?

    func specList() -> JSONValue {
        let now = monotonicWallClock()
        if let s = specs, now - s.at < 2 { return s.value }
        let value = luaJSON("""
            local out = {}
            for _, s in ipairs(qw.spec.list()) do
              local phases = qw.spec.phases(s.name)
              out[#out + 1] = { name = s.name, kind = s.kind, phase = phases[#phases] }
            end
            return out
            """) ?? .array([])
        specs = (now, value)
        return value
    }

    /// Answers given in the last half second and since the feed's last pass, by question:
    /// many pages asking the same of a busy store cost one read per pass.
    private var answers: [String: (at: Double, generation: Int, value: JSONValue?)] = [:]

    /// Counts the live feed's passes over the store's changes: an answer is shared only
    /// within one (an answer from before a pass could undo what the pass pushed).
    private var generation = 0

    func newGeneration() {
        generation += 1
        answers = [:]
    }

    func cached(_ key: String, _ make: () throws -> JSONValue?) rethrows -> JSONValue? {
        let now = monotonicWallClock()
        if let a = answers[key], now - a.at < 0.5, a.generation == generation { return a.value }
        if answers.count > 200 { answers = answers.filter { now - $0.value.at < 0.5 } }
        // kept as text: twenty pages asking cost one encoding, not twenty
        let v = try make().map { JSONValue.raw($0.text) }
        answers[key] = (now, generation, v)
        return v
    }

    /// The most waves a workflow document summarises.
    static let waveWindow = 500

    /// `wavesFrom`: the first wave of the document's window of waves; nil: where the work is
    /// (a little before the first wave with tasks not finished, or the first failed one).
    func workflow(_ name: String, wavesFrom: Int? = nil) throws -> JSONValue? {
        try cached("w\u{0}" + name + "\u{0}" + (wavesFrom.map(String.init) ?? "")) { try workflowDocument(name, wavesFrom: wavesFrom) }
    }

    private func workflowDocument(_ name: String, wavesFrom: Int?) throws -> JSONValue? {
        guard let w = try store.workflowViews().first(where: { $0.name == name }) else { return nil }
        let c = try countsOf(name)
        let total = c.reduce(0) { $0 + $1.1 }
        let runs: Int = { if case .int(let r)? = w.fields.first(where: { $0.0 == "runs" })?.1 { return r }; return 0 }()
        let g = try graph(name, runs: runs, total: total, running: Self.isRunning(w.fields))
        let (codes, names) = try states(name, g)
        // counts by wave and state, flat: waves × names
        let k = names.count
        var perWave = [Int32](repeating: 0, count: g.waves * k)
        for (i, c) in codes.enumerated() where c >= 0 && g.waveOf[i] < g.waves { perWave[g.waveOf[i] * k + Int(c)] += 1 }
        let finished = [names.firstIndex(of: "succeeded"), names.firstIndex(of: "skipped")].compactMap { $0 }
        var fields = w.fields
        fields.insert(("tasks", .int(total)), at: 3)
        fields.insert(("counts", Self.countsJSON(c)), at: 4)
        // a window of the waves: a workflow of 100,000 tasks may have thousands
        let from: Int
        if let wavesFrom {
            from = max(0, min(wavesFrom, g.waves - 1))
        } else {
            let busy = (0..<g.waves).first { l in (0..<k).contains { c in perWave[l * k + c] > 0 && !finished.contains(c) } }
            from = busy.map { max(0, $0 - 2) } ?? 0
        }
        let window = from..<min(g.waves, from + Self.waveWindow)
        let byName = names.indices.sorted { names[$0] < names[$1] }
        fields.append(("wave_count", .int(g.waves)))
        fields.append(("waves_from", .int(window.lowerBound)))
        fields.append(("waves", .array(window.map { l in
            let row = perWave[(l * k)..<(l * k + k)]
            return .object([("wave", .int(l)), ("tasks", .int(Int(row.reduce(0, +)))),
                            ("counts", .object(byName.compactMap { c in row[l * k + c] > 0 ? (names[c], .int(Int(row[l * k + c]))) : nil }))])
        })))
        if g.ids.count <= Self.graphLimit {
            fields.append(("graph", .object([
                ("nodes", .array(g.order.map { i in
                    .object([("id", .string(g.ids[i])), ("wave", .int(g.waveOf[i])), ("status", .string(codes[i] >= 0 ? names[Int(codes[i])] : "pending"))])
                })),
                ("edges", .array(g.edges.map { .array([.string(g.ids[$0.0]), .string(g.ids[$0.1])]) })),
            ])))
        }
        return .object(fields)
    }

    func tasks(_ name: String, offset: Int, limit: Int, status: String?, wave: Int?, query: String?) throws -> JSONValue? {
        let key = ["t", name, String(offset), String(limit), status ?? "", wave.map(String.init) ?? "", query ?? ""].joined(separator: "\u{0}")
        return try cached(key) { try taskPage(name, offset: offset, limit: limit, status: status, wave: wave, query: query) }
    }

    private func taskPage(_ name: String, offset: Int, limit: Int, status: String?, wave: Int?, query: String?) throws -> JSONValue? {
        guard let w = try store.workflowViews().first(where: { $0.name == name }) else { return nil }
        let c = try countsOf(name)
        let runs: Int = { if case .int(let r)? = w.fields.first(where: { $0.0 == "runs" })?.1 { return r }; return 0 }()
        let g = try graph(name, runs: runs, total: c.reduce(0) { $0 + $1.1 }, running: Self.isRunning(w.fields))
        var order = g.order
        if let wave { order = order.filter { g.waveOf[$0] == wave } }
        if let query, !query.isEmpty { order = order.filter { g.ids[$0].localizedLowercase.contains(query.lowercased()) } }
        if let status, !status.isEmpty {
            let (codes, names) = try states(name, g)
            let code = names.firstIndex(of: status).map { Int8($0) } ?? -2
            order = order.filter { codes[$0] == code }
        }
        let limit = max(1, min(limit, 500))
        let offset = max(0, min(offset, order.count))
        let page = order[offset..<min(order.count, offset + limit)].map { g.ids[$0] }
        let rows = try store.taskViews(of: name, ids: page)
        return .object([
            ("total", .int(order.count)), ("offset", .int(offset)), ("limit", .int(limit)),
            ("tasks", .array(page.compactMap { id in rows[id].map { .object(withWave($0, g.wave(id))) } })),
        ])
    }

    private func withWave(_ fields: [(String, JSONValue)], _ wave: Int?) -> [(String, JSONValue)] {
        var f = fields
        f.insert(("wave", .of(wave)), at: 2)
        return f
    }

    /// Rows of changed tasks for a live `tasks` message (with their waves when known).
    func changedTasks(_ workflow: String, ids: [String]) throws -> [JSONValue] {
        let rows = try store.taskViews(of: workflow, ids: ids)
        let g = graphs[workflow]
        return ids.compactMap { id in rows[id].map { .object(withWave($0, g?.wave(id))) } }
    }

    func task(_ name: String, _ id: String) throws -> JSONValue? {
        guard let d = try store.taskDetail(of: name, id: id) else { return nil }
        var dependents: [String] = []
        // from the graph already read, when there is one
        var (ids, deps) = (graphs[name]?.ids ?? [], graphs[name]?.deps ?? [])
        if graphs[name] == nil { (ids, deps, _) = try store.taskGraph(of: name) }
        for (i, ds) in deps.enumerated() where ds.contains(id) { dependents.append(ids[i]) }
        return .object([("task", .object(withWave(d.task, graphs[name]?.wave(id)))),
                        ("deps", .array(d.deps.map { .string($0) })),
                        ("dependents", .array(dependents.sorted().map { .string($0) }))] + d.rest)
    }

    /// Where a task of a workflow tees its output (see ``TaskLogs``): under the folder the
    /// workflow last ran in.
    func logPath(_ workflow: String, _ task: String) throws -> String? {
        guard let w = try store.workflowViews().first(where: { $0.name == workflow }),
              case .string(let cwd)? = w.fields.first(where: { $0.0 == "cwd" })?.1 else { return nil }
        return TaskLogs.path(root: cwd, workflow: workflow, task: task)
    }

    /// A piece of a task's log: from `offset` (default: the last 256 KiB), at most 256 KiB.
    func log(_ workflow: String, _ task: String, offset: Int?) throws -> JSONValue? {
        guard try store.taskViews(of: workflow, ids: [task])[task] != nil else { return nil }
        guard let path = try logPath(workflow, task) else { return nil }
        let size = LogFile.size(path)
        guard let size else {
            return .object([("path", .string(path)), ("exists", .bool(false)), ("size", .int(0)), ("offset", .int(0)),
                            ("text", .string("")), ("more", .bool(false))])
        }
        let piece = LogFile.read(path, from: offset ?? max(0, size - LogFile.piece), size: size)
        // `bytes`: how much of the file the text is (a byte the text cannot hold reads as U+FFFD);
        // no `more` when all that is left is a character not yet written whole
        return .object([("path", .string(path)), ("exists", .bool(true)), ("size", .int(size)), ("offset", .int(piece.offset)),
                        ("bytes", .int(piece.bytes)), ("text", .string(piece.text)),
                        ("more", .bool(piece.bytes > 0 && piece.offset + piece.bytes < size))])
    }

    func spec(_ name: String) throws -> JSONValue? {
        lastLuaError = nil
        if let v = luaJSON("return qw.spec.view(...)", args: [name]) { return v }
        // qw.spec says why: no such spec, or a document it cannot read
        throw DashboardError(status: 404, lastLuaError ?? "no spec named '\(name)'")
    }

    func cost(since: Double?) throws -> JSONValue {
        func rows(_ by: String) throws -> JSONValue {
            .array(try store.costReport(by: by, since: since).prefix(by == "task" ? 50 : 1000).map { r in
                .object([("key", .string(r.key)), ("runs", .int(r.runs)), ("failed", .int(r.failed)), ("cost_usd", .number(r.costUSD)),
                         ("input_tokens", .int(r.inputTokens)), ("output_tokens", .int(r.outputTokens)),
                         ("cache_read_tokens", .int(r.cacheReadTokens)), ("cache_creation_tokens", .int(r.cacheCreationTokens)),
                         ("duration", .number(r.duration))])
            })
        }
        let totals = try store.costTotals()
        let (bucket, series) = try store.costSeries(since: since)
        var spent: [String: Double] = [:]
        for r in try store.costReport(by: "workflow", since: nil) { spent[r.key] = r.costUSD }
        let budgets = try store.workflowBudgets().map { b in
            JSONValue.object([("scope", .string("workflow " + b.workflow)), ("workflow", .string(b.workflow)),
                              ("budget_usd", .number(b.usd)), ("spent_usd", .number(spent[b.workflow] ?? 0))])
        }
        return .object([("total_usd", totals["total_usd"] ?? .number(0)), ("today_usd", totals["today_usd"] ?? .number(0)),
                        ("runs", totals["runs"] ?? .int(0)), ("since", .of(since)),
                        ("bucket", .number(bucket)), ("series", .array(series)),
                        ("by_agent", try rows("agent")), ("by_model", try rows("model")),
                        ("by_workflow", try rows("workflow")), ("by_task", try rows("task")),
                        ("budgets", .array(budgets))])
    }

    func events(limit: Int, before: Double?, after: String?, sources: Set<String>, kind: String?, workflow: String?) throws -> JSONValue {
        .array(try store.eventLog(limit: max(1, min(limit, 1000)), before: before, after: after, sources: sources, kind: kind,
                                  workflow: workflow).map(\.json))
    }

    /// Approves a spec's phase as `qw spec approve` does; recorded as an engine event.
    func approve(spec: String, phase: String) throws -> JSONValue {
        guard ["requirements", "design", "tasks"].contains(phase) else {
            throw DashboardError(status: 400, "phase must be requirements, design or tasks (got '\(phase)')")
        }
        let result = luaJSON("""
            local name, phase = ...
            local ok, r = pcall(qw.spec.approve, name, phase, { by = "dashboard" })
            if not ok then return { ok = false, error = tostring(r) } end
            return { ok = true, approval = qw.spec.approval(name, phase) }
            """, args: [spec, phase]) ?? .null
        let ok: Bool = { if case .raw(let t) = result { return t.contains("\"ok\":true") }; return false }()
        try? store.record(event: "dashboard approve", workflow: nil, task: nil,
                          data: Array(JSONValue.object([("spec", .string(spec)), ("phase", .string(phase)), ("ok", .bool(ok))]).text.utf8))
        return result
    }

    /// Runs Lua that returns one value, as JSON (nil when it fails; the error goes to the log).
    private func luaJSON(_ code: String, args: [String] = []) -> JSONValue? {
        do {
            guard let v = try runtime.lua.run(code, name: "=dashboard", args: args.map { .string(Array($0.utf8)) }).first else { return nil }
            return .raw(String(decoding: try JSON.encode(v), as: UTF8.self))
        } catch {
            lastLuaError = "\(error)"
            return nil
        }
    }
    var lastLuaError: String?
}

/// An answer other than 200, with the message the client sees.
struct DashboardError: Error {
    var status: Int
    var message: String
    init(status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
}

/// Reading a log that another process is writing.
enum LogFile {
    /// The most one answer or message carries.
    static let piece = 256 * 1024

    static func size(_ path: String) -> Int? {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : nil
    }

    /// The text from `from` (moved on past a character cut in two) up to `size`, at most
    /// ``piece`` bytes, ending before a character not yet written whole: the text, the
    /// offset it starts at and how many bytes it is.
    static func read(_ path: String, from: Int, size: Int) -> (text: String, offset: Int, bytes: Int) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return ("", from, 0) }
        defer { close(fd) }
        let start = max(0, min(from, size))
        let n = min(piece, size - start)
        var buf = [UInt8](repeating: 0, count: n)
        let got = n == 0 ? 0 : buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, off_t(start)) }
        guard got > 0 else { return ("", start, 0) }
        var lo = 0, hi = got
        while lo < hi && buf[lo] & 0xC0 == 0x80 { lo += 1 }
        // a sequence whose last bytes are not there yet waits for the next read
        var k = hi - 1, back = 0
        while k >= lo && buf[k] & 0xC0 == 0x80 && back < 3 { k -= 1; back += 1 }
        if k >= lo {
            let lead = buf[k]
            let need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
            if hi - k < need { hi = k }
        }
        return (String(decoding: buf[lo..<hi], as: UTF8.self), start + lo, hi - lo)
    }
}
