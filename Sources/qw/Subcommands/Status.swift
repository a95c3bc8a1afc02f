import ArgumentParser
import Glibc
import LuaHost
import QuantumwalaCore
import QuantumwalaLua

/// `qw status [NAME]`: workflows and their tasks, from the state store.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show workflows, or one workflow's tasks, from the store.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A workflow's name: list its tasks.")
    var name: String?

    @Flag(help: "Print JSON instead of a table (with --watch: a document per change, one per line).")
    var json = false

    @Flag(help: "Keep watching: redraw on a terminal as the store changes; elsewhere, append a line per event (watching NAME there ends when it finishes).")
    var watch = false

    mutating func run() throws {
        let store = try openStore(global)
        do {
            if watch {
                let name = self.name
                let watcher = StatusWatcher(store: store, name: name, json: json) {
                    let doc = try name.map { try Self.tasksDocument(store, $0) } ?? Self.workflowsDocument(store)
                    return String(decoding: try JSON.encode(doc), as: UTF8.self)
                }
                throw ExitCode(try watcher.run())
            }
            if let name {
                try showTasks(store, name)
            } else {
                try showWorkflows(store)
            }
        } catch let e as StoreError {
            writeAll(2, "qw: \(e.message)\n")
            throw ExitCode(1)
        }
    }

    /// What `qw status --json` prints: each workflow with its task counts.
    static func workflowsDocument(_ store: StateStore) throws -> LuaValue {
        .array(try workflowRows(store).objects)
    }

    private static func workflowRows(_ store: StateStore) throws -> (rows: [[String]], objects: [LuaValue]) {
        var rows: [[String]] = []
        var objects: [LuaValue] = []
        for w in try store.workflows() {
            var counts: [String: Int] = [:]
            for (state, n) in try store.taskCounts(of: w.name) { counts[state] = n }
            let total = counts.values.reduce(0, +)
            let summary = counts.keys.sorted().map { "\(counts[$0]!) \($0)" }.joined(separator: ", ")
            rows.append([w.name, w.status, String(w.runs), String(total), summary])
            var o: [LuaValue: LuaValue] = ["name": .string(w.name), "status": .string(w.status), "runs": .integer(Int64(w.runs)),
                                           "tasks": .integer(Int64(total)), "updated_at": .number(w.updatedAt)]
            var c: [LuaValue: LuaValue] = [:]
            for (k, v) in counts { c[.string(k)] = .integer(Int64(v)) }
            o["counts"] = .table(c)
            if let s = w.script { o["script"] = .string(s) }
            objects.append(.table(o))
        }
        return (rows, objects)
    }

    private func showWorkflows(_ store: StateStore) throws {
        let (rows, objects) = try Self.workflowRows(store)
        if json {
            writeAll(1, String(decoding: try JSON.encode(.array(objects), pretty: true), as: UTF8.self) + "\n")
        } else {
            if rows.isEmpty {
                writeAll(1, "no workflows in \(store.path)\n")
            } else {
                printTable(["workflow", "status", "runs", "tasks", "by status"], rows)
            }
            // what qw consume has to do, is doing, or parked
            let queue = try store.suggestions(states: ["pending", "running", "failed"])
            if !queue.isEmpty {
                writeAll(1, "\n")
                printTable(["suggestion", "state", "attempts", "command"], queue.map { q in
                    var words: [String] = []
                    if case .table(let t)? = try? JSON.decode(Array(q.argv.utf8)) {
                        for i in 0..<t.count {
                            if case .string(let w)? = t[.integer(Int64(i + 1))] { words.append(String(decoding: w, as: UTF8.self)) }
                        }
                    }
                    return ["#\(q.id)", q.state, String(q.attempts), words.joined(separator: " ") + (q.error.map { "  (\($0))" } ?? "")]
                })
            }
        }
    }

    /// What `qw status --json NAME` prints: the workflow's tasks, in the order they started,
    /// each with what the next run would do. A workflow not in the store reads as `absent`.
    static func tasksDocument(_ store: StateStore, _ name: String) throws -> LuaValue {
        guard let w = try store.workflows().first(where: { $0.name == name }) else {
            return .table(["name": .string(name), "status": .string("absent"), "runs": .integer(0), "tasks": .array([])])
        }
        let (tasks, next) = try orderedTasks(store, name)
        var list: [LuaValue] = []
        for t in tasks {
            var o: [LuaValue: LuaValue] = ["id": .string(t.id), "status": .string(t.status), "attempts": .integer(Int64(t.attempts))]
            if let d = t.duration { o["duration"] = .number(d) }
            if let c = t.code { o["code"] = .integer(Int64(c)) }
            if let e = t.error { o["error"] = .string(e) }
            o["next_run"] = .string(next[t.id] ?? "kept")
            list.append(.table(o))
        }
        return .table(["name": .string(name), "status": .string(w.status), "runs": .integer(Int64(w.runs)), "tasks": .array(list)])
    }

    /// The tasks in the order they started, and what the next run would do with each: kept,
    /// or why not (inputs are hashed with the store's cache).
    private static func orderedTasks(_ store: StateStore, _ name: String) throws -> ([StateStore.TaskRecord], [String: String]) {
        let tasks = try store.tasks(of: name).sorted { ($0.startedAt ?? .infinity, $0.id) < ($1.startedAt ?? .infinity, $1.id) }
        return (tasks, WorkflowRun.nextRun(tasks, hashes: ContentHashes(lookup: { try? store.cachedHash($0) ?? nil })))
    }

    private func showTasks(_ store: StateStore, _ name: String) throws {
        guard let w = try store.workflows().first(where: { $0.name == name }) else {
            writeAll(2, "qw: no workflow named '\(name)' in \(store.path)\n")
            throw ExitCode(1)
        }
        if json {
            writeAll(1, String(decoding: try JSON.encode(try Self.tasksDocument(store, name), pretty: true), as: UTF8.self) + "\n")
            return
        }
        let (tasks, next) = try Self.orderedTasks(store, name)
        writeAll(1, "workflow \(name): \(w.status) (run \(w.runs) time\(w.runs == 1 ? "" : "s"))\n")
        let rows = tasks.map { t in
            [t.id, t.status, String(t.attempts), t.duration.map { String(format2($0)) + " s" } ?? "-", next[t.id] ?? "kept", t.error ?? ""]
        }
        printTable(["task", "status", "attempts", "duration", "next run", "error"], rows)
        writeAll(1, "(next run: judged from the files; a changed definition shows when the script runs, e.g. wf:run{ dry_run = true })\n")
    }
}

/// `qw resume NAME`: runs the script that defined a workflow again, where it ran, so that
/// the workflow continues with what had not succeeded.
struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Continue a workflow after a failure or a crash.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The workflow's name.")
    var name: String

    mutating func run() throws {
        let store = try openStore(global)
        let w: StateStore.WorkflowRecord
        do {
            guard let found = try store.workflows().first(where: { $0.name == name }) else {
                writeAll(2, "qw: no workflow named '\(name)' in \(store.path)\n")
                throw ExitCode(1)
            }
            w = found
        } catch let e as StoreError {
            writeAll(2, "qw: \(e.message)\n")
            throw ExitCode(1)
        }
        guard let script = w.script else {
            writeAll(2, "qw: workflow '\(name)' was not started from a script (qw -e or the REPL); run it again where it is defined\n")
            throw ExitCode(1)
        }
        var args: [String] = []
        if let a = w.args, case .table(let t)? = try? JSON.decode(a) {
            for i in 1... {
                guard case .string(let b)? = t[.integer(Int64(i))] else { break }
                args.append(String(decoding: b, as: UTF8.self))
            }
        }
        // the store must stay the one the workflow used, wherever it runs from
        var options = global
        if options.state == nil { options.state = store.path.hasPrefix("/") ? store.path : absolute(store.path) }
        if let cwd = w.cwd, chdir(cwd) != 0 {
            writeAll(2, "qw: cannot enter \(cwd), where workflow '\(name)' ran\n")
            throw ExitCode(1)
        }
        let runtime = try options.makeRuntime()
        try finish(runtime.runFile(script, args: args))
    }
}

private func absolute(_ path: String) -> String {
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buf, buf.count) != nil else { return path }
    return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } + "/" + path
}

/// The store named by --state, QW_STATE or .qw/state.db.
func openStore(_ global: GlobalOptions) throws -> StateStore {
    let path = global.state ?? getenv("QW_STATE").map { String(cString: $0) } ?? ".qw/state.db"
    do {
        return try StateStore(path: path)
    } catch {
        writeAll(2, "qw: \(error.message)\n")
        throw ExitCode(1)
    }
}

func format2(_ v: Double) -> String {
    let r = (v * 100).rounded() / 100
    return String(r)
}

/// Prints rows under a header, columns padded to their widest cell.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count + 2) }.joined()
    }
    writeAll(1, line(header) + "\n")
    for r in rows { writeAll(1, line(r) + "\n") }
}
