import Glibc

/// A task as a script defines it, in the form the engine needs.
public struct WorkflowTaskDef: Sendable {
    public var id: String
    public var deps: [String]
    /// What identifies the task's work (its command and options, or its function's code).
    public var fingerprint: String
    /// Input paths or globs, nil when none are declared.
    public var inputs: [String]?
    /// Output paths or globs, nil when none are declared.
    public var outputs: [String]?
    /// The absolute folder that relative input and output paths start from.
    public var base: String
    /// Whether the task has a retry policy (then each attempt gets a row of its own).
    public var retries: Bool
    /// `deps` already resolved to task indices (by a caller that could do it cheaper); nil:
    /// resolve `deps` by name.
    public var depIndices: [Int32]?

    public init(id: String, deps: [String], fingerprint: String, inputs: [String]? = nil, outputs: [String]? = nil,
                base: String, retries: Bool = false) {
        self.id = id
        self.deps = deps
        self.fingerprint = fingerprint
        self.inputs = inputs
        self.outputs = outputs
        self.base = base
        self.retries = retries
    }
}

/// A workflow definition that cannot run: a cycle, an unknown dependency, a missing input.
public struct WorkflowError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// One run of a workflow: the dependency graph, which tasks are kept from earlier runs and
/// why the others run, the ready queue, and the task records written to the store in batches.
///
/// Knows nothing of Lua: the binding asks it for the next ready task, runs it, and reports
/// how it ended.
public final class WorkflowRun {
    public enum State: UInt8, Sendable { case pending, running, succeeded, failed, skipped }

    /// Whether a task will run, and why (empty when it is kept).
    public struct Decision: Sendable {
        public var run: Bool
        public var reasons: [String]
    }

    /// How a task ended, as the binding reports it.
    public struct Ending {
        public var ok: Bool
        public var error: String?
        public var attempts: Int?
        public var duration: Double?
        public var code: Int?
        public var maxRSS: Int?
        public var cpuTime: Double?
        /// The result as JSON (nil: none).
        public var result: [UInt8]?
        public init(ok: Bool) { self.ok = ok }
    }

    public let name: String
    public let ids: [String]
    private let defs: [WorkflowTaskDef]
    private var index: [String: Int32] = [:]
    /// Explicit dependencies, then those implied by inputs that are other tasks' outputs.
    public private(set) var deps: [[Int32]] = []
    private var dependents: [[Int32]] = []
    /// Tasks in an order where every dependency comes first.
    private var topological: [Int32] = []
    /// Per task: its inputs' absolute paths that another task declares as outputs.
    private var produced: [Set<String>] = []

    public private(set) var state: [State] = []
    public private(set) var decisions: [Decision] = []
    public private(set) var records: [StateStore.TaskRecord] = []
    private var previous: [StateStore.TaskRecord?] = []
    private var remaining: [Int32] = []
    private var ready: [Int32] = []
    private var readyHead = 0
    /// Inputs as hashed when each task started: what its record keeps if it succeeds.
    private var startedInputs: [Int32: String] = [:]
    private var notedAttempts: [Int32: Int] = [:]
    public private(set) var running = 0

    private var dirty: [Int32] = []
    private var isDirty: [Bool] = []
    /// Per task, the state its row in the store has (nil: it has none yet); and how many of
    /// the workflow's rows are in each state, those of tasks it no longer defines included:
    /// what the store holds once the changes taken so far are written.
    private var storedStatus: [String?] = []
    private var storedCounts: [String: Int] = [:]
    /// Whether those are known: ``decide(previous:fresh:)`` read the store's rows.
    private var countsKnown = false
    private var events: [(kind: String, task: String, data: [UInt8]?)] = []
    private var attemptRows: [StateStore.AttemptRecord] = []
    /// Changes waiting for the next flush.
    public var pendingChanges: Int { dirty.count + events.count + attemptRows.count }

    public let hashes: ContentHashes

    /// Builds the graph and checks it: every dependency exists, and there is no cycle.
    ///
    /// - Throws: ``WorkflowError`` naming the task and the problem.
    public init(name: String, tasks: [WorkflowTaskDef], hashes: ContentHashes = ContentHashes()) throws(WorkflowError) {
        self.name = name
        self.defs = tasks
        self.ids = tasks.map(\.id)
        self.hashes = hashes
        let n = tasks.count
        index.reserveCapacity(n)
        for (i, t) in tasks.enumerated() { index[t.id] = Int32(i) }
        deps = []
        deps.reserveCapacity(n)
        for t in tasks {
            if let given = t.depIndices {
                deps.append(given)
                continue
            }
            var d: [Int32] = []
            d.reserveCapacity(t.deps.count)
            for name in t.deps {
                guard let j = index[name] else {
                    throw WorkflowError(message: "workflow '\(self.name)': task '\(t.id)' depends on unknown task '\(name)'")
                }
                d.append(j)
            }
            deps.append(d)
        }
        produced = Array(repeating: [], count: n)
        impliedDependencies()
        dependents = Array(repeating: [], count: n)
        for (i, d) in deps.enumerated() { for j in d { dependents[Int(j)].append(Int32(i)) } }
        try sort()
        state = Array(repeating: .pending, count: n)
        isDirty = Array(repeating: false, count: n)
    }

    /// A task whose input another task declares as an output depends on that task.
    private func impliedDependencies() {
        guard defs.contains(where: { $0.outputs != nil }) else { return }
        var literal: [String: [Int32]] = [:]
        var globs: [(String, Int32)] = []
        for (i, t) in defs.enumerated() {
            for o in t.outputs ?? [] {
                let abs = PathPattern.absolute(o, base: t.base)
                if PathPattern.isGlob(o) { globs.append((abs, Int32(i))) } else { literal[abs, default: []].append(Int32(i)) }
            }
        }
        let sortedLiterals = literal.keys.sorted()
        for (i, t) in defs.enumerated() {
            guard let inputs = t.inputs else { continue }
            var producers: [Int32] = []
            for p in inputs {
                let abs = PathPattern.absolute(p, base: t.base)
                if PathPattern.isGlob(p) {
                    // the literal outputs under the pattern's folder that the pattern matches
                    let prefix = literalPrefix(abs)
                    var lo = sortedLiterals.partitionIndex { $0 >= prefix }
                    while lo < sortedLiterals.count && sortedLiterals[lo].hasPrefix(prefix) {
                        if PathPattern.matches(abs, sortedLiterals[lo]) {
                            producers += literal[sortedLiterals[lo]]!
                            produced[i].insert(sortedLiterals[lo])
                        }
                        lo += 1
                    }
                } else {
                    if let ps = literal[abs] {
                        producers += ps
                        produced[i].insert(abs)
                    }
                    for (g, j) in globs where PathPattern.matches(g, abs) {
                        producers.append(j)
                        produced[i].insert(abs)
                    }
                }
            }
            for j in producers where j != Int32(i) && !deps[i].contains(j) { deps[i].append(j) }
        }
    }

    private func literalPrefix(_ absPattern: String) -> String {
        var out = ""
        for c in absPattern.split(separator: "/", omittingEmptySubsequences: true) {
            if PathPattern.isGlob(String(c)) { break }
            out += "/" + c
        }
        return out + "/"
    }

    /// Kahn's algorithm; what is left over is on or behind a cycle, which is named by walking
    /// dependencies from the first such task until one repeats.
    private func sort() throws(WorkflowError) {
        let n = ids.count
        var left = deps.map { Int32($0.count) }
        topological.reserveCapacity(n)
        for i in 0..<n where left[i] == 0 { topological.append(Int32(i)) }
        var head = 0
        while head < topological.count {
            let t = Int(topological[head])
            head += 1
            for d in dependents[t] {
                left[Int(d)] -= 1
                if left[Int(d)] == 0 { topological.append(d) }
            }
        }
        guard topological.count < n else { return }
        var at = left.firstIndex { $0 > 0 }!
        var path: [Int] = [], pos: [Int: Int] = [:]
        while pos[at] == nil {
            pos[at] = path.count
            path.append(at)
            at = Int(deps[at].first { left[Int($0)] > 0 }!)
        }
        let cycle = path[pos[at]!...].map { ids[$0] } + [ids[at]]
        throw WorkflowError(message: "workflow '\(name)': dependency cycle: \(cycle.joined(separator: " -> "))")
    }

    /// Batches of task indices that can run in parallel, by dependency depth.
    public func levels() -> [[Int]] {
        var depth = Array(repeating: 0, count: ids.count)
        var out: [[Int]] = []
        for t in topological {
            let i = Int(t)
            var l = 0
            for d in deps[i] { l = max(l, depth[Int(d)] + 1) }
            depth[i] = l
        }
        for i in 0..<ids.count {
            while out.count <= depth[i] { out.append([]) }
            out[depth[i]].append(i)
        }
        return out
    }

    // MARK: Deciding what runs

    /// Decides, from the records of earlier runs, which tasks are kept and why the others
    /// run. A task is kept when it succeeded before with the same definition, the same
    /// content of its inputs, all its outputs present, and all its dependencies kept.
    ///
    /// - Throws: ``WorkflowError`` when an input does not exist and no task declares it as
    ///   an output.
    public func decide(previous records: [StateStore.TaskRecord], fresh: Bool) throws(WorkflowError) {
        let n = ids.count
        previous = Array(repeating: nil, count: n)
        // a fresh run starts from no rows (the store forgets them first)
        storedStatus = Array(repeating: nil, count: n)
        storedCounts = [:]
        countsKnown = true
        if !fresh {
            for r in records {
                storedCounts[r.status, default: 0] += 1
                if let i = index[r.id] {
                    previous[Int(i)] = r
                    storedStatus[Int(i)] = r.status
                }
            }
        }
        // every input file, hashed at once on several threads, then each task's inputs as they
        // are now (which also checks that each exists or will be produced)
        var all: [String] = []
        for i in 0..<n {
            let def = defs[i]
            for p in def.inputs ?? [] {
                for rel in expanded(p, base: def.base) { all.append(PathPattern.absolute(rel, base: def.base)) }
            }
        }
        hashes.prefetch(all)
        var current: [String?] = Array(repeating: nil, count: n)
        var notYet: [Int: Set<String>] = [:]
        for i in 0..<n where defs[i].inputs != nil {
            let r = try resolveInputs(i, allowProduced: true)
            current[i] = r.encoded
            if !r.notYetProduced.isEmpty { notYet[i] = r.notYetProduced }
        }
        decisions = Array(repeating: Decision(run: true, reasons: []), count: n)
        for t in topological {
            let i = Int(t)
            var reasons: [String] = []
            if fresh {
                reasons = ["fresh run"]
            } else if let prev = previous[i] {
                if prev.status != "succeeded" {
                    reasons.append(Self.statusReason(prev.status))
                } else {
                    if prev.fingerprint != defs[i].fingerprint { reasons.append("definition changed") }
                    if defs[i].inputs != nil || prev.inputs != nil {
                        reasons += WorkflowIO.inputChanges(old: prev.inputs, new: current[i], skipping: notYet[i] ?? [], base: defs[i].base)
                    }
                    if let missing = WorkflowIO.missingOutputs(defs[i].outputs ?? [], base: defs[i].base).first {
                        reasons.append("output missing: \(missing)")
                    }
                    if let d = deps[i].first(where: { decisions[Int($0)].run }) {
                        reasons.append("dependency re-run: \(ids[Int(d)])")
                    }
                }
            } else {
                reasons = ["not run before"]
            }
            decisions[i] = Decision(run: !reasons.isEmpty, reasons: reasons)
        }
        expansions = [:]  // tasks expand their globs again as they start: earlier ones may add files
    }

    static func statusReason(_ status: String) -> String {
        switch status {
        case "failed": return "failed last time"
        case "skipped": return "skipped last time"
        case "running", "interrupted": return "interrupted last time"
        default: return "not finished last time"
        }
    }

    /// The task's inputs, resolved and hashed now.
    ///
    /// - Parameters:
    ///   - allowProduced: a missing input is no error when another task declares it as an
    ///     output (before the run, it may not exist yet).
    private func resolveInputs(_ i: Int, allowProduced: Bool) throws(WorkflowError) -> (encoded: String, notYetProduced: Set<String>) {
        let def = defs[i]
        var files: [(String, String)] = []
        var seen = Set<String>(), notYet = Set<String>()
        for p in def.inputs ?? [] {
            let matched: [String]
            if PathPattern.isGlob(p) {
                matched = expanded(p, base: def.base)
                if matched.isEmpty {
                    let abs = PathPattern.absolute(p, base: def.base)
                    let coming = produced[i].filter { PathPattern.matches(abs, $0) }
                    if allowProduced && !coming.isEmpty {
                        notYet.formUnion(coming)
                        continue
                    }
                    throw WorkflowError(message: "workflow '\(name)': task '\(def.id)': input '\(p)' matches no file (in \(def.base))")
                }
            } else {
                matched = [p]
            }
            for rel in matched where seen.insert(rel).inserted {
                let abs = PathPattern.absolute(rel, base: def.base)
                switch hashes.hash(abs) {
                case .success(let h):
                    files.append((rel, h))
                case .failure(let e):
                    if e.code == ENOENT && allowProduced && produced[i].contains(abs) {
                        notYet.insert(abs)
                        continue
                    }
                    let what = e.code == ENOENT ? "does not exist" : "cannot be read: \(e.message)"
                    throw WorkflowError(message: "workflow '\(name)': task '\(def.id)': input '\(rel)' \(what) (in \(def.base))")
                }
            }
        }
        return (WorkflowIO.encodeInputs(def.inputs ?? [], files), notYet)
    }

    /// Glob expansions while deciding: tasks that share a pattern read the folders once.
    private var expansions: [String: [String]] = [:]

    private func expanded(_ pattern: String, base: String) -> [String] {
        guard PathPattern.isGlob(pattern) else { return [pattern] }
        let key = base + "\u{0}" + pattern
        if let e = expansions[key] { return e }
        let e = PathPattern.expand(pattern, base: base)
        expansions[key] = e
        return e
    }

    // MARK: Running

    /// Sets up the run: kept tasks count as succeeded (their records as they were), the
    /// others are pending; records of tasks that were running when qw died, or that will run
    /// again after a success, are marked with an event.
    ///
    /// - Returns: the indices of the kept tasks.
    @discardableResult
    public func begin() -> [Int] {
        let n = ids.count
        records = []
        records.reserveCapacity(n)
        remaining = Array(repeating: 0, count: n)
        var kept: [Int] = []
        for i in 0..<n {
            let prev = previous[i]
            if !decisions[i].run, let prev {
                state[i] = .succeeded
                records.append(prev)
                kept.append(i)
                continue
            }
            var r = StateStore.TaskRecord(id: ids[i], fingerprint: defs[i].fingerprint, status: "pending")
            r.ioBase = prev?.ioBase
            r.inputs = prev?.inputs
            r.outputs = prev?.outputs
            if !deps[i].isEmpty { r.deps = WorkflowIO.encodeLines(deps[i].map { ids[Int($0)] }) }
            records.append(r)
            if let prev {
                if prev.status == "running" {
                    mark(i, "interrupted", event: "task interrupted")
                } else {
                    let reason = decisions[i].reasons.first.map { jsonString($0) }.map { Array($0.utf8) }
                    mark(i, "pending", event: prev.status == "succeeded" ? "task changed" : nil, data: reason)
                }
            }
        }
        for i in 0..<n {
            var left: Int32 = 0
            for d in deps[i] where state[Int(d)] != .succeeded { left += 1 }
            remaining[i] = left
            if state[i] == .pending && left == 0 { ready.append(Int32(i)) }
        }
        return kept
    }

    /// The next task whose dependencies have all succeeded, now marked running; nil when
    /// none is ready.
    public func next() -> Int? {
        guard readyHead < ready.count else { return nil }
        let i = Int(ready[readyHead])
        readyHead += 1
        if readyHead > 4096 && readyHead * 2 > ready.count {
            ready.removeFirst(readyHead)
            readyHead = 0
        }
        state[i] = .running
        running += 1
        records[i].startedAt = monotonicWallClock()
        mark(i, "running")
        return i
    }

    /// Whether every task has ended (or can no longer start).
    public var finished: Bool { running == 0 && readyHead >= ready.count }

    /// Hashes a task's inputs as it starts, for its record. Returns an error message when one
    /// cannot be read (the task then fails without running).
    public func prepareInputs(_ i: Int) -> String? {
        guard defs[i].inputs != nil else { return nil }
        do {
            startedInputs[Int32(i)] = try resolveInputs(i, allowProduced: false).encoded
            return nil
        } catch {
            return error.message
        }
    }

    /// Records how a task ended and makes ready what waited for it (or skips it).
    ///
    /// - Returns: why the task failed when it reported success but the engine found it did
    ///   not (a declared output is missing); else nil.
    @discardableResult
    public func end(_ i: Int, _ e: Ending) -> String? {
        var e = e, overruled: String?
        running -= 1
        if e.ok, let missing = WorkflowIO.missingOutputs(defs[i].outputs ?? [], base: defs[i].base).first {
            e.ok = false
            e.error = "declared output '\(missing)' is missing after the task succeeded"
            overruled = e.error
        }
        // in place: a copy of the record would retain and release each of its fields
        let now = monotonicWallClock()
        records[i].attempts = e.attempts ?? (records[i].attempts + 1)
        records[i].finishedAt = now
        records[i].duration = e.duration ?? records[i].startedAt.map { now - $0 }
        records[i].code = e.code
        records[i].maxRSS = e.maxRSS
        records[i].cpuTime = e.cpuTime
        records[i].result = e.result
        if e.ok && (defs[i].inputs != nil || defs[i].outputs != nil) {
            records[i].ioBase = defs[i].base
            records[i].inputs = startedInputs.removeValue(forKey: Int32(i))
            records[i].outputs = defs[i].outputs.map { WorkflowIO.encodeLines($0) }
        }
        // a task with a retry policy gets a row per attempt (its failed ones as they happened)
        if defs[i].retries && !(!e.ok && notedAttempts[Int32(i)] != nil) {
            let r = records[i]
            var a = StateStore.AttemptRecord(task: ids[i], attempt: r.attempts, ok: e.ok)
            a.duration = r.duration
            a.code = r.code
            a.maxRSS = r.maxRSS
            a.cpuTime = r.cpuTime
            a.error = e.ok ? nil : (e.error ?? "failed")
            attemptRows.append(a)
        }
        if e.ok {
            state[i] = .succeeded
            mark(i, "succeeded")
            for d in dependents[i] {
                remaining[Int(d)] -= 1
                if remaining[Int(d)] == 0 && state[Int(d)] == .pending { ready.append(d) }
            }
        } else {
            state[i] = .failed
            mark(i, "failed", error: e.error ?? "failed")
            skipDependents(of: i)
        }
        return overruled
    }

    /// Records a failed attempt of a task with a retry policy, as it happens.
    public func noteFailedAttempt(_ i: Int, error: String?, code: Int?, duration: Double?, maxRSS: Int?, cpuTime: Double?) {
        let n = (notedAttempts[Int32(i)] ?? 0) + 1
        notedAttempts[Int32(i)] = n
        var a = StateStore.AttemptRecord(task: ids[i], attempt: n, ok: false)
        a.error = error
        a.code = code
        a.duration = duration
        a.maxRSS = maxRSS
        a.cpuTime = cpuTime
        attemptRows.append(a)
        var data = "{\"attempt\":\(n)"
        if let error { data += ",\"error\":" + jsonString(error) }
        if let code { data += ",\"code\":\(code)" }
        events.append((kind: "task attempt failed", task: ids[i], data: Array((data + "}").utf8)))
    }

    private func skipDependents(of i: Int) {
        var stack = [(Int32(i), Int32(i))]
        while let (t, cause) = stack.popLast() {
            for d in dependents[Int(t)] where state[Int(d)] == .pending {
                state[Int(d)] = .skipped
                mark(Int(d), "skipped", error: "dependency '\(ids[Int(t)])' did not succeed")
                stack.append((d, cause))
            }
        }
    }

    private func mark(_ i: Int, _ status: String, event: String? = nil, error: String? = nil, data: [UInt8]? = nil) {
        records[i].status = status
        if let error { records[i].error = error }
        if !isDirty[i] {
            isDirty[i] = true
            dirty.append(Int32(i))
        }
        if let event { events.append((kind: event, task: ids[i], data: data ?? error.map { Array(jsonString($0).utf8) })) }
    }

    /// The changes since the last call, for one transaction of
    /// ``StateStore/saveTasks(_:_:attempts:events:counts:)``, with the workflow's task counts
    /// once they are written (nil before ``decide(previous:fresh:)``).
    public func takeChanges() -> (records: [StateStore.TaskRecord], attempts: [StateStore.AttemptRecord],
                                  events: [(kind: String, task: String, data: [UInt8]?)], counts: [String: Int]?) {
        var list: [StateStore.TaskRecord] = []
        list.reserveCapacity(dirty.count)
        for i in dirty {
            let r = records[Int(i)]
            list.append(r)
            isDirty[Int(i)] = false
            guard countsKnown else { continue }
            if let old = storedStatus[Int(i)] {
                if old == r.status { continue }
                storedCounts[old, default: 0] -= 1
            }
            storedCounts[r.status, default: 0] += 1
            storedStatus[Int(i)] = r.status
        }
        defer {
            dirty = []
            events = []
            attemptRows = []
        }
        return (list, attemptRows, events, countsKnown ? storedCounts : nil)
    }

    /// Writes the changes since the last flush in one transaction.
    public func flush(to store: StateStore) throws(StoreError) {
        guard pendingChanges > 0 else { return }
        let c = takeChanges()
        try store.saveTasks(name, c.records, attempts: c.attempts, events: c.events, counts: c.counts)
    }

    /// The tasks by how the run left them, in definition order.
    public func outcome() -> (succeeded: [Int], failed: [Int], skipped: [Int]) {
        var s: [Int] = [], f: [Int] = [], k: [Int] = []
        for i in 0..<ids.count {
            switch state[i] {
            case .succeeded: s.append(i)
            case .failed: f.append(i)
            default: k.append(i)
            }
        }
        return (s, f, k)
    }

    /// The record an earlier run left for a task.
    public func previousRecord(_ i: Int) -> StateStore.TaskRecord? { previous[i] }
}

/// How task inputs and outputs are kept in a task's record: text with one entry per line
/// (tab, newline and backslash in paths escaped).
public enum WorkflowIO {
    /// `p\tPATTERN` lines for the patterns, then `HASH\tPATH` lines for the files, by path.
    public static func encodeInputs(_ patterns: [String], _ files: [(String, String)]) -> String {
        var out = ""
        for p in patterns { out += "p\t" + escape(p) + "\n" }
        for (path, hash) in files.sorted(by: { $0.0 < $1.0 }) { out += hash + "\t" + escape(path) + "\n" }
        return out
    }

    /// The patterns and the files (path to hash) of an encoded input list.
    public static func decodeInputs(_ text: String) -> (patterns: [String], files: [String: String]) {
        var patterns: [String] = [], files: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let tab = line.firstIndex(of: "\t") else { continue }
            let key = String(line[..<tab]), value = unescape(String(line[line.index(after: tab)...]))
            if key == "p" { patterns.append(value) } else { files[value] = key }
        }
        return (patterns, files)
    }

    public static func encodeLines(_ list: [String]) -> String { list.map { escape($0) + "\n" }.joined() }
    public static func decodeLines(_ text: String) -> [String] {
        text.utf8.split(separator: UInt8(ascii: "\n")).map { unescape(String(Substring($0))) }
    }

    /// What differs between the inputs a task last succeeded with and those it has now, as
    /// reasons to run it ("input changed: a.c", "input added: b.c", "input removed: c.c").
    /// Paths in `skipping` (absolute; inputs another task produces) are not compared.
    public static func inputChanges(old: String?, new: String?, skipping: Set<String>, base: String, limit: Int = 3) -> [String] {
        let a = old.map(decodeInputs)?.files ?? [:], b = new.map(decodeInputs)?.files ?? [:]
        var out: [String] = [], more = 0
        func add(_ s: String) { if out.count < limit { out.append(s) } else { more += 1 } }
        for path in Set(a.keys).union(b.keys).sorted() {
            if !skipping.isEmpty && skipping.contains(PathPattern.absolute(path, base: base)) { continue }
            switch (a[path], b[path]) {
            case let (x?, y?) where x != y: add("input changed: \(path)")
            case (nil, _?): add("input added: \(path)")
            case (_?, nil): add("input removed: \(path)")
            default: break
            }
        }
        if more > 0 { out.append("and \(more) more input change\(more == 1 ? "" : "s")") }
        return out
    }

    /// The declared outputs that are missing: a path that is not a file, or a glob that
    /// matches none.
    public static func missingOutputs(_ patterns: [String], base: String) -> [String] {
        patterns.filter { p in
            PathPattern.isGlob(p) ? PathPattern.expand(p, base: base).isEmpty
                                  : FileStamp.of(PathPattern.absolute(p, base: base)) == nil
        }
    }

    static func escape(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 9 || $0 == 10 || $0 == 92 }) else { return s }
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func unescape(_ s: String) -> String {
        // (bytes: a string's contains(_:) of a string is Foundation's search, many times slower)
        guard s.utf8.contains(UInt8(ascii: "\\")) else { return s }
        var out = "", esc = false
        for c in s {
            if esc {
                out.append(c == "t" ? "\t" : c == "n" ? "\n" : c)
                esc = false
            } else if c == "\\" {
                esc = true
            } else {
                out.append(c)
            }
        }
        return out
    }
}

extension Array {
    /// The first index whose element satisfies `pred`, for an array ordered so that `pred`
    /// is false and then true (binary search).
    func partitionIndex(where pred: (Element) -> Bool) -> Int {
        var lo = 0, hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if pred(self[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }
}

extension WorkflowRun {
    /// What the next run would do with each recorded task, judged from the store and the
    /// files alone: nil for a task that would be kept, else why it would run. A changed
    /// definition is not seen here (only the script knows it); a dependency that would run
    /// makes its dependents run.
    public static func nextRun(_ records: [StateStore.TaskRecord], hashes: ContentHashes) -> [String: String] {
        var byID: [String: StateStore.TaskRecord] = [:]
        for r in records { byID[r.id] = r }
        var memo: [String: String?] = [:]
        var visiting = Set<String>()
        func reason(_ id: String) -> String? {
            if let m = memo[id] { return m }
            guard let r = byID[id] else { return nil }
            guard visiting.insert(id).inserted else { return nil }
            defer { visiting.remove(id) }
            var why: String?
            if r.status != "succeeded" {
                why = statusReason(r.status)
            } else {
                let base = r.ioBase ?? "/"
                if let inputs = r.inputs {
                    var files: [(String, String)] = []
                    var unreadable: String?
                    let patterns = WorkflowIO.decodeInputs(inputs).patterns
                    for p in patterns {
                        let matched = PathPattern.isGlob(p) ? PathPattern.expand(p, base: base) : [p]
                        for rel in matched {
                            switch hashes.hash(PathPattern.absolute(rel, base: base)) {
                            case .success(let h): files.append((rel, h))
                            case .failure: unreadable = unreadable ?? rel
                            }
                        }
                    }
                    if let u = unreadable {
                        why = "input missing: \(u)"
                    } else {
                        why = WorkflowIO.inputChanges(old: inputs, new: WorkflowIO.encodeInputs(patterns, files), skipping: [],
                                                      base: base, limit: 1).first
                    }
                }
                if why == nil, let outputs = r.outputs,
                   let missing = WorkflowIO.missingOutputs(WorkflowIO.decodeLines(outputs), base: base).first {
                    why = "output missing: \(missing)"
                }
                if why == nil, let deps = r.deps {
                    for d in WorkflowIO.decodeLines(deps) where reason(d) != nil {
                        why = "dependency re-run: \(d)"
                        break
                    }
                }
            }
            memo[id] = .some(why)
            return why
        }
        var out: [String: String] = [:]
        for r in records { if let w = reason(r.id) { out[r.id] = w } }
        return out
    }
}
