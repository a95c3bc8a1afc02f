import GRDB
import GRDBSQLite
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
    let db: DatabaseQueue
    /// How long a statement waits for another process's lock (see ``withBusyWait(_:_:)``).
    private let busyBudget: BusyBudget

    /// The busy wait, changed for a few statements (a hook that would rather keep its event
    /// aside than wait).
    final class BusyBudget: @unchecked Sendable {
        var seconds: Double
        init(_ s: Double) { seconds = s }
    }

    /// Runs `body` with statements waiting at most `seconds` for another process's lock.
    public func withBusyWait<T, E: Error>(_ seconds: Double, _ body: () throws(E) -> T) throws(E) -> T {
        let saved = busyBudget.seconds
        busyBudget.seconds = seconds
        defer { busyBudget.seconds = saved }
        return try body()
    }

    /// Opens (creating it and its folder when needed) and migrates the store at `path`.
    ///
    /// - Throws: ``StoreError`` naming the path and SQLite's reason.
    /// - Parameters:
    ///   - busyWait: how long a write waits for another process's lock before it fails
    ///     (`qw hook` waits little and keeps the event aside instead).
    public init(path: String, busyWait: Double = 30) throws(StoreError) {
        self.path = path
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            Self.makeDirectories(String(path[..<slash]))
        }
        // WAL is set below, not with GRDB's `journalMode = .wal`: that also asks Foundation
        // for the WAL file's size at every open (a tenth of a `qw hook`) and, when the file
        // is absent or empty, as after a checkpoint at exit, writes a table and drops it (a
        // write transaction, which waits for any other writer), for readers of a pool that
        // qw does not use.
        var config = Configuration()
        // Other qw processes hold the write lock only briefly: retry soon and often (SQLite's
        // own timeout sleeps up to 100 ms between tries, which a hook on every tool call feels).
        let budget = BusyBudget(busyWait)
        self.busyBudget = budget
        config.busyMode = .callback { tries in
            // the time slept so far in this wait, from the schedule below
            let slept = tries < 20 ? Double(tries) * 1e-4 : tries < 100 ? 2e-3 + Double(tries - 20) * 5e-4 : 0.042 + Double(tries - 100) * 2e-3
            guard slept < budget.seconds else { return false }
            usleep(tries < 20 ? 100 : tries < 100 ? 500 : 2000)
            return true
        }
        config.label = "qw.state"
        // Processes opening a new store at once would each see it unmigrated: an exclusive
        // flock on a file beside it lets one migrate first. (Not the database file itself:
        // closing any descriptor of that file drops the locks SQLite holds on it.)
        let lock = open(path + "-migrate.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if lock >= 0 {
            // a bounded wait, like the database's own locks
            var waited = 0.0
            while flock(lock, LOCK_EX | LOCK_NB) != 0 && waited < busyWait {
                usleep(500)
                waited += 5e-4
            }
        }
        defer {
            if lock >= 0 {
                flock(lock, LOCK_UN)
                close(lock)
            }
        }
        do {
            db = try DatabaseQueue(path: path, configuration: config)
            try db.writeWithoutTransaction { db in
                // kept in the file: a no-op once the store is in WAL mode
                let mode = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL")
                guard mode == "wal" else { throw DatabaseError(message: "could not use WAL mode (journal mode: \(mode ?? "none"))") }
                try db.execute(sql: "PRAGMA synchronous = NORMAL")  // WAL: durable at checkpoints, never corrupt
                try db.execute(sql: "PRAGMA wal_autocheckpoint = 10000")
            }
            try Self.migrator.migrate(db)
        } catch {
            throw StoreError(message: "cannot open the state store \(path): \(error)")
        }
        Self.checkpointAtExit(db, path)
    }

    /// Stores open in this process, and their paths, looked at when it exits.
    private final class Weak {
        weak var queue: DatabaseQueue?
        let path: String
        init(_ q: DatabaseQueue, _ p: String) { queue = q; path = p }
    }
    nonisolated(unsafe) private static var openQueues: [Weak] = []
    nonisolated(unsafe) private static var exitHandlerInstalled = false
    /// A WAL larger than this is emptied when a process exits.
    static let walLimit = 4 << 20

    /// qw ends with exit(), which runs no deinit, so the WAL stays behind, and the next process
    /// to open the store alone rebuilds its index from all of it: up to the autocheckpoint's
    /// 40 MB, some 20 ms for each `qw hook`. So a process that leaves a large WAL closes the
    /// store as it exits: SQLite then empties the WAL into the database and removes it when
    /// no other connection has the store open (it tries a lock that waits for nobody), and
    /// only closes it otherwise, leaving the WAL to the last one, whose index stays valid
    /// meanwhile. A small WAL costs little to read and is left (emptying it at every exit
    /// would cost every short qw an fsync). `qw hook` does the same: where hooks are all that
    /// runs (Claude Code used directly), one hook in some 250 empties the WAL, where before
    /// every hook read a WAL that only grew.
    private static func checkpointAtExit(_ db: DatabaseQueue, _ path: String) {
        openQueues.removeAll { $0.queue == nil }
        openQueues.append(Weak(db, path))
        guard !exitHandlerInstalled else { return }
        exitHandlerInstalled = true
        atexit {
            for w in StateStore.openQueues {
                guard let q = w.queue else { continue }
                var st = stat()
                guard stat(w.path + "-wal", &st) == 0, st.st_size > StateStore.walLimit else { continue }
                try? q.close()
            }
            StateStore.openQueues = []
        }
    }

    /// Copies the WAL into the database, waiting for nobody (a passive checkpoint): the next
    /// write then starts the WAL over, and the next process to open the store alone has little
    /// of it to read. Every `qw` (each `qw hook` of each tool call) pays some 0.5 ms per MB of
    /// WAL at its start, and the WAL otherwise grows to 4 MB before an exiting qw empties it;
    /// so `qw.agent.run` calls this while its CLI runs, when it has time to spare. Returns the
    /// WAL's frames and how many of them are in the database now; nil when another process
    /// held the checkpoint.
    ///
    /// (The WAL index in the `-shm` file would say how large the WAL is without a checkpoint,
    /// but a descriptor of that file opened and closed here would drop the locks SQLite holds
    /// on it.)
    @discardableResult
    public func checkpointWAL() -> (frames: Int, copied: Int)? {
        withBusyWait(0) {
            let row = try? db.writeWithoutTransaction { try Row.fetchOne($0, sql: "PRAGMA wal_checkpoint(PASSIVE)") }
            // (busy, frames in the WAL, frames copied)
            guard let row, (row[0] as Int? ?? 1) == 0 else { return nil }
            return (row[1] as Int? ?? 0, row[2] as Int? ?? 0)
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
        m.registerMigration("v4: task inputs and outputs, and a cache of file content hashes") { db in
            try db.execute(sql: """
                ALTER TABLE wf_tasks ADD COLUMN io_base TEXT;
                ALTER TABLE wf_tasks ADD COLUMN inputs TEXT;
                ALTER TABLE wf_tasks ADD COLUMN outputs TEXT;
                ALTER TABLE wf_tasks ADD COLUMN deps TEXT;
                CREATE TABLE file_hashes (
                    path TEXT PRIMARY KEY NOT NULL,
                    device INTEGER NOT NULL,
                    inode INTEGER NOT NULL,
                    size INTEGER NOT NULL,
                    mtime_ns INTEGER NOT NULL,
                    ctime_ns INTEGER NOT NULL,
                    hash TEXT NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v5: the cost ledger of agent runs") { db in
            try db.execute(sql: """
                CREATE TABLE agent_runs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    started_at REAL NOT NULL,
                    finished_at REAL NOT NULL,
                    agent TEXT,
                    model TEXT,
                    workflow TEXT,
                    task TEXT,
                    session TEXT,
                    ok INTEGER NOT NULL,
                    cost_usd REAL NOT NULL,
                    session_cost_usd REAL,
                    input_tokens INTEGER NOT NULL DEFAULT 0,
                    output_tokens INTEGER NOT NULL DEFAULT 0,
                    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
                    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
                    duration REAL,
                    turns INTEGER,
                    terminal_reason TEXT,
                    error TEXT
                );
                CREATE INDEX agent_runs_by_time ON agent_runs (finished_at);
                CREATE INDEX agent_runs_by_session ON agent_runs (session, id);
                """)
        }
        m.registerMigration("v6: the agent gate") { db in
            try db.execute(sql: """
                CREATE TABLE agent_gate (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    closed_until REAL NOT NULL DEFAULT 0,
                    probing INTEGER NOT NULL DEFAULT 0,
                    backoff REAL NOT NULL DEFAULT 1,
                    last_start REAL NOT NULL DEFAULT 0,
                    window REAL NOT NULL DEFAULT 0
                );
                INSERT INTO agent_gate (id) VALUES (1);
                CREATE TABLE agent_holders (
                    run TEXT PRIMARY KEY NOT NULL,
                    pid INTEGER NOT NULL,
                    start_ticks INTEGER NOT NULL,
                    since REAL NOT NULL,
                    probe INTEGER NOT NULL DEFAULT 0
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v7: the agent gate paces starts and tells a steady limit from a closed door") { db in
            try db.execute(sql: """
                ALTER TABLE agent_gate ADD COLUMN rate REAL NOT NULL DEFAULT 0;
                ALTER TABLE agent_gate ADD COLUMN streak INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE agent_gate ADD COLUMN limited_at REAL NOT NULL DEFAULT 0;
                ALTER TABLE agent_holders ADD COLUMN admitted INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE agent_runs ADD COLUMN max_rss INTEGER;
                CREATE TABLE agent_starts (at REAL NOT NULL);
                CREATE TABLE agent_admits (at REAL NOT NULL);
                CREATE TABLE agent_live (
                    run TEXT PRIMARY KEY NOT NULL,
                    workflow TEXT,
                    task TEXT,
                    agent TEXT,
                    session TEXT NOT NULL,
                    started_at REAL NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v8: approvals of spec documents") { db in
            try db.execute(sql: """
                CREATE TABLE spec_approvals (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    spec TEXT NOT NULL,
                    phase TEXT NOT NULL,
                    document TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    by TEXT NOT NULL,
                    at REAL NOT NULL
                );
                CREATE INDEX spec_approvals_by_phase ON spec_approvals (spec, phase, id);
                """)
        }
        m.registerMigration("v9: hook events, the suggestion queue and spec phases") { db in
            try db.execute(sql: """
                CREATE TABLE hook_events (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    at REAL NOT NULL,
                    event TEXT NOT NULL,
                    session TEXT,
                    run TEXT,
                    workflow TEXT,
                    task TEXT,
                    agent TEXT,
                    tool TEXT,
                    summary TEXT,
                    paths TEXT,
                    duration_ms REAL,
                    outcome TEXT NOT NULL,
                    reason TEXT,
                    latency_ms REAL,
                    detail TEXT
                );
                CREATE INDEX hook_events_by_session ON hook_events (session, id);
                CREATE INDEX hook_events_by_run ON hook_events (run, id);
                CREATE TABLE suggestions (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    created_at REAL NOT NULL,
                    argv TEXT NOT NULL,
                    source TEXT,
                    spec TEXT,
                    state TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    not_before REAL NOT NULL DEFAULT 0,
                    consumer TEXT,
                    pid INTEGER,
                    start_ticks INTEGER,
                    lease_until REAL,
                    started_at REAL,
                    finished_at REAL,
                    error TEXT
                );
                CREATE INDEX suggestions_by_state ON suggestions (state, not_before, id);
                CREATE UNIQUE INDEX suggestions_live ON suggestions (argv) WHERE state IN ('pending', 'running');
                CREATE TABLE spec_phases (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    spec TEXT NOT NULL,
                    phase TEXT NOT NULL,
                    state TEXT NOT NULL,
                    source TEXT,
                    at REAL NOT NULL
                );
                CREATE INDEX spec_phases_by_spec ON spec_phases (spec, id);
                """)
        }
        m.registerMigration("v10: the agent gate paces the model's answers") { db in
            // how long after its start each run got its first answer
            try db.execute(sql: "ALTER TABLE agent_admits ADD COLUMN delay REAL")
        }
        m.registerMigration("v11: workflows keep how many of their tasks are in each state") { db in
            // how many of the workflow's rows in wf_tasks are in each state, a `STATE\tCOUNT`
            // line per state, written with them by the run (NULL: not known, count the rows)
            try db.execute(sql: "ALTER TABLE workflows ADD COLUMN task_counts TEXT")
        }
        return m
    }

    /// The last approval of a spec's phase: the document's hash when it was approved, who, when.
    public struct Approval: Sendable {
        public var document: String, hash: String, by: String, at: Double
    }

    /// Records that `by` approved `document` (whose content hashes to `hash`) for a phase.
    public func approve(spec: String, phase: String, document: String, hash: String, by: String) throws(StoreError) {
        try wrap("record an approval") {
            try db.write { db in
                try db.execute(sql: "INSERT INTO spec_approvals (spec, phase, document, hash, by, at) VALUES (?, ?, ?, ?, ?, ?)",
                               arguments: [spec, phase, document, hash, by, monotonicWallClock()])
            }
        }
    }

    /// The last approval of a spec's phase, or nil.
    public func approval(spec: String, phase: String) throws(StoreError) -> Approval? {
        try wrap("read approvals") {
            try db.read { db in
                try Row.fetchOne(db, sql: "SELECT document, hash, by, at FROM spec_approvals WHERE spec = ? AND phase = ? ORDER BY id DESC LIMIT 1",
                                 arguments: [spec, phase]).map { Approval(document: $0[0], hash: $0[1], by: $0[2], at: $0[3]) }
            }
        }
    }

    /// Runs `body` in one write transaction (the gate's read-modify-write).
    func writeGate<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        try writeImmediate("use the agent gate", body)
    }

    /// Runs `body` in one IMMEDIATE write transaction: the write lock first, so that two
    /// processes never act on the same reading.
    func writeImmediate<T>(_ what: String, _ body: (Database) throws -> T) throws(StoreError) -> T {
        try wrap(what) {
            try db.writeWithoutTransaction { db in
                var out: T?
                try db.inTransaction(.immediate) {
                    out = try body(db)
                    return .commit
                }
                return out!
            }
        }
    }

    private static func makeDirectories(_ dir: String) {
        var st = stat()
        if stat(dir, &st) == 0 { return }  // the common case: one call, no string work
        var path = dir.hasPrefix("/") ? "" : "."
        for part in dir.split(separator: "/") {
            path += "/" + String(part)
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
        /// The folder that input and output paths are relative to.
        public var ioBase: String?
        /// The inputs the task last succeeded with: what ``WorkflowIO/encodeInputs(_:_:)`` writes.
        public var inputs: String?
        /// The output patterns it declared, one per line.
        public var outputs: String?
        /// The tasks it depends on (declared and implied by its inputs), one per line.
        public var deps: String?

        public init(id: String, fingerprint: String, status: String) {
            self.id = id
            self.fingerprint = fingerprint
            self.status = status
        }
    }

    func wrap<T>(_ what: String, _ body: () throws -> T) throws(StoreError) -> T {
        do {
            return try body()
        } catch {
            throw StoreError(message: "state: cannot \(what) in \(path): \(error)")
        }
    }

    /// Marks a workflow as running (creating it), remembering how to run it again, and the
    /// budget it runs with (in the "workflow started" event).
    ///
    /// - Returns: the id of this run.
    @discardableResult
    public func beginWorkflow(_ name: String, script: String?, args: [UInt8]?, cwd: String?, budgetUSD: Double? = nil) throws(StoreError) -> Int64 {
        try wrap("start workflow '\(name)'") {
            try db.write { db -> Int64 in
                let now = monotonicWallClock()
                try db.execute(sql: """
                    INSERT INTO workflows (name, script, args, cwd, status, runs, created_at, updated_at)
                    VALUES (?, ?, ?, ?, 'running', 1, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET script = excluded.script, args = excluded.args, cwd = excluded.cwd,
                        status = 'running', runs = runs + 1, updated_at = excluded.updated_at
                    """, arguments: [name, script, args.map { String(decoding: $0, as: UTF8.self) }, cwd, now, now])
                // the budget it runs with, for the dashboard's budgets
                try db.execute(sql: "INSERT INTO events (at, kind, workflow, data) VALUES (?, 'workflow started', ?, ?)",
                               arguments: [now, name, budgetUSD.map { "{\"budget_usd\":\($0)}" }])
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
            try db.write { db in
                try db.execute(sql: "DELETE FROM wf_tasks WHERE workflow = ?", arguments: [name])
                try db.execute(sql: "UPDATE workflows SET task_counts = '' WHERE name = ?", arguments: [name])
            }
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
                // columns by position: looking them up by name per row is most of the cost
                let rows = try Row.fetchCursor(db, sql: """
                    SELECT id, fingerprint, status, attempts, started_at, finished_at, duration, code, max_rss, cpu_time,
                           error, result, io_base, inputs, outputs, deps
                    FROM wf_tasks WHERE workflow = ?
                    """, arguments: [workflow])
                var out: [TaskRecord] = []
                while let r = try rows.next() {
                    var t = TaskRecord(id: r[0], fingerprint: r[1], status: r[2])
                    t.attempts = r[3]
                    t.startedAt = r[4]
                    t.finishedAt = r[5]
                    t.duration = r[6]
                    t.code = r[7]
                    t.maxRSS = r[8]
                    t.cpuTime = r[9]
                    t.error = r[10]
                    t.result = (r[11] as String?).map { Array($0.utf8) }
                    t.ioBase = r[12]
                    t.inputs = r[13]
                    t.outputs = r[14]
                    t.deps = r[15]
                    out.append(t)
                }
                return out
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
    /// changes). `counts`: how many of the workflow's rows are in each state once these are
    /// written (what ``taskCounts(of:)`` then reads instead of counting the rows).
    public func saveTasks(_ workflow: String, _ records: [TaskRecord], attempts: [AttemptRecord] = [],
                          events: [(kind: String, task: String, data: [UInt8]?)],
                          counts: [String: Int]? = nil) throws(StoreError) {
        guard !records.isEmpty || !events.isEmpty || !attempts.isEmpty else { return }
        try wrap("save the tasks of '\(workflow)'") {
            try db.write { db in
                // Bound through SQLite's own calls: GRDB's argument arrays cost more than the
                // inserts themselves at 100,000 rows.
                let upsert = try db.cachedStatement(sql: """
                    INSERT INTO wf_tasks (workflow, id, fingerprint, status, attempts, started_at, finished_at, duration,
                                          code, max_rss, cpu_time, error, result, io_base, inputs, outputs, deps)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(workflow, id) DO UPDATE SET fingerprint = excluded.fingerprint, status = excluded.status,
                        attempts = excluded.attempts, started_at = excluded.started_at, finished_at = excluded.finished_at,
                        duration = excluded.duration, code = excluded.code, max_rss = excluded.max_rss,
                        cpu_time = excluded.cpu_time, error = excluded.error, result = excluded.result,
                        io_base = excluded.io_base, inputs = excluded.inputs, outputs = excluded.outputs, deps = excluded.deps
                    """)
                let u = RawStatement(upsert.sqliteStatement, db: db.sqliteConnection)
                for t in records {
                    u.reset()
                    u.bind(1, workflow); u.bind(2, t.id); u.bind(3, t.fingerprint); u.bind(4, t.status)
                    u.bind(5, t.attempts); u.bind(6, t.startedAt); u.bind(7, t.finishedAt); u.bind(8, t.duration)
                    u.bind(9, t.code); u.bind(10, t.maxRSS); u.bind(11, t.cpuTime); u.bind(12, t.error)
                    u.bind(13, t.result); u.bind(14, t.ioBase); u.bind(15, t.inputs); u.bind(16, t.outputs)
                    u.bind(17, t.deps)
                    try u.step()
                }
                let event = RawStatement(try db.cachedStatement(sql: "INSERT INTO events (at, kind, workflow, task, data) VALUES (?, ?, ?, ?, ?)").sqliteStatement,
                                         db: db.sqliteConnection)
                func log(_ at: Double, _ kind: String, _ task: String, _ data: String?) throws {
                    event.reset()
                    event.bind(1, at); event.bind(2, kind); event.bind(3, workflow); event.bind(4, task); event.bind(5, data)
                    try event.step()
                }
                let now = monotonicWallClock()
                // the log of what the records say: started, and how each task finished. The
                // successes of one batch share a row (see ``events(of:)``): one row per task
                // was most of what a 100,000-task workflow wrote.
                var succeeded = "", lastSuccess = 0.0
                for t in records {
                    switch t.status {
                    case "running":
                        try log(t.startedAt ?? now, "task started", t.id, nil)
                    case "succeeded":
                        succeeded += WorkflowIO.escape(t.id) + "\t" + Self.eventData(t) + "\n"
                        lastSuccess = max(lastSuccess, t.finishedAt ?? now)
                    case "failed", "skipped":
                        try log(t.finishedAt ?? now, t.status == "failed" ? "task failed" : "task skipped", t.id, Self.eventData(t))
                    default:
                        break
                    }
                }
                if !succeeded.isEmpty {
                    event.reset()
                    event.bind(1, lastSuccess); event.bind(2, Self.successBatch); event.bind(3, workflow)
                    event.bind(4, nil as String?); event.bind(5, succeeded)
                    try event.step()
                }
                for e in events {
                    try log(now, e.kind, e.task, e.data.map { String(decoding: $0, as: UTF8.self) })
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
                if let counts {
                    try db.execute(sql: "UPDATE workflows SET updated_at = ?, task_counts = ? WHERE name = ?",
                                   arguments: [now, Self.countsText(counts), workflow])
                } else {
                    try db.execute(sql: "UPDATE workflows SET updated_at = ? WHERE name = ?", arguments: [now, workflow])
                }
            }
        }
    }

    /// `failed\t2\nsucceeded\t10\n`: a workflow's task counts as kept in its row.
    static func countsText(_ counts: [String: Int]) -> String {
        counts.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key)\t\($0.value)\n" }.joined()
    }

    /// `{"started_at":...,"attempts":1,...}` for a finished task's event.
    static func eventData(_ t: TaskRecord) -> String {
        var out = "{"
        out.reserveCapacity(96)
        func field(_ name: String, _ value: String) {
            if out.utf8.count > 1 { out += "," }
            out += name
            out += value
        }
        if let v = t.startedAt { field("\"started_at\":", v.description) }
        if t.status != "skipped" { field("\"attempts\":", t.attempts.description) }
        if let v = t.duration { field("\"duration\":", v.description) }
        if let v = t.code { field("\"code\":", v.description) }
        if let v = t.maxRSS { field("\"max_rss\":", v.description) }
        if let v = t.cpuTime { field("\"cpu_time\":", v.description) }
        if let e = t.error { field("\"error\":", jsonString(e)) }
        return out + "}"
    }

    // MARK: The cost ledger

    /// One agent run as the ledger keeps it. `sessionCostUSD` is what the CLI reports, which
    /// counts every earlier run of a resumed session; ``recordAgentRun(_:)`` works out the
    /// run's own spend from it.
    public struct AgentRunRecord: Sendable {
        public var startedAt: Double
        public var finishedAt: Double
        public var agent: String?
        public var model: String?
        public var workflow: String?
        public var task: String?
        public var session: String?
        /// The run's mark, when ``agentSessionStarted(run:workflow:task:agent:session:startedAt:)`` noted it.
        public var run: String?
        public var ok: Bool
        public var sessionCostUSD: Double?
        public var inputTokens = 0, outputTokens = 0, cacheReadTokens = 0, cacheCreationTokens = 0
        public var duration: Double?
        public var turns: Int?
        /// Peak resident memory of the CLI's process group, bytes.
        public var maxRSS: Int?
        public var terminalReason: String?
        public var error: String?
        public init(startedAt: Double, finishedAt: Double, ok: Bool) {
            self.startedAt = startedAt
            self.finishedAt = finishedAt
            self.ok = ok
        }
    }

    /// Records an agent run; returns its own cost: the session's cost less what the ledger
    /// already holds for that session (the CLI's cost is cumulative across resumes).
    @discardableResult
    public func recordAgentRun(_ r: AgentRunRecord) throws(StoreError) -> Double {
        try wrap("record an agent run") {
            try db.write { db -> Double in
                let total = r.sessionCostUSD ?? 0
                var own = total
                // (through SQLite's C calls: a `qw agent run` writes this once, just before it exits)
                if let session = r.session {
                    var prev: Double?
                    try db.direct("SELECT session_cost_usd FROM agent_runs WHERE session = ? AND session_cost_usd IS NOT NULL ORDER BY id DESC LIMIT 1",
                                  [.text(session)]) { prev = $0.double(0) }
                    if let prev, total >= prev { own = total - prev }
                }
                try db.direct("""
                    INSERT INTO agent_runs (started_at, finished_at, agent, model, workflow, task, session, ok, cost_usd, session_cost_usd,
                                            input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, duration, turns,
                                            terminal_reason, error, max_rss)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, [.double(r.startedAt), .double(r.finishedAt), .of(r.agent), .of(r.model), .of(r.workflow), .of(r.task),
                          .of(r.session), .of(r.ok), .double(own), .of(r.sessionCostUSD),
                          .of(r.inputTokens), .of(r.outputTokens), .of(r.cacheReadTokens), .of(r.cacheCreationTokens), .of(r.duration),
                          .of(r.turns), .of(r.terminalReason), .of(r.error), .of(r.maxRSS)])
                if let run = r.run { try db.direct("DELETE FROM agent_live WHERE run = ?", [.text(run)]) }
                return own
            }
        }
    }

    /// Notes the session of a run as soon as the CLI names it, so that a run cut short by a
    /// `kill -9` of qw can still be resumed; ``recordAgentRun(_:)`` drops the note.
    public func agentSessionStarted(run: String, workflow: String?, task: String?, agent: String?, session: String,
                                    startedAt: Double) throws(StoreError) {
        try wrap("note an agent session") {
            try db.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO agent_live (run, workflow, task, agent, session, started_at) VALUES (?, ?, ?, ?, ?, ?)",
                               arguments: [run, workflow, task, agent, session, startedAt])
            }
        }
    }

    /// The session of the last run of this workflow task (or agent, outside workflows), to
    /// resume it: a recorded run, or one that never ended (qw was killed).
    public func lastSession(workflow: String?, task: String?, agent: String?) throws(StoreError) -> String? {
        try wrap("read the cost ledger") {
            try db.read { db in
                try String.fetchOne(db, sql: """
                    SELECT session FROM (
                        SELECT session, started_at FROM agent_runs
                        WHERE workflow IS ?1 AND task IS ?2 AND (?3 IS NULL OR agent IS ?3) AND session IS NOT NULL
                        UNION ALL
                        SELECT session, started_at FROM agent_live
                        WHERE workflow IS ?1 AND task IS ?2 AND (?3 IS NULL OR agent IS ?3))
                    ORDER BY started_at DESC LIMIT 1
                    """, arguments: [workflow, task, agent])
            }
        }
    }

    /// The highest peak memory of the last 20 recorded runs of an agent (nil: of runs with
    /// no agent); nil with no history.
    public func agentPeakMemory(agent: String?) throws(StoreError) -> Int? {
        try wrap("read the cost ledger") {
            try db.read { db in
                try Int.fetchOne(db, sql: """
                    SELECT max(max_rss) FROM (SELECT max_rss FROM agent_runs WHERE agent IS ? AND max_rss IS NOT NULL
                        ORDER BY id DESC LIMIT 20)
                    """, arguments: [agent])
            }
        }
    }

    /// What the ledger holds for a workflow (all its runs and resumes).
    public func costSum(workflow: String) throws(StoreError) -> Double {
        try wrap("read the cost ledger") {
            try db.read { db in try Double.fetchOne(db, sql: "SELECT sum(cost_usd) FROM agent_runs WHERE workflow = ?", arguments: [workflow]) ?? 0 }
        }
    }

    /// The mean own cost of the last 20 runs of an agent (and model, when given); nil with no history.
    public func averageCost(agent: String?, model: String?) throws(StoreError) -> Double? {
        try wrap("read the cost ledger") {
            try db.read { db in
                try Double.fetchOne(db, sql: """
                    SELECT avg(cost_usd) FROM (SELECT cost_usd FROM agent_runs
                        WHERE agent IS ? AND (? IS NULL OR model LIKE ? || '%') ORDER BY id DESC LIMIT 20)
                    """, arguments: [agent, model, model])
            }
        }
    }

    /// One row of ``costReport(by:since:)``.
    public struct CostRow: Sendable {
        public var key: String
        public var runs: Int
        public var failed: Int
        public var costUSD: Double
        public var inputTokens: Int, outputTokens: Int, cacheReadTokens: Int, cacheCreationTokens: Int
        public var duration: Double
    }

    /// The ledger summed by `agent`, `model`, `workflow`, `task` or `day` (UTC), most costly
    /// first, for runs that finished at or after `since` (seconds since the epoch).
    public func costReport(by: String, since: Double?) throws(StoreError) -> [CostRow] {
        let key: String
        switch by {
        case "agent", "model", "workflow", "task": key = "coalesce(\(by), '-')"
        case "day": key = "strftime('%Y-%m-%d', finished_at, 'unixepoch')"
        default: throw StoreError(message: "qw cost: --by must be agent, model, workflow, task or day (got '\(by)')")
        }
        return try wrap("read the cost ledger") {
            try db.read { db in
                try Row.fetchAll(db, sql: """
                    SELECT \(key) AS k, count(*), sum(ok = 0), sum(cost_usd), sum(input_tokens), sum(output_tokens),
                           sum(cache_read_tokens), sum(cache_creation_tokens), coalesce(sum(duration), 0)
                    FROM agent_runs WHERE finished_at >= ? GROUP BY k ORDER BY sum(cost_usd) DESC, k
                    """, arguments: [since ?? 0]).map { r in
                    CostRow(key: r[0], runs: r[1], failed: r[2], costUSD: r[3], inputTokens: r[4], outputTokens: r[5],
                            cacheReadTokens: r[6], cacheCreationTokens: r[7], duration: r[8])
                }
            }
        }
    }

    // MARK: Content hashes

    /// The cached content hash of a file, with the stamp it was taken at.
    public func cachedHash(_ path: String) throws(StoreError) -> ContentHashes.Entry? {
        try wrap("read the hash cache") {
            try db.read { db in
                let st = try db.cachedStatement(sql: "SELECT device, inode, size, mtime_ns, ctime_ns, hash FROM file_hashes WHERE path = ?")
                guard let r = try Row.fetchOne(st, arguments: [path]) else { return nil }
                let stamp = FileStamp(device: UInt64(bitPattern: r[0]), inode: UInt64(bitPattern: r[1]), size: r[2],
                                      mtimeNs: r[3], ctimeNs: r[4])
                return ContentHashes.Entry(path: path, stamp: stamp, hash: r[5])
            }
        }
    }

    /// Keeps content hashes for later runs.
    public func cacheHashes(_ entries: [ContentHashes.Entry]) throws(StoreError) {
        guard !entries.isEmpty else { return }
        try wrap("write the hash cache") {
            try db.write { db in
                let st = try db.cachedStatement(sql: "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?, ?)")
                for e in entries {
                    try st.execute(arguments: [e.path, Int64(bitPattern: e.stamp.device), Int64(bitPattern: e.stamp.inode),
                                               e.stamp.size, e.stamp.mtimeNs, e.stamp.ctimeNs, e.hash])
                }
            }
        }
    }

    /// `PRAGMA integrity_check`: "ok" for a sound database.
    public func integrityCheck() throws(StoreError) -> String {
        do {
            return try db.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") ?? "?" }
        } catch {
            throw StoreError(message: "state: integrity check of \(path) failed: \(error)")
        }
    }

    /// The kind of the row that holds the "task succeeded" events of one batch: a line per
    /// task, its id (escaped as in ``WorkflowIO``), a tab, and its event data.
    static let successBatch = "tasks succeeded"

    /// The event log of a workflow, oldest first: (kind, task, data as JSON text). A row of
    /// batched successes reads as one "task succeeded" event per task.
    public func events(of workflow: String) throws(StoreError) -> [(kind: String, task: String?, data: String?)] {
        try wrap("read the events of '\(workflow)'") {
            try db.read { db in
                var out: [(kind: String, task: String?, data: String?)] = []
                for r in try Row.fetchAll(db, sql: "SELECT kind, task, data FROM events WHERE workflow = ? ORDER BY id", arguments: [workflow]) {
                    let kind: String = r[0], data: String? = r[2]
                    guard kind == Self.successBatch, let data else {
                        out.append((kind: kind, task: r[1], data: data))
                        continue
                    }
                    for line in data.split(separator: "\n") {
                        guard let tab = line.firstIndex(of: "\t") else { continue }
                        out.append((kind: "task succeeded", task: WorkflowIO.unescape(String(line[..<tab])),
                                    data: String(line[line.index(after: tab)...])))
                    }
                }
                return out
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
public func jsonString(_ s: String) -> String {
    var out = ""
    appendJSONString(s, to: &out)
    return out
}

/// Appends `s` as a JSON string literal to `out`: as it is, quoted, when nothing in it needs
/// escaping (most names, ids and states), scalar by scalar otherwise.
public func appendJSONString(_ s: String, to out: inout String) {
    out += "\""
    guard s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
        out += s
        out += "\""
        return
    }
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
    out += "\""
}

/// Seconds since the epoch, with sub-second precision.
public func monotonicWallClock() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A prepared statement of GRDB's, bound and stepped through SQLite's C calls.
struct RawStatement {
    let handle: OpaquePointer
    let db: OpaquePointer?
    /// SQLite copies the bytes before the call returns.
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    init(_ handle: OpaquePointer, db: OpaquePointer?) {
        self.handle = handle
        self.db = db
    }

    func reset() {
        sqlite3_reset(handle)
    }

    func bind(_ i: Int32, _ v: String?) {
        guard var v else {
            sqlite3_bind_null(handle, i)
            return
        }
        v.withUTF8 { b in
            let p = UnsafeRawPointer(b.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self)
            _ = sqlite3_bind_text(handle, i, p, Int32(b.count), Self.transient)
        }
    }

    func bind(_ i: Int32, _ v: [UInt8]?) {
        guard let v else {
            sqlite3_bind_null(handle, i)
            return
        }
        v.withUnsafeBytes { b in
            let p = (b.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self)
            _ = sqlite3_bind_text(handle, i, p, Int32(b.count), Self.transient)
        }
    }

    func bind(_ i: Int32, _ v: Int?) {
        if let v { sqlite3_bind_int64(handle, i, sqlite3_int64(v)) } else { sqlite3_bind_null(handle, i) }
    }

    func bind(_ i: Int32, _ v: Double?) {
        if let v { sqlite3_bind_double(handle, i, v) } else { sqlite3_bind_null(handle, i) }
    }

    func step() throws(StoreError) {
        let rc = sqlite3_step(handle)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else {
            let message = db.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "SQLite error \(rc)"
            throw StoreError(message: message)
        }
    }
}
