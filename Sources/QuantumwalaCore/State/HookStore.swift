import GRDB
import Glibc

/// What `qw hook` keeps of one Claude Code hook event.
public struct HookEventRecord: Sendable, Equatable {
    public var id: Int64 = 0
    public var at: Double
    public var event: String
    public var session: String?
    /// `QW_RUN_ID` of the CLI, when qw started it; and that run's workflow and task.
    public var run: String?
    public var workflow: String?
    public var task: String?
    /// A subagent's type (`agent_type` of the payload).
    public var agent: String?
    public var tool: String?
    /// The tool input in one line (a command, a path, a pattern).
    public var summary: String?
    /// The files the event touched, as a JSON array.
    public var paths: String?
    public var durationMS: Double?
    /// What the policy answered: `ok`, `allow`, `deny`, `block`, `stop`, `context`, `error` ...
    public var outcome: String
    public var reason: String?
    /// How long `qw hook` took to answer, including its start.
    public var latencyMS: Double?
    /// Event-specific fields as a JSON object (source, reason, stop_hook_active, error ...).
    public var detail: String?

    public init(at: Double, event: String, outcome: String) {
        self.at = at
        self.event = event
        self.outcome = outcome
    }
}

/// A queued command suggestion: an argv (`/slash-command ARGS...` or `qw SUBCOMMAND ...`),
/// never a shell line.
public struct SuggestionRecord: Sendable, Equatable {
    public var id: Int64
    public var createdAt: Double
    /// The argv as a JSON array (also what makes two suggestions the same).
    public var argv: String
    public var source: String?
    public var spec: String?
    /// pending, running, done, failed (parked after its last attempt) or refused.
    public var state: String
    public var attempts: Int
    public var notBefore: Double
    public var consumer: String?
    public var startedAt: Double?
    public var finishedAt: Double?
    public var error: String?
}

/// A phase change of a spec, as the hook policy or `qw spec` noticed it.
public struct SpecPhaseRecord: Sendable, Equatable {
    public var spec: String, phase: String, state: String, source: String?, at: Double
}

extension StateStore {
    /// Records a hook event; returns its id.
    @discardableResult
    public func recordHookEvent(_ e: HookEventRecord) throws(StoreError) -> Int64 {
        try writeImmediate("record a hook event") { db in
            try Self.insert(e, db)
            return db.lastInsertedRowID
        }
    }

    /// Records events kept aside while the store could not take them (one transaction).
    public func recordHookEvents(_ events: [HookEventRecord]) throws(StoreError) {
        try writeImmediate("record hook events") { db in
            for e in events { try Self.insert(e, db) }
        }
    }

    private static func insert(_ e: HookEventRecord, _ db: Database) throws {
        try db.execute(sql: """
            INSERT INTO hook_events (at, event, session, run, workflow, task, agent, tool, summary, paths, duration_ms,
                                     outcome, reason, latency_ms, detail)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [e.at, e.event, e.session, e.run, e.workflow, e.task, e.agent, e.tool, e.summary, e.paths,
                             e.durationMS, e.outcome, e.reason, e.latencyMS, e.detail])
    }

    /// The hook events, oldest first, of a session or a run when given; at most `limit`
    /// of the newest.
    public func hookEvents(session: String? = nil, run: String? = nil, event: String? = nil, afterID: Int64 = 0,
                           limit: Int = 1000) throws(StoreError) -> [HookEventRecord] {
        try readTable("read the hook events") { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT * FROM (SELECT id, at, event, session, run, workflow, task, agent, tool, summary, paths, duration_ms,
                                      outcome, reason, latency_ms, detail
                               FROM hook_events
                               WHERE (?1 IS NULL OR session = ?1) AND (?2 IS NULL OR run = ?2) AND (?3 IS NULL OR event = ?3) AND id > ?4
                               ORDER BY id DESC LIMIT ?5)
                ORDER BY id
                """, arguments: [session, run, event, afterID, limit])
            return rows.map { r in
                var e = HookEventRecord(at: r["at"], event: r["event"], outcome: r["outcome"])
                e.id = r["id"]; e.session = r["session"]; e.run = r["run"]; e.workflow = r["workflow"]; e.task = r["task"]
                e.agent = r["agent"]; e.tool = r["tool"]; e.summary = r["summary"]; e.paths = r["paths"]
                e.durationMS = r["duration_ms"]; e.reason = r["reason"]; e.latencyMS = r["latency_ms"]; e.detail = r["detail"]
                return e
            }
        }
    }

    // MARK: the suggestion queue

    /// Queues a suggestion unless the same argv is pending or running already.
    ///
    /// - Returns: its id, and whether it was new (false: the id of the one already queued).
    public func enqueueSuggestion(argv: String, source: String?, spec: String?, state: String = "pending",
                                  error: String? = nil) throws(StoreError) -> (id: Int64, added: Bool) {
        try writeImmediate("queue a suggestion") { db in
            let now = monotonicWallClock()
            if state == "pending",
               let id = try Int64.fetchOne(db, sql: "SELECT id FROM suggestions WHERE argv = ? AND state IN ('pending', 'running')",
                                           arguments: [argv]) {
                return (id, false)
            }
            try db.execute(sql: """
                INSERT INTO suggestions (created_at, argv, source, spec, state, error, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [now, argv, source, spec, state, error, state == "pending" ? nil : now])
            return (db.lastInsertedRowID, true)
        }
    }

    /// Claims the oldest suggestion that is due, for `consumer` (this process), with a lease
    /// of `lease` seconds: a pending one whose backoff is over, or a running one whose
    /// consumer is gone (its lease expired, or its process died). In one IMMEDIATE
    /// transaction, so that two consumers never claim the same one.
    public func claimSuggestion(consumer: String, lease: Double) throws(StoreError) -> SuggestionRecord? {
        let pid = getpid()
        let ticks = AgentGate.startTicks(pid) ?? 0
        return try writeImmediate("claim a suggestion") { db in
            let now = monotonicWallClock()
            // consumers that died (kill -9) give theirs back at once
            for r in try Row.fetchAll(db, sql: "SELECT id, pid, start_ticks FROM suggestions WHERE state = 'running'") {
                let p: Int32 = r["pid"] ?? 0, t: Int64 = r["start_ticks"] ?? 0
                if !AgentGate.isAlive(p, ticks: t) { try db.execute(sql: "UPDATE suggestions SET lease_until = 0 WHERE id = ?", arguments: [r["id"] as Int64]) }
            }
            guard let row = try Row.fetchOne(db, sql: """
                SELECT id FROM suggestions
                WHERE (state = 'pending' AND not_before <= ?1) OR (state = 'running' AND lease_until < ?1)
                ORDER BY not_before, id LIMIT 1
                """, arguments: [now]) else { return nil }
            let id: Int64 = row["id"]
            try db.execute(sql: """
                UPDATE suggestions SET state = 'running', consumer = ?, pid = ?, start_ticks = ?, lease_until = ?, started_at = ?,
                                       attempts = attempts + 1
                WHERE id = ?
                """, arguments: [consumer, pid, ticks, now + lease, now, id])
            return try Self.suggestion(db, id)
        }
    }

    /// Extends the leases of `ids` held by `consumer`.
    public func renewSuggestions(_ ids: [Int64], consumer: String, lease: Double) throws(StoreError) {
        guard !ids.isEmpty else { return }
        try writeImmediate("renew suggestion leases") { db in
            let until = monotonicWallClock() + lease
            for id in ids {
                try db.execute(sql: "UPDATE suggestions SET lease_until = ? WHERE id = ? AND consumer = ? AND state = 'running'",
                               arguments: [until, id, consumer])
            }
        }
    }

    /// Ends a claimed suggestion: `done`, `failed` (parked), `refused`, or `pending` again
    /// (a retry, not before `notBefore`). Only the consumer that holds it can end it.
    ///
    /// - Returns: false when it was no longer this consumer's (its lease expired and another took it).
    @discardableResult
    public func finishSuggestion(id: Int64, consumer: String, state: String, error: String?, notBefore: Double = 0) throws(StoreError) -> Bool {
        try writeImmediate("end a suggestion") { db in
            try db.execute(sql: """
                UPDATE suggestions SET state = ?, error = ?, not_before = ?, finished_at = ?, lease_until = NULL,
                                       consumer = CASE WHEN ? = 'pending' THEN NULL ELSE consumer END
                WHERE id = ? AND consumer = ? AND state = 'running'
                """, arguments: [state, error, notBefore, state == "pending" ? nil : monotonicWallClock(), state, id, consumer])
            return db.changesCount > 0
        }
    }

    /// The suggestions, oldest first: all, or those in `states`; at most `limit` of the newest.
    public func suggestions(states: [String] = [], limit: Int = 1000) throws(StoreError) -> [SuggestionRecord] {
        try readTable("read the suggestion queue") { db in
            let filter = states.isEmpty ? "" : "WHERE state IN (" + states.map { _ in "?" }.joined(separator: ", ") + ")"
            let ids = try Int64.fetchAll(db, sql: "SELECT id FROM (SELECT id FROM suggestions \(filter) ORDER BY id DESC LIMIT ?) ORDER BY id",
                                         arguments: StatementArguments(states + [String(limit)]))
            return try ids.compactMap { try Self.suggestion(db, $0) }
        }
    }

    /// The soonest `not_before` of a pending suggestion and the soonest lease end of a
    /// running one (what a waiting consumer must wake up for), seconds since the epoch.
    public func nextSuggestionDue() throws(StoreError) -> Double? {
        try readTable("read the suggestion queue") { db in
            try Double.fetchOne(db, sql: """
                SELECT min(t) FROM (SELECT min(not_before) AS t FROM suggestions WHERE state = 'pending'
                                    UNION ALL SELECT min(lease_until) FROM suggestions WHERE state = 'running')
                """)
        }
    }

    private static func suggestion(_ db: Database, _ id: Int64) throws -> SuggestionRecord? {
        try Row.fetchOne(db, sql: """
            SELECT id, created_at, argv, source, spec, state, attempts, not_before, consumer, started_at, finished_at, error
            FROM suggestions WHERE id = ?
            """, arguments: [id]).map {
            SuggestionRecord(id: $0["id"], createdAt: $0["created_at"], argv: $0["argv"], source: $0["source"], spec: $0["spec"],
                             state: $0["state"], attempts: $0["attempts"], notBefore: $0["not_before"], consumer: $0["consumer"],
                             startedAt: $0["started_at"], finishedAt: $0["finished_at"], error: $0["error"])
        }
    }

    // MARK: spec phases

    /// Records that a spec's phase changed state (`complete`, `started` ...).
    public func recordSpecPhase(spec: String, phase: String, state: String, source: String?) throws(StoreError) {
        try writeImmediate("record a spec phase") { db in
            try db.execute(sql: "INSERT INTO spec_phases (spec, phase, state, source, at) VALUES (?, ?, ?, ?, ?)",
                           arguments: [spec, phase, state, source, monotonicWallClock()])
        }
    }

    /// The phase changes of a spec, oldest first.
    public func specPhases(spec: String) throws(StoreError) -> [SpecPhaseRecord] {
        try readTable("read the spec phases") { db in
            try Row.fetchAll(db, sql: "SELECT spec, phase, state, source, at FROM spec_phases WHERE spec = ? ORDER BY id", arguments: [spec])
                .map { SpecPhaseRecord(spec: $0["spec"], phase: $0["phase"], state: $0["state"], source: $0["source"], at: $0["at"]) }
        }
    }

    /// Runs `body` in a read transaction, with the store's error for `what`.
    func readTable<T>(_ what: String, _ body: (Database) throws -> T) throws(StoreError) -> T {
        try wrap(what) { try db.read(body) }
    }
}
