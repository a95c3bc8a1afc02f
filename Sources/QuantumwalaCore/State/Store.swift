import GRDB
import Glibc

/// A value in the store with the version it was read at (versions grow with every write).
public struct VersionedValue: Sendable, Equatable {
    /// The value as JSON text.
    public var json: [UInt8]
    public var version: Int64
}

/// An error the store reports, with what was being done and where the database is.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// The durable state: SQLite in WAL mode (through GRDB), shared by every `qw` process of a
/// project.
///
/// Writes are optimistic: a reader notes the versions it read, and ``commit(sets:deletes:expect:)``
/// applies its writes in one IMMEDIATE transaction only if those versions are unchanged, so
/// concurrent read-modify-writes in several processes lose no update (the loser retries).
public final class StateStore {
    public let path: String
    private let db: DatabaseQueue

    /// Opens (creating it and its folder when needed) and migrates the store at `path`.
    ///
    /// - Throws: ``StoreError`` naming the path and SQLite's reason.
    public init(path: String) throws(StoreError) {
        self.path = path
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            Self.makeDirectories(String(path[..<slash]))
        }
        var config = Configuration()
        config.journalMode = .wal
        config.busyMode = .timeout(30)  // other qw processes hold the write lock only briefly
        config.label = "qw.state"
        // Processes opening a new store at once would each see it unmigrated: an exclusive
        // flock on a file beside it lets one migrate first. (Not the database file itself:
        // closing any descriptor of that file drops the locks SQLite holds on it.)
        let lock = open(path + "-migrate.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if lock >= 0 { flock(lock, LOCK_EX) }
        defer {
            if lock >= 0 {
                flock(lock, LOCK_UN)
                close(lock)
            }
        }
        do {
            db = try DatabaseQueue(path: path, configuration: config)
            try db.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = NORMAL")  // WAL: durable at checkpoints, never corrupt
            }
            try Self.migrator.migrate(db)
        } catch {
            throw StoreError(message: "cannot open the state store \(path): \(error)")
        }
    }

    /// The schema, one migration per version; applied in order, never edited once shipped.
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1: key-value state and the event log") { db in
            try db.execute(sql: """
                CREATE TABLE kv (
                    key TEXT PRIMARY KEY NOT NULL,
                    value TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    updated_at REAL NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE events (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    at REAL NOT NULL,
                    kind TEXT NOT NULL,
                    workflow TEXT,
                    task TEXT,
                    data TEXT
                );
                CREATE INDEX events_by_workflow ON events (workflow, id);
                CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
                INSERT INTO meta VALUES ('version_clock', 0);
                """)
        }
        m.registerMigration("v2: workflows and their tasks") { db in
            try db.execute(sql: """
                CREATE TABLE workflows (
                    name TEXT PRIMARY KEY NOT NULL,
                    script TEXT,
                    args TEXT,
                    cwd TEXT,
                    status TEXT NOT NULL,
                    runs INTEGER NOT NULL DEFAULT 0,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE wf_tasks (
                    workflow TEXT NOT NULL,
                    id TEXT NOT NULL,
                    fingerprint TEXT NOT NULL,
                    status TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    started_at REAL,
                    finished_at REAL,
                    duration REAL,
                    code INTEGER,
                    max_rss INTEGER,
                    cpu_time REAL,
                    error TEXT,
                    result TEXT,
                    PRIMARY KEY (workflow, id)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v3: runs of workflows and attempts of tasks") { db in
            try db.execute(sql: """
                CREATE TABLE runs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    workflow TEXT NOT NULL,
                    started_at REAL NOT NULL,
                    finished_at REAL,
                    status TEXT NOT NULL
                );
                CREATE INDEX runs_by_workflow ON runs (workflow, id);
                CREATE TABLE attempts (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    run INTEGER NOT NULL,
                    workflow TEXT NOT NULL,
                    task TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    ok INTEGER NOT NULL,
                    finished_at REAL NOT NULL,
                    duration REAL,
                    code INTEGER,
                    max_rss INTEGER,
                    cpu_time REAL,
                    error TEXT
                );
                CREATE INDEX attempts_by_task ON attempts (workflow, task, id);
                """)
        }
        return m
    }

    private static func makeDirectories(_ dir: String) {
        var path = dir.hasPrefix("/") ? "" : "."
        for part in dir.split(separator: "/") {
            path += "/" + part
            mkdir(path, 0o755)
        }
    }

    /// The value and version of `key`, or nil.
    public func get(_ key: String) throws(StoreError) -> VersionedValue? {
        do {
            return try db.read { db in
                try Row.fetchOne(db, sql: "SELECT value, version FROM kv WHERE key = ?", arguments: [key]).map {
                    VersionedValue(json: Array(($0["value"] as String).utf8), version: $0["version"])
                }
            }
        } catch {
            throw StoreError(message: "state: cannot read '\(key)' from \(path): \(error)")
        }
    }

    /// Keys starting with `prefix`, sorted.
    public func keys(prefix: String) throws(StoreError) -> [String] {
        do {
            return try db.read { db in
                // a range scan on the primary key: prefix <= key < prefix + U+10FFFF
                try String.fetchAll(db, sql: "SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                                    arguments: [prefix, prefix + "\u{10FFFF}"])
            }
        } catch {
            throw StoreError(message: "state: cannot list keys in \(path): \(error)")
        }
    }

    /// Writes `sets` and removes `deletes` in one transaction, if every key in `expect` still
    /// has the version given there (0: absent).
    ///
    /// - Returns: false (and writes nothing) when another writer got there first.
    public func commit(sets: [(String, [UInt8])], deletes: [String], expect: [String: Int64]) throws(StoreError) -> Bool {
        do {
            return try db.writeWithoutTransaction { db in
                var ok = true
                try db.inTransaction(.immediate) {
                    for (key, version) in expect {
                        let current = try Int64.fetchOne(db, sql: "SELECT version FROM kv WHERE key = ?", arguments: [key]) ?? 0
                        if current != version {
                            ok = false
                            return .rollback
                        }
                    }
                    let clock = try Int64.fetchOne(db, sql: "UPDATE meta SET value = value + 1 WHERE name = 'version_clock' RETURNING value") ?? 1
                    let now = Double(time(nil))
                    for (key, json) in sets {
                        try db.execute(sql: "INSERT INTO kv (key, value, version, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version, updated_at = excluded.updated_at",
                                       arguments: [key, String(decoding: json, as: UTF8.self), clock, now])
                    }
                    for key in deletes {
                        try db.execute(sql: "DELETE FROM kv WHERE key = ?", arguments: [key])
                    }
                    return .commit
                }
                return ok
            }
        } catch {
            throw StoreError(message: "state: cannot write to \(path): \(error)")
        }
    }

    /// Appends an event to the log.
    public func record(event kind: String, workflow: String? = nil, task: String? = nil, data: [UInt8]? = nil) throws(StoreError) {
        do {
            try db.write { db in
                try db.execute(sql: "INSERT INTO events (at, kind, workflow, task, data) VALUES (?, ?, ?, ?, ?)",
                               arguments: [monotonicWallClock(), kind, workflow, task, data.map { String(decoding: $0, as: UTF8.self) }])
            }
        } catch {
            throw StoreError(message: "state: cannot record an event in \(path): \(error)")
        }
    }

    // MARK: Workflows

    /// A workflow as the store knows it.
    public struct WorkflowRecord: Sendable {
        public var name: String
        public var script: String?
        public var args: [UInt8]?
        public var cwd: String?
        public var status: String
        public var runs: Int
        public var updatedAt: Double
    }

    /// One task of a workflow: its identity, status and last result.
    public struct TaskRecord: Sendable {
        public var id: String
        public var fingerprint: String
        public var status: String
        public var attempts: Int = 0
        public var startedAt: Double?
        public var finishedAt: Double?
        public var duration: Double?
        public var code: Int?
        public var maxRSS: Int?
        public var cpuTime: Double?
        public var error: String?
        /// The result as JSON.
        public var result: [UInt8]?

        public init(id: String, fingerprint: String, status: String) {
            self.id = id
            self.fingerprint = fingerprint
            self.status = status
        }
    }

    private func wrap<T>(_ what: String, _ body: () throws -> T) throws(StoreError) -> T {
        do {
            return try body()
        } catch {
            throw StoreError(message: "state: cannot \(what) in \(path): \(error)")
        }
    }

    /// Marks a workflow as running (creating it), remembering how to run it again.
    ///
    /// - Returns: the id of this run.
    @discardableResult
    public func beginWorkflow(_ name: String, script: String?, args: [UInt8]?, cwd: String?) throws(StoreError) -> Int64 {
        try wrap("start workflow '\(name)'") {
            try db.write { db -> Int64 in
                let now = monotonicWallClock()
                try db.execute(sql: """
                    INSERT INTO workflows (name, script, args, cwd, status, runs, created_at, updated_at)
                    VALUES (?, ?, ?, ?, 'running', 1, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET script = excluded.script, args = excluded.args, cwd = excluded.cwd,
                        status = 'running', runs = runs + 1, updated_at = excluded.updated_at
                    """, arguments: [name, script, args.map { String(decoding: $0, as: UTF8.self) }, cwd, now, now])
                try db.execute(sql: "INSERT INTO events (at, kind, workflow) VALUES (?, 'workflow started', ?)", arguments: [now, name])
                try db.execute(sql: "INSERT INTO runs (workflow, started_at, status) VALUES (?, ?, 'running')", arguments: [name, now])
                return db.lastInsertedRowID
            }
        }
    }

    /// Records how a workflow run ended.
    public func endWorkflow(_ name: String, status: String) throws(StoreError) {
        try wrap("finish workflow '\(name)'") {
            try db.write { db in
                let now = monotonicWallClock()
                try db.execute(sql: "UPDATE workflows SET status = ?, updated_at = ? WHERE name = ?", arguments: [status, now, name])
                try db.execute(sql: """
                    UPDATE runs SET status = ?, finished_at = ?
                    WHERE id = (SELECT max(id) FROM runs WHERE workflow = ?)
                    """, arguments: [status, now, name])
                try db.execute(sql: "INSERT INTO events (at, kind, workflow, data) VALUES (?, 'workflow finished', ?, ?)",
                               arguments: [now, name, "\"\(status)\""])
            }
        }
    }

    /// Forgets a workflow's tasks (a fresh start).
    public func resetWorkflow(_ name: String) throws(StoreError) {
        try wrap("reset workflow '\(name)'") {
            try db.write { db in try db.execute(sql: "DELETE FROM wf_tasks WHERE workflow = ?", arguments: [name]) }
        }
    }

    /// Every workflow, most recently active first.
    public func workflows() throws(StoreError) -> [WorkflowRecord] {
        try wrap("list workflows") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM workflows ORDER BY updated_at DESC").map { r in
                    WorkflowRecord(name: r["name"], script: r["script"], args: (r["args"] as String?).map { Array($0.utf8) },
                                   cwd: r["cwd"], status: r["status"], runs: r["runs"], updatedAt: r["updated_at"])
                }
            }
        }
    }

    /// The tasks recorded for a workflow, in no particular order.
    public func tasks(of workflow: String) throws(StoreError) -> [TaskRecord] {
        try wrap("read the tasks of '\(workflow)'") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM wf_tasks WHERE workflow = ?", arguments: [workflow]).map { r in
                    var t = TaskRecord(id: r["id"], fingerprint: r["fingerprint"], status: r["status"])
                    t.attempts = r["attempts"]
                    t.startedAt = r["started_at"]
                    t.finishedAt = r["finished_at"]
                    t.duration = r["duration"]
                    t.code = r["code"]
                    t.maxRSS = r["max_rss"]
                    t.cpuTime = r["cpu_time"]
                    t.error = r["error"]
                    t.result = (r["result"] as String?).map { Array($0.utf8) }
                    return t
                }
            }
        }
    }

    /// Writes task records and their events in one transaction (the engine batches changes).
    /// One attempt of a task (a retry policy may make several).
    public struct AttemptRecord: Sendable {
        public var task: String
        public var attempt: Int
        public var ok: Bool
        public var duration: Double?
        public var code: Int?
        public var maxRSS: Int?
        public var cpuTime: Double?
        public var error: String?
        public init(task: String, attempt: Int, ok: Bool) {
            self.task = task
            self.attempt = attempt
            self.ok = ok
        }
    }

    /// Writes task records, their attempts and events in one transaction (the engine batches
    /// changes).
    public func saveTasks(_ workflow: String, _ records: [TaskRecord], attempts: [AttemptRecord] = [],
                          events: [(kind: String, task: String, data: [UInt8]?)]) throws(StoreError) {
        guard !records.isEmpty || !events.isEmpty || !attempts.isEmpty else { return }
        try wrap("save the tasks of '\(workflow)'") {
            try db.write { db in
                let upsert = try db.cachedStatement(sql: """
                    INSERT INTO wf_tasks (workflow, id, fingerprint, status, attempts, started_at, finished_at, duration,
                                          code, max_rss, cpu_time, error, result)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(workflow, id) DO UPDATE SET fingerprint = excluded.fingerprint, status = excluded.status,
                        attempts = excluded.attempts, started_at = excluded.started_at, finished_at = excluded.finished_at,
                        duration = excluded.duration, code = excluded.code, max_rss = excluded.max_rss,
                        cpu_time = excluded.cpu_time, error = excluded.error, result = excluded.result
                    """)
                for t in records {
                    try upsert.execute(arguments: [workflow, t.id, t.fingerprint, t.status, t.attempts, t.startedAt, t.finishedAt,
                                                   t.duration, t.code, t.maxRSS, t.cpuTime, t.error,
                                                   t.result.map { String(decoding: $0, as: UTF8.self) }])
                }
                let event = try db.cachedStatement(sql: "INSERT INTO events (at, kind, workflow, task, data) VALUES (?, ?, ?, ?, ?)")
                let now = monotonicWallClock()
                // the log of what the records say: started, and how each task finished
                for t in records {
                    switch t.status {
                    case "running":
                        try event.execute(arguments: [t.startedAt ?? now, "task started", workflow, t.id, nil as String?])
                    case "succeeded", "failed", "skipped":
                        try event.execute(arguments: [t.finishedAt ?? now, "task " + t.status, workflow, t.id, Self.eventData(t)])
                    default:
                        break
                    }
                }
                for e in events {
                    try event.execute(arguments: [now, e.kind, workflow, e.task, e.data.map { String(decoding: $0, as: UTF8.self) }])
                }
                if !attempts.isEmpty {
                    let run = try Int64.fetchOne(db, sql: "SELECT max(id) FROM runs WHERE workflow = ?", arguments: [workflow]) ?? 0
                    let insert = try db.cachedStatement(sql: """
                        INSERT INTO attempts (run, workflow, task, attempt, ok, finished_at, duration, code, max_rss, cpu_time, error)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """)
                    for a in attempts {
                        try insert.execute(arguments: [run, workflow, a.task, a.attempt, a.ok, now, a.duration, a.code, a.maxRSS, a.cpuTime, a.error])
                    }
                }
                try db.execute(sql: "UPDATE workflows SET updated_at = ? WHERE name = ?", arguments: [now, workflow])
            }
        }
    }

    /// `{"started_at":...,"attempts":1,...}` for a finished task's event.
    static func eventData(_ t: TaskRecord) -> String {
        var parts: [String] = []
        if let v = t.startedAt { parts.append("\"started_at\":\(v)") }
        if t.status != "skipped" { parts.append("\"attempts\":\(t.attempts)") }
        if let v = t.duration { parts.append("\"duration\":\(v)") }
        if let v = t.code { parts.append("\"code\":\(v)") }
        if let v = t.maxRSS { parts.append("\"max_rss\":\(v)") }
        if let v = t.cpuTime { parts.append("\"cpu_time\":\(v)") }
        if let e = t.error { parts.append("\"error\":" + jsonString(e)) }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// `PRAGMA integrity_check`: "ok" for a sound database.
    public func integrityCheck() throws(StoreError) -> String {
        do {
            return try db.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") ?? "?" }
        } catch {
            throw StoreError(message: "state: integrity check of \(path) failed: \(error)")
        }
    }

    /// The event log of a workflow, oldest first: (kind, task, data as JSON text).
    public func events(of workflow: String) throws(StoreError) -> [(kind: String, task: String?, data: String?)] {
        try wrap("read the events of '\(workflow)'") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT kind, task, data FROM events WHERE workflow = ? ORDER BY id", arguments: [workflow])
                    .map { (kind: $0["kind"], task: $0["task"], data: $0["data"]) }
            }
        }
    }

    /// The attempts recorded for a task, oldest first.
    public func attempts(of workflow: String, task: String) throws(StoreError) -> [AttemptRecord] {
        try wrap("read the attempts of '\(workflow)'") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM attempts WHERE workflow = ? AND task = ? ORDER BY id",
                                 arguments: [workflow, task]).map { r in
                    var a = AttemptRecord(task: r["task"], attempt: r["attempt"], ok: r["ok"])
                    a.duration = r["duration"]
                    a.code = r["code"]
                    a.error = r["error"]
                    return a
                }
            }
        }
    }

    /// Counts for `qw state`: keys, events, file size.
    public func stats() throws(StoreError) -> (keys: Int, events: Int, bytes: Int) {
        do {
            let (k, e) = try db.read { db in
                (try Int.fetchOne(db, sql: "SELECT count(*) FROM kv") ?? 0, try Int.fetchOne(db, sql: "SELECT count(*) FROM events") ?? 0)
            }
            var st = stat()
            let size = stat(path, &st) == 0 ? Int(st.st_size) : 0
            return (k, e, size)
        } catch {
            throw StoreError(message: "state: cannot read \(path): \(error)")
        }
    }
}

/// A JSON string literal for `s`.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

/// Seconds since the epoch, with sub-second precision.
public func monotonicWallClock() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
