import GRDB
import Glibc
import Testing

@testable import QuantumwalaCore

/// What keeps a short qw (an agent run, a hook) short: the store opened on a thread, its WAL
/// kept small, the clean-up after a run on a thread, and the scan for a run's leftovers.
struct ShortRunTests {
    func folder() -> String {
        var template = Array("/tmp/qw-short-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    @Test func aStoreOpenedAheadIsTheStoreAndItsErrorIsTheOpensError() throws {
        let dir = folder()
        defer { removeFolder(dir) }
        let ahead = StateStore.Opening(path: dir + "/sub/state.db")
        let store = try ahead.wait()
        #expect(try store.commit(sets: [("k", Array("1".utf8))], deletes: [], expect: [:]))
        #expect(try StateStore(path: dir + "/sub/state.db").get("k")?.json == Array("1".utf8))
        // a second wait is the same store
        #expect(try ahead.wait() === store)
        // a path that cannot be a store: the same message as opening it here
        let bad = StateStore.Opening(path: "/proc/qw-no/state.db")
        #expect(throws: StoreError.self) { try bad.wait() }
    }

    @Test func backgroundWorkRunsOnAnotherThreadAndGivesItsValue() {
        let main = pthread_self()
        let work = BackgroundWork { pthread_equal(pthread_self(), main) == 0 ? 42 : -1 }
        #expect(work.wait() == 42)
        #expect(work.wait() == 42)
    }

    @Test func theWALIsCopiedAndStartsOverAtTheNextWrite() throws {
        let dir = folder()
        defer { removeFolder(dir) }
        let store = try StateStore(path: dir + "/state.db")
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 3000)
        for i in 0..<400 { _ = try store.commit(sets: [("k\(i)", big)], deletes: [], expect: [:]) }
        let copied = try #require(store.checkpointWAL())
        #expect(copied.frames > 300 && copied.copied == copied.frames, "\(copied)")
        _ = try store.commit(sets: [("after", Array("1".utf8))], deletes: [], expect: [:])
        let after = try #require(store.checkpointWAL())
        #expect(after.frames < 10, "the WAL started over: \(after)")
        // nothing was lost on the way, and another process's open reads the store whole
        let again = try StateStore(path: dir + "/state.db")
        #expect(try again.get("k399")?.json == big)
        #expect(try again.get("after")?.json == Array("1".utf8))
    }

    /// A store is in WAL mode, and opening one writes nothing: a hook's open after a
    /// truncating checkpoint (as at an exit) takes no write lock and leaves the WAL empty.
    @Test func aStoreIsInWALModeAndOpeningItWritesNothing() throws {
        let dir = folder()
        defer { removeFolder(dir) }
        let path = dir + "/state.db"
        let store = try StateStore(path: path)
        #expect(try store.db.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
        _ = try store.commit(sets: [("k", Array("1".utf8))], deletes: [], expect: [:])
        try store.db.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        var st = stat()
        #expect(stat(path + "-wal", &st) == 0 && st.st_size == 0, "the checkpoint emptied the WAL")
        let again = try StateStore(path: path)
        #expect(try again.get("k")?.json == Array("1".utf8))
        #expect(stat(path + "-wal", &st) == 0 && st.st_size == 0, "the open wrote \(st.st_size) bytes to the WAL")
    }

    @Test func theScanFindsAMarkWhereverItIsInTheEnvironmentAndOnlyAWholeEntry() throws {
        let name = "QW_SHORT_TEST_MARK_\(getpid())"
        func start(_ env: [String]) throws -> pid_t { startSleep(env) }
        // first entry, a later one, a longer name that starts the same, and a value in another's
        let first = try start(["\(name)=a", "PATH=/bin"])
        let later = try start(["PATH=/bin", "HOME=/", "\(name)=b"])
        let longer = try start(["\(name)_X=c", "OTHER=\(name)=d"])
        defer {
            for p in [first, later, longer] {
                kill(p, SIGKILL)
                var st: Int32 = 0
                waitpid(p, &st, 0)
            }
        }
        let found = Dictionary(MarkedProcesses.scan(name: name).map { ($0.pid, $0.value) }, uniquingKeysWith: { a, _ in a })
        #expect(found[first] == "a")
        #expect(found[later] == "b")
        #expect(found[longer] == nil)
        #expect(MarkedProcesses.kill(name: name, value: "b") == [later])
    }

    @Test func theScanSeesAProcessThatIsStillInItsExec() {
        // right after posix_spawn, /proc/PID/environ reads empty about one time in five (for
        // up to a few milliseconds on a busy machine): the scan must look again rather than
        // miss the mark
        let name = "QW_SHORT_TEST_EXEC_\(getpid())"
        var missed = 0
        for _ in 0..<300 {
            var pid: pid_t = 0
            let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("30"), nil]
            let envp: [UnsafeMutablePointer<CChar>?] = [strdup("\(name)=x"), nil]
            #expect(posix_spawn(&pid, "/bin/sleep", nil, nil, argv, envp) == 0)
            (argv + envp).forEach { free($0) }
            if !MarkedProcesses.scan(name: name, from: pid).contains(where: { $0.pid == pid }) { missed += 1 }
            kill(pid, SIGKILL)
            var st: Int32 = 0
            waitpid(pid, &st, 0)
        }
        #expect(missed == 0)
    }

    @Test func aCleanUpFromARunsFirstPidLooksOnlyAtWhatCameAfterIt() throws {
        let name = "QW_SHORT_TEST_FROM_\(getpid())"
        func start(_ value: String) -> pid_t { startSleep(["\(name)=\(value)"]) }
        // a process of the same mark from before the run, the run's first, and one of its own
        let before = start("r")
        let tasks = try #require(MarkedProcesses.tasksStarted())
        let first = start("r")
        let own = start("r")
        defer {
            for p in [before, first, own] {
                kill(p, SIGKILL)
                var st: Int32 = 0
                waitpid(p, &st, 0)
            }
        }
        // fewer started than the kernel counts: the pids do not tell
        #expect(!MarkedProcesses.startedAfter(first, tasksBefore: tasks - 1_000_000_000))
        // (the pids went round pid_max, which may be 32768, between these starts: then the
        // clean-up must not go by them, and a whole scan finds all three)
        guard before < first && first < own else {
            #expect(!MarkedProcesses.startedAfter(first, tasksBefore: tasks) || own > first)
            #expect(Set(MarkedProcesses.kill(name: name, value: "r")) == [before, first, own])
            return
        }
        #expect(MarkedProcesses.startedAfter(first, tasksBefore: tasks))
        #expect(Set(MarkedProcesses.kill(name: name, value: "r", from: first)) == [first, own])
        for p in [first, own] {
            var st: Int32 = 0
            waitpid(p, &st, 0)  // gone before the next scan
        }
        // a whole scan also finds the one from before
        #expect(MarkedProcesses.kill(name: name, value: "r") == [before])
    }
}

/// Starts `/bin/sleep 30` with exactly `env` and returns once /proc shows that environment.
/// posix_spawn returns when the child's exec has replaced its memory, a moment before the
/// kernel notes where the new environment lies; until then /proc/PID/environ reads empty,
/// and a scan in that moment would not see the mark.
private func startSleep(_ env: [String]) -> pid_t {
    var pid: pid_t = 0
    func cStrings(_ list: [String]) -> [UnsafeMutablePointer<CChar>?] { list.map { s in strdup(s) } + [nil] }
    let argv = cStrings(["/bin/sleep", "30"]), envp = cStrings(env)
    defer { (argv + envp).forEach { free($0) } }
    #expect(posix_spawn(&pid, "/bin/sleep", nil, nil, argv, envp) == 0)
    // no event says so: look, for at most 2 s
    for _ in 0..<2000 {
        let fd = open("/proc/\(pid)/environ", O_RDONLY | O_CLOEXEC)
        var byte: UInt8 = 0
        let n = fd >= 0 ? read(fd, &byte, 1) : -1
        if fd >= 0 { close(fd) }
        if n != 0 { break }  // something to read, or no such process: nothing to wait for
        usleep(1000)
    }
    return pid
}
