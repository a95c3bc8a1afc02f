public import GRDB
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

    /// `PRAGMA integrity_check`: "ok" for a sound database.
    public func integrityCheck() throws(StoreError) -> String {
        do {
            return try db.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") ?? "?" }
        } catch {
            throw StoreError(message: "state: integrity check of \(path) failed: \(error)")
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

/// Seconds since the epoch, with sub-second precision.
public func monotonicWallClock() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
