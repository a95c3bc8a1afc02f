import GRDB
import Glibc

/// The machine's gate for agent runs, kept in the store so that every `qw` process of a
/// project shares it: at most `maxAgents` runs at once, starts at least `stagger` seconds
/// apart.
///
/// At most one run per CPU starts within half a second: a CLI's start is CPU work, and more
/// at once only start each later (and crowd the model with requests it may refuse).
///
/// Rate limits are met in two ways, as TCP meets congestion:
/// - *A steady limit* (some runs get through, some are refused) slows the gate down: at the
///   first refusal of an episode starts are paced at 95% of the rate at which the server let
///   runs through (the mean over its last 8 answers within 10 seconds or the most that got
///   through within one second, whichever is higher) or of the pace it had, whichever is
///   lower, and the number of runs at once is halved. Each run that gets through (its first
///   model answer) raises the pace by 0.3% and the window by one per window's worth of runs.
///   The pace holds for the answers too: a start waits until its expected answer comes k
///   intervals after the k-th latest one. It closes only when the server gave a reset time.
/// - *A closed door* (a run started after a refusal is refused too, with no run getting
///   through in between) closes the gate for everyone for the backoff, doubled at each
///   further refusal, and reopens it for one run at a time (a probe) until one gets through.
///
/// A refusal of a run that was already in flight at the last refusal counts for nothing: it
/// says what the gate already knows.
public struct AgentGate {
    public struct Settings: Sendable {
        public var maxAgents: Int
        public var stagger: Double
        public var backoff: Double
        public var maxBackoff: Double
        /// At most `cpus` runs start within `startup` seconds: a CLI spends its first half
        /// second or so on the CPU, and more of them starting at once only start each later
        /// (and, under a rate limit, crowd the model with requests it refuses).
        public var cpus: Int
        public var startup: Double
        public init(maxAgents: Int = 3, stagger: Double = 1, backoff: Double = 1, maxBackoff: Double = 60,
                    cpus: Int = AgentGate.machineCPUs, startup: Double = 0.5) {
            self.maxAgents = maxAgents
            self.stagger = stagger
            self.backoff = backoff
            self.maxBackoff = maxBackoff
            self.cpus = cpus
            self.startup = startup
        }
    }

    /// What the gate says now: `closedUntil` (seconds since the epoch) when a rate limit shut
    /// it; `rate` (starts a second) and `window` (runs at once) when a limit slowed it.
    public struct Status: Sendable {
        public var running: Int
        public var closedUntil: Double?
        public var probing: Bool
        public var rate: Double?
        public var window: Double?
    }

    /// The CPUs online.
    public static let machineCPUs = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))

    /// The pace after a refusal, as a share of the rate the server let runs through or of the
    /// pace there was, whichever is lower. (Below the limit: a CLI's request follows its turn
    /// by a time that varies: by some 50 ms when its prompt comes on stdin to a CLI started
    /// ahead, by some 200 ms when it starts with the prompt.)
    static let admittedShare = 0.95
    /// How much the pace grows for each run that gets through.
    static let increase = 0.003

    /// The start time of a process (clock ticks since boot), to tell a live holder from a
    /// reused pid.
    public static func startTicks(_ pid: Int32) -> Int64? {
        guard let stat = readSmallFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? Int64(fields[19]) : nil
    }

    /// Whether `pid` is the process that was started at `ticks` (0: any process of that pid).
    public static func isAlive(_ pid: Int32, ticks: Int64) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        return ticks == 0 || startTicks(pid) == ticks
    }
}

extension StateStore {
    /// Takes a place at the gate for `run`, or says how long to wait before asking again:
    /// `known` when the gate opens for it then unless others come first (a pace, a stagger,
    /// a closed gate), not when it waits for a place to free or for a probe; `paced` when a
    /// rate limit set a pace; `others`, how many runs hold a place now. With `peek`, only says
    /// so: nothing is taken.
    public func gateAcquire(run: String, settings: AgentGate.Settings, peek: Bool = false) throws(StoreError) -> (granted: Bool, wait: Double, known: Bool, paced: Bool, others: Int) {
        let pid = getpid()
        let ticks = AgentGate.startTicks(pid) ?? 0
        return try writeGate { db in
            try Self.dropDeadHolders(db)
            let now = monotonicWallClock()
            var closedUntil = 0.0, probing = false, lastStart = 0.0, window = 0.0, rate = 0.0, holders = 0
            try db.direct("SELECT closed_until, probing, last_start, window, rate, (SELECT count(*) FROM agent_holders) FROM agent_gate WHERE id = 1") { r in
                closedUntil = r.double(0); probing = r.bool(1); lastStart = r.double(2); window = r.double(3); rate = r.double(4)
                holders = Int(r.int(5))
            }
            if now < closedUntil { return (false, closedUntil - now, true, rate > 0, holders) }
            if probing && holders >= 1 { return (false, 0.1, false, rate > 0, holders) }
            let limit = window > 0 ? min(max(1, settings.maxAgents), max(1, Int(window))) : max(1, settings.maxAgents)
            if holders >= limit { return (false, 0.05, false, rate > 0, holders) }
            let spacing = max(settings.stagger, rate > 0 ? 1 / rate : 0)
            if now < lastStart + spacing { return (false, lastStart + spacing - now, true, rate > 0, holders) }
            if rate > 0 {
                // the pace is the model's: the answer a start now can expect (after the delay
                // that the quick fifth of recent runs had from start to first answer) comes k
                // intervals after the k-th latest answer at the earliest, so that a run that
                // was answered late does not bring the next ones too close behind it
                var answers: [Double] = [], delays: [Double] = []
                try db.direct("SELECT at, delay FROM agent_admits ORDER BY at DESC LIMIT 20") { r in
                    answers.append(r.double(0))
                    if !r.isNull(1) { delays.append(r.double(1)) }
                }
                delays.sort()
                let delay = delays.isEmpty ? 0 : delays[delays.count / 5]
                var due = 0.0
                for (k, at) in answers.prefix(Int(rate.rounded(.up)) + 1).enumerated() { due = max(due, at + Double(k + 1) / rate) }
                if now + delay < due { return (false, due - delay - now, true, true, holders) }
            }
            if settings.startup > 0 {
                var recent: [Double] = []
                try db.direct("SELECT at FROM agent_starts WHERE at > ? ORDER BY at", [.double(now - settings.startup)]) { recent.append($0.double(0)) }
                if recent.count >= settings.cpus { return (false, recent[recent.count - settings.cpus] + settings.startup - now, true, rate > 0, holders) }
            }
            if peek { return (true, 0, true, rate > 0, holders) }
            try db.direct("INSERT OR REPLACE INTO agent_holders (run, pid, start_ticks, since, probe) VALUES (?, ?, ?, ?, ?)",
                          [.text(run), .int(Int64(pid)), .int(ticks), .double(now), .of(probing)])
            try db.direct("UPDATE agent_gate SET last_start = ? WHERE id = 1", [.double(now)])
            try db.direct("DELETE FROM agent_starts WHERE at < ?", [.double(now - 10)])
            try db.direct("INSERT INTO agent_starts (at) VALUES (?)", [.double(now)])
            return (true, 0, true, rate > 0, holders)
        }
    }

    /// Says that `run` got through: the model answered it. The gate opens after a probe, and
    /// the pace and the window grow (see ``AgentGate``). `ready`: its CLI had started and was
    /// waiting for its prompt at its turn; only then does the time from turn to answer tell
    /// when the answer of a start comes (a CLI that starts at its turn takes its start too).
    public func gateAdmitted(run: String, settings: AgentGate.Settings, ready: Bool = true) throws(StoreError) {
        _ = try writeGate { db -> Bool in
            var admitted: Bool?, since = 0.0
            try db.direct("SELECT admitted, since FROM agent_holders WHERE run = ?", [.text(run)]) { admitted = $0.bool(0); since = $0.double(1) }
            guard admitted == false else { return false }  // not holding, or said before
            try db.direct("UPDATE agent_holders SET admitted = 1 WHERE run = ?", [.text(run)])
            let now = monotonicWallClock()
            try db.direct("DELETE FROM agent_admits WHERE at < ?", [.double(now - 10)])
            try db.direct("INSERT INTO agent_admits (at, delay) VALUES (?, ?)", [.double(now), ready ? .double(now - since) : .null])
            var probing = false, window = 0.0, rate = 0.0
            try db.direct("SELECT probing, window, rate FROM agent_gate WHERE id = 1") { r in
                probing = r.bool(0); window = r.double(1); rate = r.double(2)
            }
            var grownWindow = window, grownRate = rate
            if window > 0 {
                grownWindow = window + 1 / window
                if grownWindow >= Double(settings.maxAgents) { grownWindow = 0 }
            }
            if rate > 0 {
                grownRate = rate * (1 + AgentGate.increase)
                // paced more loosely than the stagger and the window allow: no pace at all
                if settings.stagger > 0 && 1 / grownRate < settings.stagger { grownRate = 0 }
            }
            try db.direct("UPDATE agent_gate SET streak = 0, window = ?, rate = ? WHERE id = 1",
                          [.double(grownWindow), .double(grownRate)])
            if probing {
                try db.direct("UPDATE agent_gate SET probing = 0, closed_until = 0, backoff = ? WHERE id = 1",
                              [.double(settings.backoff)])
            }
            return true
        }
    }

    /// Gives the place back. A run that hit a rate limit (or an overload) slows the gate or
    /// closes it (see ``AgentGate``); `retryAfter`, when the server said it, is how long.
    public func gateRelease(run: String, limited: Bool, retryAfter: Double?, settings: AgentGate.Settings) throws(StoreError) {
        _ = try writeGate { db -> Bool in
            var held: Double?
            try db.direct("SELECT since FROM agent_holders WHERE run = ?", [.text(run)]) { held = $0.double(0) }
            try db.direct("DELETE FROM agent_holders WHERE run = ?", [.text(run)])
            guard limited, let since = held else { return false }
            let now = monotonicWallClock()
            var backoff = 0.0, closedUntil = 0.0, window = 0.0, rate = 0.0, streak = 0, limitedAt = 0.0
            try db.direct("SELECT backoff, closed_until, window, rate, streak, limited_at FROM agent_gate WHERE id = 1") { r in
                backoff = r.double(0); closedUntil = r.double(1); window = r.double(2); rate = r.double(3)
                streak = Int(r.int(4)); limitedAt = r.double(5)
            }
            // a run already in flight at the last refusal says nothing new
            guard since >= limitedAt else { return false }
            if streak == 0 {
                // a steady limit: slow down (the pace keeps the next start one interval of the
                // new rate after the last); closed only for as long as the server asked
                var running = 1.0
                try db.direct("SELECT count(*) FROM agent_holders") { running += Double($0.int(0)) }
                // the rate the server let runs through, over its last answers (as many as
                // 10 s hold, up to 8: enough for a mean at a slow pace too, and still recent
                // at a fast one)
                var admits: [Double] = []
                try db.direct("SELECT at FROM agent_admits WHERE at > ? ORDER BY at DESC LIMIT 8", [.double(now - 10)]) { admits.append($0.double(0)) }
                admits.reverse()
                // The most that got through within one second is a rate the server allows
                // too: the mean is low when the runs came slower than it allowed. Too few
                // through for a mean: a burst, paced at that alone (the halved window slows
                // it until a mean is possible).
                var inOneSecond = 0, first = 0
                for (i, at) in admits.enumerated() {
                    while admits[first] <= at - 1 { first += 1 }
                    inOneSecond = max(inOneSecond, i - first + 1)
                }
                var measured = Double(inOneSecond)
                if admits.count >= 3, admits.last! - admits.first! > 0.1 {
                    measured = max(measured, Double(admits.count - 1) / (admits.last! - admits.first!))
                }
                // and every refusal slows a pace there is: one under what the server let
                // through was refused for the runs' uneven timing, and meets it again
                let paced = (rate > 0 ? min(measured > 0 ? measured : rate, rate) : measured) * AgentGate.admittedShare
                let halved = max(1, (window > 0 ? min(window, running) : running) / 2)
                // the refused start does not hold the next one back an interval: the server
                // did not count it, and the pace of the answers says when the next may go
                try db.direct("UPDATE agent_gate SET streak = 1, limited_at = ?, rate = ?, window = ?, closed_until = ?, last_start = 0 WHERE id = 1",
                              [.double(now), .double(paced), .double(halved), .double(max(closedUntil, retryAfter.map { now + $0 } ?? 0))])
            } else {
                // refused again with nothing through in between: the door is shut; probe it
                let next = streak == 1 ? settings.backoff : min(max(backoff * 2, settings.backoff), settings.maxBackoff)
                try db.direct("UPDATE agent_gate SET streak = ?, limited_at = ?, probing = 1, backoff = ?, closed_until = ? WHERE id = 1",
                              [.of(streak + 1), .double(now), .double(next), .double(max(closedUntil, now + (retryAfter ?? next)))])
            }
            return true
        }
    }

    /// The gate now, for `qw resources` and `qw.resources()`.
    public func gateStatus() throws(StoreError) -> AgentGate.Status {
        try writeGate { db in
            try Self.dropDeadHolders(db)
            let row = try Row.fetchOne(db, sql: "SELECT closed_until, probing, rate, window FROM agent_gate WHERE id = 1")!
            let until: Double = row[0], rate: Double = row[2], window: Double = row[3]
            let running = try Int.fetchOne(db, sql: "SELECT count(*) FROM agent_holders") ?? 0
            return AgentGate.Status(running: running, closedUntil: until > monotonicWallClock() ? until : nil, probing: row[1],
                                    rate: rate > 0 ? rate : nil, window: window > 0 ? window : nil)
        }
    }

    private static func dropDeadHolders(_ db: Database) throws {
        var dead: [String] = []
        try db.direct("SELECT run, pid, start_ticks FROM agent_holders") { r in
            if !AgentGate.isAlive(Int32(truncatingIfNeeded: r.int(1)), ticks: r.int(2)), let run = r.text(0) { dead.append(run) }
        }
        for run in dead { try db.direct("DELETE FROM agent_holders WHERE run = ?", [.text(run)]) }
    }
}
