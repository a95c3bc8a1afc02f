internal import GRDB
internal import GRDBSQLite
import Glibc

/// Read-only views of the store as JSON, for the dashboard and `qw status --watch`: nothing
/// here writes, so a viewer never takes a lock that `qw run`, hooks or consumers wait on.
extension StateStore {
    /// SQLite's `PRAGMA data_version`: it changes when another connection commits.
    public func dataVersion() throws(StoreError) -> Int64 {
        try readTable("read the data version") { db in try Int64.fetchOne(db, sql: "PRAGMA data_version") ?? 0 }
    }

    /// The highest ids of the event log and of the hook events: where a live view starts.
    public func logPositions() throws(StoreError) -> (events: Int64, hooks: Int64) {
        try readTable("read the event log") { db in
            (try Int64.fetchOne(db, sql: "SELECT coalesce(max(id), 0) FROM events") ?? 0,
             try Int64.fetchOne(db, sql: "SELECT coalesce(max(id), 0) FROM hook_events") ?? 0)
        }
    }

    // MARK: workflows and tasks

    /// Each workflow, newest first, with its last run's times and its agents' spend (task
    /// counts come from ``taskCounts(of:)``).
    public func workflowViews() throws(StoreError) -> [(name: String, fields: [(String, JSONValue)])] {
        try readTable("list workflows") { db in
            var cost: [String: Double] = [:]
            for r in try Row.fetchAll(db, sql: "SELECT workflow, sum(cost_usd) FROM agent_runs WHERE workflow IS NOT NULL GROUP BY workflow") {
                cost[r[0]] = r[1]
            }
            return try Row.fetchAll(db, sql: """
                SELECT w.name, w.status, w.runs, w.created_at, w.updated_at, r.started_at, r.finished_at, w.script, w.cwd
                FROM workflows w LEFT JOIN runs r ON r.id = (SELECT max(id) FROM runs WHERE workflow = w.name)
                ORDER BY w.updated_at DESC
                """).map { r in
                let name: String = r[0]
                return (name, [("name", .string(name)), ("status", .string(r[1])), ("runs", .int(r[2])),
                               ("created_at", .of(r[3] as Double?)), ("updated_at", .of(r[4] as Double?)),
                               ("started_at", .of(r[5] as Double?)), ("finished_at", .of(r[6] as Double?)),
                               ("script", .of(r[7] as String?)), ("cwd", .of(r[8] as String?)),
                               ("cost_usd", .number(cost[name] ?? 0))])
            }
        }
    }

    /// How many of a workflow's tasks are in each state, by state: as its runs keep them in
    /// its row (one read, however many tasks), else counted from the rows.
    public func taskCounts(of workflow: String) throws(StoreError) -> [(String, Int)] {
        try readTable("count the tasks of '\(workflow)'") { db in
            try keptCounts(db, workflow) ?? countedTasks(db, workflow)
        }
    }

    /// The counts as its runs keep them in its row; nil when they are not known.
    public func keptTaskCounts(of workflow: String) throws(StoreError) -> [(String, Int)]? {
        try readTable("read the task counts of '\(workflow)'") { db in try keptCounts(db, workflow) }
    }

    /// The counts, always counted from the rows (what the kept counts must equal).
    public func taskCountsFromRows(of workflow: String) throws(StoreError) -> [(String, Int)] {
        try readTable("count the tasks of '\(workflow)'") { db in try countedTasks(db, workflow) }
    }

    private func keptCounts(_ db: Database, _ workflow: String) throws -> [(String, Int)]? {
        try String.fetchOne(db, sql: "SELECT task_counts FROM workflows WHERE name = ?", arguments: [workflow])
            .flatMap(Self.counts(fromText:))
    }

    private func countedTasks(_ db: Database, _ workflow: String) throws -> [(String, Int)] {
        try Row.fetchAll(db, sql: "SELECT status, count(*) FROM wf_tasks WHERE workflow = ? GROUP BY status ORDER BY status",
                         arguments: [workflow]).map { ($0[0], $0[1]) }
    }

    /// The counts of ``countsText(_:)``, by state; nil when the text is not such a list.
    static func counts(fromText text: String) -> [(String, Int)]? {
        var out: [(String, Int)] = []
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "\t")
            guard parts.count == 2, let n = Int(parts[1]), n >= 0 else { return nil }
            if n > 0 { out.append((String(parts[0]), n)) }
        }
        return out.sorted { $0.0 < $1.0 }
    }

    /// A workflow's tasks with their dependencies and states, in the order of their ids.
    public func taskGraph(of workflow: String) throws(StoreError) -> (ids: [String], deps: [[String]], status: [String]) {
        try readTable("read the tasks of '\(workflow)'") { db in
            var ids: [String] = [], deps: [[String]] = [], status: [String] = []
            let rows = try Row.fetchCursor(db, sql: "SELECT id, status, deps FROM wf_tasks WHERE workflow = ? ORDER BY id", arguments: [workflow])
            while let r = try rows.next() {
                ids.append(r[0])
                status.append(r[1])
                deps.append((r[2] as String?).map(WorkflowIO.decodeLines) ?? [])
            }
            return (ids, deps, status)
        }
    }

    /// A digest of a workflow's tasks and their dependencies (FNV-1a over the bytes as
    /// stored) and their number: equal when a new run recorded the same graph. Read from
    /// SQLite's own buffers, without making strings: a tenth of what reading the graph costs.
    public func taskGraphDigest(of workflow: String) throws(StoreError) -> (count: Int, digest: UInt64) {
        try readTable("read the tasks of '\(workflow)'") { db in
            let st = try db.makeStatement(sql: "SELECT id, deps FROM wf_tasks WHERE workflow = ? ORDER BY id")
            let raw = RawStatement(st.sqliteStatement, db: db.sqliteConnection)
            raw.bind(1, workflow)
            var h: UInt64 = 0xcbf2_9ce4_8422_2325, n = 0
            func mix(_ col: Int32) {
                if let p = sqlite3_column_text(st.sqliteStatement, col) {
                    let count = Int(sqlite3_column_bytes(st.sqliteStatement, col))
                    for i in 0..<count { h = (h ^ UInt64(p[i])) &* 0x100_0000_01b3 }
                }
                h = (h ^ 0xff) &* 0x100_0000_01b3    // (a byte no text holds: ends the field)
            }
            while true {
                let rc = sqlite3_step(st.sqliteStatement)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else {
                    throw StoreError(message: db.sqliteConnection.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "SQLite error \(rc)")
                }
                mix(0)
                mix(1)
                n += 1
            }
            return (n, h)
        }
    }

    /// The state of each of a workflow's tasks `ids` (in the store's order, by id, as
    /// ``taskGraph(of:)`` lists them; `index` finds one by id), as an index into `names`,
    /// which gains any state it lacks; -1 for a task the store no longer has. Read from
    /// SQLite's buffers: no string is made for a task whose id is where it was expected.
    public func taskStateCodes(of workflow: String, ids: [String], index: [String: Int], names: inout [String]) throws(StoreError) -> [Int8] {
        var known = names
        let out = try readTable("read the tasks of '\(workflow)'") { db -> [Int8] in
            let st = try db.makeStatement(sql: "SELECT id, status FROM wf_tasks WHERE workflow = ? ORDER BY id")
            let h = st.sqliteStatement
            RawStatement(h, db: db.sqliteConnection).bind(1, workflow)
            var out = [Int8](repeating: -1, count: ids.count)
            var at = 0
            func bytes(_ col: Int32) -> UnsafeBufferPointer<UInt8> {
                UnsafeBufferPointer(start: sqlite3_column_text(h, col), count: Int(sqlite3_column_bytes(h, col)))
            }
            while true {
                let rc = sqlite3_step(h)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else {
                    throw StoreError(message: db.sqliteConnection.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "SQLite error \(rc)")
                }
                let id = bytes(0), status = bytes(1)
                var code = known.firstIndex { $0.utf8.elementsEqual(status) } ?? -1
                if code < 0 {
                    known.append(String(decoding: status, as: UTF8.self))
                    code = known.count - 1
                }
                if at < ids.count, ids[at].utf8.elementsEqual(id) {
                    out[at] = Int8(clamping: code)
                } else if let i = index[String(decoding: id, as: UTF8.self)] {
                    out[i] = Int8(clamping: code)
                }
                at += 1
            }
            return out
        }
        names = known
        return out
    }

    /// A workflow's tasks in one state, those that started last first: (id, started, error).
    public func tasks(of workflow: String, inState state: String, limit: Int) throws(StoreError) -> [(id: String, startedAt: Double?, error: String?)] {
        try readTable("read the tasks of '\(workflow)'") { db in
            try Row.fetchAll(db, sql: """
                SELECT id, started_at, error FROM wf_tasks WHERE workflow = ? AND status = ? ORDER BY started_at DESC LIMIT ?
                """, arguments: [workflow, state, limit]).map { ($0[0], $0[1], $0[2]) }
        }
    }

    static let taskColumns = "id, status, attempts, started_at, finished_at, duration, code, max_rss, cpu_time, error"

    static func taskFields(_ r: Row) -> [(String, JSONValue)] {
        [("id", .string(r[0])), ("status", .string(r[1])), ("attempts", .int(r[2])),
         ("started_at", .of(r[3] as Double?)), ("finished_at", .of(r[4] as Double?)), ("duration", .of(r[5] as Double?)),
         ("code", .of(r[6] as Int?)), ("max_rss", .of(r[7] as Int?)), ("cpu_time", .of(r[8] as Double?)),
         ("error", .of(r[9] as String?))]
    }

    /// The rows of the tasks named, by id (those that exist).
    public func taskViews(of workflow: String, ids: [String]) throws(StoreError) -> [String: [(String, JSONValue)]] {
        try readTable("read the tasks of '\(workflow)'") { db in
            var out: [String: [(String, JSONValue)]] = [:]
            var at = 0
            while at < ids.count {
                let chunk = Array(ids[at..<min(ids.count, at + 500)])
                at += chunk.count
                let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                let args = StatementArguments([workflow] + chunk)
                for r in try Row.fetchAll(db, sql: "SELECT \(Self.taskColumns) FROM wf_tasks WHERE workflow = ? AND id IN (\(marks))",
                                          arguments: args) {
                    out[r[0]] = Self.taskFields(r)
                }
            }
            return out
        }
    }

    /// One task as the dashboard shows it: its row, attempts, result (the last 64 KiB of each
    /// output), agent runs and what the hooks saw its agents do. Nil when there is no such task.
    public func taskDetail(of workflow: String, id: String) throws(StoreError) -> (task: [(String, JSONValue)], deps: [String], rest: [(String, JSONValue)])? {
        try readTable("read task '\(id)' of '\(workflow)'") { db in
            guard let r = try Row.fetchOne(db, sql: "SELECT \(Self.taskColumns), deps, result FROM wf_tasks WHERE workflow = ? AND id = ?",
                                           arguments: [workflow, id]) else { return nil }
            let deps = (r[10] as String?).map(WorkflowIO.decodeLines) ?? []
            var rest: [(String, JSONValue)] = []
            rest.append(("attempts", .array(try Row.fetchAll(db, sql: """
                SELECT attempt, ok, finished_at, duration, code, max_rss, cpu_time, error FROM attempts
                WHERE workflow = ? AND task = ? ORDER BY id DESC LIMIT 100
                """, arguments: [workflow, id]).reversed().map { a in
                .object([("attempt", .int(a[0])), ("ok", .bool(a[1])), ("finished_at", .of(a[2] as Double?)),
                         ("duration", .of(a[3] as Double?)), ("code", .of(a[4] as Int?)), ("max_rss", .of(a[5] as Int?)),
                         ("cpu_time", .of(a[6] as Double?)), ("error", .of(a[7] as String?))])
            })))
            rest.append(("result", Self.resultView(r[11] as String?)))
            rest.append(("agent_runs", .array(try Row.fetchAll(db, sql: """
                SELECT agent, model, ok, cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
                       duration, turns, started_at, finished_at, error, session
                FROM agent_runs WHERE workflow = ? AND task = ? ORDER BY id LIMIT 200
                """, arguments: [workflow, id]).map { a in
                .object([("agent", .of(a[0] as String?)), ("model", .of(a[1] as String?)), ("ok", .bool(a[2])),
                         ("cost_usd", .number(a[3])), ("input_tokens", .int(a[4])), ("output_tokens", .int(a[5])),
                         ("cache_read_tokens", .int(a[6])), ("cache_creation_tokens", .int(a[7])),
                         ("duration", .of(a[8] as Double?)), ("turns", .of(a[9] as Int?)), ("started_at", .number(a[10])),
                         ("finished_at", .number(a[11])), ("error", .of(a[12] as String?)), ("session", .of(a[13] as String?))])
            })))
            rest.append(("activity", .array(try Row.fetchAll(db, sql: """
                SELECT * FROM (SELECT id, at, event, tool, summary, outcome, reason, agent FROM hook_events
                               WHERE workflow = ? AND task = ? ORDER BY id DESC LIMIT 500) ORDER BY id
                """, arguments: [workflow, id]).map { h in
                .object([("id", .int(h[0])), ("at", .number(h[1])), ("event", .string(h[2])), ("tool", .of(h[3] as String?)),
                         ("summary", .of(h[4] as String?)), ("outcome", .string(h[5])), ("reason", .of(h[6] as String?)),
                         ("agent", .of(h[7] as String?))])
            })))
            return (Self.taskFields(r), deps, rest)
        }
    }

    /// stdout, stderr and text of a stored result, each cut to its last 64 KiB.
    static func resultView(_ json: String?) -> JSONValue {
        guard let json, json.hasPrefix("{") else { return json.map { .object([("value", .raw(Self.cut($0)))]) } ?? .null }
        // the result is JSON the engine wrote; only its text fields are shown, found by name
        var fields: [(String, JSONValue)] = []
        for key in ["stdout", "stderr", "text", "error"] {
            if let s = Self.stringField(json, key) { fields.append((key, .string(Self.tail(s, 65536)))) }
        }
        return .object(fields)
    }

    private static func cut(_ s: String) -> String { s.utf8.count <= 65536 ? s : "null" }

    /// The last `limit` bytes of `s` (from a character's start), marked when cut.
    static func tail(_ s: String, _ limit: Int) -> String {
        let bytes = Array(s.utf8)
        guard bytes.count > limit else { return s }
        var from = bytes.count - limit
        while from < bytes.count, bytes[from] & 0xC0 == 0x80 { from += 1 }
        return "[... \(from) bytes before this ...]\n" + String(decoding: bytes[from...], as: UTF8.self)
    }

    /// A top-level string field of a JSON object, decoded (nil when it has none).
    public static func stringField(_ json: String, _ key: String) -> String? {
        let needle = Array(("\"" + key + "\":").utf8)
        let bytes = Array(json.utf8)
        var depth = 0, i = 0, inString = false
        while i < bytes.count {
            let c = bytes[i]
            if inString {
                if c == UInt8(ascii: "\\") { i += 2; continue }
                if c == UInt8(ascii: "\"") { inString = false }
                i += 1
                continue
            }
            if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") { depth += 1 }
            else if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") { depth -= 1 }
            else if c == UInt8(ascii: "\"") {
                if depth == 1, i + needle.count < bytes.count, Array(bytes[i..<i + needle.count]) == needle,
                   bytes[i + needle.count] == UInt8(ascii: "\"") {
                    return decodeString(bytes, from: i + needle.count + 1)
                }
                inString = true
            }
            i += 1
        }
        return nil
    }

    private static func decodeString(_ b: [UInt8], from start: Int) -> String? {
        var out: [UInt8] = []
        var i = start
        func hex(_ at: Int) -> UInt32? {
            guard at + 4 <= b.count else { return nil }
            return UInt32(String(decoding: b[at..<at + 4], as: UTF8.self), radix: 16)
        }
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            guard i + 1 < b.count else { return nil }
            let e = b[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "b"): out.append(8)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "u"):
                guard var v = hex(i) else { return nil }
                i += 4
                if (0xD800..<0xDC00).contains(v), i + 6 <= b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u"),
                   let lo = hex(i + 2), (0xDC00..<0xE000).contains(lo) {
                    v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00)
                    i += 6
                }
                out.append(contentsOf: Array(String(Unicode.Scalar(v).map(Character.init) ?? "\u{FFFD}").utf8))
            default: out.append(e)
            }
        }
        return nil
    }

    // MARK: the event log

    /// One row of the merged event log.
    public struct EventView: Sendable {
        public var cursor: String
        public var source: String
        public var id: Int64
        public var at: Double
        public var kind: String
        public var workflow: String?
        public var task: String?
        public var detail: String?

        public var json: JSONValue {
            .object([("cursor", .string(cursor)), ("source", .string(source)), ("id", .int(Int(id))), ("at", .number(at)),
                     ("kind", .string(kind)), ("workflow", .of(workflow)), ("task", .of(task)), ("detail", .of(detail))])
        }
    }

    /// Engine events after `afterID`, oldest first, a row of batched successes read as one
    /// event per task; at most about `limit` rows.
    public func engineEvents(afterID: Int64, limit: Int = 2000) throws(StoreError) -> [EventView] {
        try engineEventRows(afterID: afterID, limit: limit).flatMap { $0.views() }
    }

    /// Engine events after `afterID` as stored, oldest first, at most `limit` rows: a batch
    /// of successes stays one row until its events are asked for (a live view of a run of
    /// 100,000 tasks wants the newest few hundred of them, not all).
    public func engineEventRows(afterID: Int64, limit: Int = 2000) throws(StoreError) -> [EventRow] {
        try readTable("read the event log") { db in
            try Row.fetchAll(db, sql: "SELECT id, at, kind, workflow, task, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
                             arguments: [afterID, limit]).map(EventRow.init)
        }
    }

    /// A row of the event log: one event, or a batch of "task succeeded" events (a line per
    /// task: its id, escaped as in ``WorkflowIO``, a tab, its event data).
    public struct EventRow: Sendable {
        init(_ r: Row) {
            (id, at, kind, workflow, task, data) = (r[0], r[1], r[2], r[3], r[4], r[5])
        }

        public var id: Int64
        public var at: Double
        public var kind: String
        public var workflow: String?
        public var task: String?
        public var data: String?

        /// Where each line of a batch is in `data`'s bytes: its start, its tab, its end.
        private var lines: [(start: Int, tab: Int, end: Int)] {
            guard kind == StateStore.successBatch, var d = data else { return [] }
            // memchr, not a loop over the bytes: a batch of 20,000 successes is 1.7 MB, and
            // the dashboard reads every batch of a run
            return d.withUTF8 { b in
                var out: [(start: Int, tab: Int, end: Int)] = []
                guard let base = b.baseAddress else { return out }
                var start = 0
                while start < b.count {
                    let end = memchr(base + start, 10, b.count - start).map { UnsafePointer<UInt8>($0.assumingMemoryBound(to: UInt8.self)) - base } ?? b.count
                    if end > start, let t = memchr(base + start, 9, end - start) {
                        out.append((start, UnsafePointer<UInt8>(t.assumingMemoryBound(to: UInt8.self)) - base, end))
                    }
                    start = end + 1
                }
                return out
            }
        }

        /// Whether it is a batch of successes (of many tasks).
        public var isBatch: Bool { kind == StateStore.successBatch && data != nil }

        private func name(_ b: UnsafeBufferPointer<UInt8>, _ l: (start: Int, tab: Int, end: Int)) -> String {
            let raw = UnsafeBufferPointer(rebasing: b[l.start..<l.tab])
            let name = String(decoding: raw, as: UTF8.self)
            return raw.contains(92) ? WorkflowIO.unescape(name) : name
        }

        private func view(_ b: UnsafeBufferPointer<UInt8>, _ l: (start: Int, tab: Int, end: Int), _ n: Int) -> EventView {
            EventView(cursor: "e:\(id):\(n)", source: "engine", id: id, at: at, kind: "task succeeded", workflow: workflow,
                      task: name(b, l), detail: String(decoding: UnsafeBufferPointer(rebasing: b[(l.tab + 1)..<l.end]), as: UTF8.self))
        }

        /// Its events, oldest first.
        public func views() -> [EventView] {
            guard isBatch, var d = data else {
                return [EventView(cursor: "e:\(id)", source: "engine", id: id, at: at, kind: kind, workflow: workflow, task: task, detail: data)]
            }
            let lines = self.lines
            return d.withUTF8 { b in lines.enumerated().map { view(b, $1, $0) } }
        }

        /// The tasks its events are about, oldest first, until `body` returns false.
        public func forEachTask(_ body: (String) -> Bool) {
            guard isBatch, var d = data else {
                if let task { _ = body(task) }
                return
            }
            let lines = self.lines
            d.withUTF8 { b in
                for l in lines where !body(name(b, l)) { return }
            }
        }

        /// Its newest events about the tasks `accept` takes (nil: about no task), newest
        /// first, at most `limit`.
        public func newest(_ limit: Int, where accept: (String?) -> Bool) -> [EventView] {
            guard limit > 0 else { return [] }
            guard isBatch, var d = data else { return accept(task) ? views() : [] }
            let lines = self.lines
            return d.withUTF8 { b in
                var out: [EventView] = []
                for n in lines.indices.reversed() where accept(name(b, lines[n])) {
                    out.append(view(b, lines[n], n))
                    if out.count == limit { break }
                }
                return out
            }
        }
    }

    /// Hook events after `afterID`, oldest first.
    public func hookEventViews(afterID: Int64, limit: Int = 2000) throws(StoreError) -> [EventView] {
        try readTable("read the hook events") { db in
            try Row.fetchAll(db, sql: """
                SELECT id, at, event, workflow, task, tool, summary, outcome, reason, agent, session
                FROM hook_events WHERE id > ? ORDER BY id LIMIT ?
                """, arguments: [afterID, limit]).map(Self.hookView)
        }
    }

    static func hookView(_ r: Row) -> EventView {
        let id: Int64 = r[0]
        let detail: JSONValue = .object([("tool", .of(r[5] as String?)), ("summary", .of(r[6] as String?)),
                                         ("outcome", .string(r[7])), ("reason", .of(r[8] as String?)),
                                         ("agent", .of(r[9] as String?)), ("session", .of(r[10] as String?))])
        return EventView(cursor: "h:\(id)", source: "hook", id: id, at: r[1], kind: "hook " + (r[2] as String), workflow: r[3],
                         task: r[4], detail: detail.text)
    }

    /// Suggestions whose last change was at or after `since`, as events ("suggestion STATE").
    public func suggestionEvents(since: Double, limit: Int = 500) throws(StoreError) -> [EventView] {
        try readTable("read the suggestion queue") { db in
            try Row.fetchAll(db, sql: """
                SELECT id, max(created_at, coalesce(started_at, 0), coalesce(finished_at, 0)) AS changed, state, argv, attempts, error, spec
                FROM suggestions WHERE changed >= ? ORDER BY changed LIMIT ?
                """, arguments: [since, limit]).map(Self.suggestionView)
        }
    }

    static func suggestionView(_ r: Row) -> EventView {
        let id: Int64 = r[0]
        let detail: JSONValue = .object([("argv", .raw(r[3])), ("attempts", .int(r[4])), ("error", .of(r[5] as String?)),
                                         ("spec", .of(r[6] as String?))])
        return EventView(cursor: "s:\(id):\(r[2] as String):\(r[4] as Int)", source: "suggestion", id: id, at: r[1],
                         kind: "suggestion " + (r[2] as String), workflow: nil, task: nil, detail: detail.text)
    }

    /// The merged log, newest first: rows before `before` (a time) from the sources named,
    /// whose kind contains `kind` and whose workflow is `workflow` when given. With `after`
    /// (the cursor of the last row of a page), the rows at `before` itself that come after
    /// that row too: the lines of a batch share one time.
    public func eventLog(limit: Int, before: Double?, after: String? = nil, sources: Set<String>, kind: String?,
                         workflow: String?) throws(StoreError) -> [EventView] {
        try readTable("read the event log") { db in
            let before = before ?? .infinity
            let inclusive = after != nil && before != .infinity
            let kind = kind?.lowercased()
            func keep(_ e: EventView) -> Bool {
                (e.at < before || inclusive && e.at == before)
                    && (kind.map { e.kind.lowercased().contains($0) } ?? true) && (workflow.map { e.workflow == $0 } ?? true)
            }
            var out: [EventView] = []
            // newest first through each source by id, in chunks, until `limit` rows pass
            func scan(_ sql: String, _ map: (Row) -> [EventView]) throws {
                var upper = Int64.max
                var found = 0
                while found < limit {
                    let rows = try Row.fetchAll(db, sql: sql, arguments: [upper, before == .infinity ? 1e300 : inclusive ? before.nextUp : before,
                                                                         workflow, 500])
                    if rows.isEmpty { break }
                    for r in rows {
                        upper = r[0]
                        for e in map(r).reversed() where keep(e) {
                            out.append(e)
                            // (rows at `before` itself are all taken: the page's last row is among them)
                            if e.at < before { found += 1 }
                        }
                    }
                    if rows.count < 500 { break }
                }
            }
            if sources.contains("engine") {
                try scan("SELECT id, at, kind, workflow, task, data FROM events WHERE id < ? AND at < ? AND (?3 IS NULL OR workflow = ?3) ORDER BY id DESC LIMIT ?",
                         { EventRow($0).views() })
            }
            if sources.contains("hook") {
                try scan("""
                    SELECT id, at, event, workflow, task, tool, summary, outcome, reason, agent, session
                    FROM hook_events WHERE id < ? AND at < ? AND (?3 IS NULL OR workflow = ?3) ORDER BY id DESC LIMIT ?
                    """, { [Self.hookView($0)] })
            }
            if sources.contains("suggestion") && workflow == nil {
                try scan("""
                    SELECT id, max(created_at, coalesce(started_at, 0), coalesce(finished_at, 0)) AS changed, state, argv, attempts, error, spec
                    FROM suggestions WHERE id < ? AND changed < ? AND ?3 IS NULL ORDER BY id DESC LIMIT ?
                    """, { [Self.suggestionView($0)] })
            }
            // by time; at one time (the lines of a batch) in the order each source gave them,
            // newest first (a cursor's text would put e:6:999 after e:6:1199)
            var sorted = out.enumerated().sorted { $0.element.at != $1.element.at ? $0.element.at > $1.element.at : $0.offset < $1.offset }
                .map(\.element)
            if inclusive, let after, let at = sorted.firstIndex(where: { $0.cursor == after }) {
                sorted.removeFirst(at + 1)
            } else if inclusive {
                sorted.removeAll { $0.at == before }
            }
            return Array(sorted.prefix(limit))
        }
    }

    // MARK: agents, the gate, the queue

    /// The agent runs going on now (from the sessions table the driver keeps), newest first.
    public func liveAgents() throws(StoreError) -> [JSONValue] {
        try readTable("read the live agents") { db in
            try Row.fetchAll(db, sql: "SELECT run, workflow, task, agent, session, started_at FROM agent_live ORDER BY started_at DESC LIMIT 200").map { r in
                .object([("run", .string(r[0])), ("workflow", .of(r[1] as String?)), ("task", .of(r[2] as String?)),
                         ("agent", .of(r[3] as String?)), ("session", .string(r[4])), ("started_at", .number(r[5]))])
            }
        }
    }

    /// The gate as it stands, without the clean-up ``gateStatus()`` does: holders whose
    /// process is gone are not counted.
    public func gateView() throws(StoreError) -> [(String, JSONValue)] {
        try readTable("read the agent gate") { db in
            let row = try Row.fetchOne(db, sql: "SELECT closed_until, probing, rate, window FROM agent_gate WHERE id = 1")
            var running = 0
            for r in try Row.fetchAll(db, sql: "SELECT pid, start_ticks FROM agent_holders") where AgentGate.isAlive(r[0], ticks: r[1]) {
                running += 1
            }
            let until: Double = row?[0] ?? 0, rate: Double = row?[2] ?? 0, window: Double = row?[3] ?? 0
            return [("running", .int(running)), ("closed_until", until > monotonicWallClock() ? .number(until) : .null),
                    ("probing", .bool(row?[1] ?? false)), ("rate", rate > 0 ? .number(rate) : .null),
                    ("window", window > 0 ? .number(window) : .null)]
        }
    }

    /// Spend in all, today (UTC) and the number of runs.
    public func costTotals() throws(StoreError) -> JSONValue {
        try readTable("read the cost ledger") { db in
            let day = (monotonicWallClock() / 86400).rounded(.down) * 86400
            let r = try Row.fetchOne(db, sql: """
                SELECT coalesce(sum(cost_usd), 0), coalesce(sum(CASE WHEN finished_at >= ? THEN cost_usd END), 0), count(*) FROM agent_runs
                """, arguments: [day])!
            return .object([("total_usd", .number(r[0])), ("today_usd", .number(r[1])), ("runs", .int(r[2]))])
        }
    }

    /// Spend over time in at most 200 buckets of a round size (a minute, 5 minutes, ... a day).
    public func costSeries(since: Double?) throws(StoreError) -> (bucket: Double, series: [JSONValue]) {
        try readTable("read the cost ledger") { db in
            let since = since ?? 0
            guard let span = try Row.fetchOne(db, sql: "SELECT min(finished_at), max(finished_at) FROM agent_runs WHERE finished_at >= ?",
                                              arguments: [since]),
                  let lo = span[0] as Double?, let hi = span[1] as Double? else { return (3600, []) }
            let sizes: [Double] = [60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400]
            let bucket = sizes.first { (hi - lo) / $0 < 200 } ?? 30 * 86400
            let rows = try Row.fetchAll(db, sql: """
                SELECT CAST(finished_at / ?1 AS INTEGER) * ?1 AS t, sum(cost_usd), count(*) FROM agent_runs
                WHERE finished_at >= ?2 GROUP BY t ORDER BY t
                """, arguments: [bucket, since])
            return (bucket, rows.map { .object([("t", .number($0[0])), ("usd", .number($0[1])), ("runs", .int($0[2]))]) })
        }
    }

    /// The budget each workflow last ran with (from its "workflow started" event), by name.
    public func workflowBudgets() throws(StoreError) -> [(workflow: String, usd: Double)] {
        try readTable("read the workflows' budgets") { db in
            try Row.fetchAll(db, sql: """
                SELECT workflow, json_extract(data, '$.budget_usd') FROM events
                WHERE id IN (SELECT max(id) FROM events WHERE kind = 'workflow started' GROUP BY workflow)
                  AND json_valid(data) AND json_extract(data, '$.budget_usd') IS NOT NULL
                """).map { ($0[0], $0[1]) }
        }
    }
}
