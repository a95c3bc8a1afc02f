import GRDB
import Glibc

/// The machine's gate for agent runs, kept in the store so that every `qw` process of a
/// project shares it: at most `maxAgents` runs at once, starts `stagger` seconds apart, and
/// closed for everyone when a run hits a rate limit. It then reopens for one run at a time
/// (a probe) until a run gets through, with an exponential backoff between probes.
///
/// After a rate limit the gate also keeps a window, as TCP does: the number of runs at once
/// is halved at each limit and grows by one per window's worth of runs that get through, so
/// a steady rate limit is met at about its rate instead of in bursts that it rejects.
public struct AgentGate {
    public struct Settings: Sendable {
        public var maxAgents: Int
        public var stagger: Double
        public var backoff: Double
        public var maxBackoff: Double
        public init(maxAgents: Int = 3, stagger: Double = 1, backoff: Double = 1, maxBackoff: Double = 60) {
            self.maxAgents = maxAgents
            self.stagger = stagger
            self.backoff = backoff
            self.maxBackoff = maxBackoff
        }
    }

    /// What the gate says now: `closedUntil` (seconds since the epoch) when a rate limit shut it.
    public struct Status: Sendable {
        public var running: Int
        public var closedUntil: Double?
        public var probing: Bool
    }

    /// The start time of a process (clock ticks since boot), to tell a live holder from a
    /// reused pid.
    public static func startTicks(_ pid: Int32) -> Int64? {
        guard let stat = readSmallFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? Int64(fields[19]) : nil
    }
}

extension StateStore {
    /// Takes a place at the gate for `run`, or says how long to wait before asking again.
    public func gateAcquire(run: String, settings: AgentGate.Settings) throws(StoreError) -> (granted: Bool, wait: Double) {
        let pid = getpid()
        let ticks = AgentGate.startTicks(pid) ?? 0
        return try writeGate { db in
            try Self.dropDeadHolders(db)
            let now = monotonicWallClock()
            let row = try Row.fetchOne(db, sql: "SELECT closed_until, probing, last_start, window FROM agent_gate WHERE id = 1")!
            let closedUntil: Double = row[0], probing: Bool = row[1], lastStart: Double = row[2], window: Double = row[3]
            let holders = try Int.fetchOne(db, sql: "SELECT count(*) FROM agent_holders") ?? 0
            if now < closedUntil { return (false, closedUntil - now) }
            if probing && holders >= 1 { return (false, 0.1) }
            let limit = window > 0 ? min(max(1, settings.maxAgents), max(1, Int(window))) : max(1, settings.maxAgents)
            if holders >= limit { return (false, 0.05) }
            if now < lastStart + settings.stagger { return (false, lastStart + settings.stagger - now) }
            try db.execute(sql: "INSERT OR REPLACE INTO agent_holders (run, pid, start_ticks, since, probe) VALUES (?, ?, ?, ?, ?)",
                           arguments: [run, pid, ticks, now, probing])
            try db.execute(sql: "UPDATE agent_gate SET last_start = ? WHERE id = 1", arguments: [now])
            return (true, 0)
        }
    }

    /// Gives the place back. A run that hit a rate limit (or an overload) closes the gate for
    /// `retryAfter` seconds when the server said so, else for the backoff (doubled at each
    /// probe that fails); a run that got through while probing opens it again.
    public func gateRelease(run: String, limited: Bool, retryAfter: Double?, settings: AgentGate.Settings) throws(StoreError) {
        _ = try writeGate { db -> (Bool, Double) in
            let wasProbe = try Bool.fetchOne(db, sql: "SELECT probe FROM agent_holders WHERE run = ?", arguments: [run]) ?? false
            try db.execute(sql: "DELETE FROM agent_holders WHERE run = ?", arguments: [run])
            let now = monotonicWallClock()
            let row = try Row.fetchOne(db, sql: "SELECT probing, backoff, closed_until, window FROM agent_gate WHERE id = 1")!
            let probing: Bool = row[0], backoff: Double = row[1], closedUntil: Double = row[2], window: Double = row[3]
            let holders = try Int.fetchOne(db, sql: "SELECT count(*) FROM agent_holders") ?? 0
            if limited && !probing {
                // the first limit of a closing: halve what was running
                let running = Double(holders + 1)
                try db.execute(sql: "UPDATE agent_gate SET window = ? WHERE id = 1",
                               arguments: [max(1, (window > 0 ? min(window, running) : running) / 2)])
            } else if !limited && window > 0 {
                // additive increase: one more run at once per window's worth of successes
                let grown = window + 1 / window
                try db.execute(sql: "UPDATE agent_gate SET window = ? WHERE id = 1",
                               arguments: [grown >= Double(settings.maxAgents) ? 0 : grown])
            }
            if limited {
                // a failed probe doubles the wait; runs that were already in flight when the
                // gate closed only keep it closed
                let next: Double
                if wasProbe { next = min(max(backoff * 2, settings.backoff), settings.maxBackoff) }
                else if probing { next = backoff }
                else { next = settings.backoff }
                let until = max(closedUntil, now + (retryAfter ?? next))
                try db.execute(sql: "UPDATE agent_gate SET closed_until = ?, probing = 1, backoff = ? WHERE id = 1",
                               arguments: [until, next])
            } else if probing {
                try db.execute(sql: "UPDATE agent_gate SET probing = 0, backoff = ? WHERE id = 1", arguments: [settings.backoff])
            }
            return (true, 0)
        }
    }

    /// The gate now, for `qw resources` and `qw.resources()`.
    public func gateStatus() throws(StoreError) -> AgentGate.Status {
        try writeGate { db in
            try Self.dropDeadHolders(db)
            let row = try Row.fetchOne(db, sql: "SELECT closed_until, probing FROM agent_gate WHERE id = 1")!
            let until: Double = row[0]
            let running = try Int.fetchOne(db, sql: "SELECT count(*) FROM agent_holders") ?? 0
            return AgentGate.Status(running: running, closedUntil: until > monotonicWallClock() ? until : nil, probing: row[1])
        }
    }

    private static func dropDeadHolders(_ db: Database) throws {
        for r in try Row.fetchAll(db, sql: "SELECT run, pid, start_ticks FROM agent_holders") {
            let pid: Int32 = r[1], ticks: Int64 = r[2]
            let alive = kill(pid, 0) == 0 || errno == EPERM
            if !alive || (ticks != 0 && AgentGate.startTicks(pid) != ticks) {
                try db.execute(sql: "DELETE FROM agent_holders WHERE run = ?", arguments: [r[0] as String])
            }
        }
    }
}
