import CSystem
import Glibc
import QuantumwalaCore
import Testing

/// The `qw` binary built next to this test bundle.
let qwBinary: String = {
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    _ = realpath("/proc/self/exe", &buf)
    var dir = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    while let slash = dir.lastIndex(of: "/") {
        dir = String(dir[..<slash])
        if access(dir + "/qw", X_OK) == 0 { return dir + "/qw" }
        if dir.isEmpty { break }
    }
    return "qw"
}()

/// The repository root (for examples/ and stdlib/).
let repoRoot: String = {
    var dir = qwBinary
    while let slash = dir.lastIndex(of: "/"), slash != dir.startIndex {
        dir = String(dir[..<slash])
        if access(dir + "/Package.swift", R_OK) == 0 { return dir }
    }
    var source = #filePath
    for _ in 0..<3 { if let s = source.lastIndex(of: "/") { source = String(source[..<s]) } }
    return source
}()

/// A work board of the tests' own (see `WorkBoard`): the qw processes under test publish
/// there, not in the user's. Removed (it is empty by then) when the test process exits.
let testRuntimeDir: String = {
    var template = Array("/tmp/qw-test-board-XXXXXX".utf8CString)
    let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    atexit { _ = rmdir(testRuntimeDir) }
    return dir
}()

/// The environment every qw under test gets on top of the test process's own.
var qwTestEnv: [(String, String)] { [("NO_COLOR", "1"), ("QW_RUNTIME_DIR", testRuntimeDir)] }

/// The outcome of running `qw` once.
struct Outcome {
    var code: Int32
    var stdout: String
    var stderr: String
}

/// Runs `qw` with arguments (and optionally standard input) to completion.
func qw(_ args: [String], stdin: String? = nil, env: [(String, String)] = [], cwd: String? = nil, timeout: Double = 60) -> Outcome {
    runProgram([qwBinary] + args, stdin: stdin, env: qwTestEnv + env, cwd: cwd, timeout: timeout)
}

/// Runs any program to completion (`qw` through ``qw(_:stdin:env:cwd:timeout:)``).
func runProgram(_ argv: [String], stdin: String? = nil, env: [(String, String)] = [], cwd: String? = nil,
                timeout: Double = 60) -> Outcome {
    var spec = CommandSpec(argv: argv)
    spec.stdin = stdin.map { Array($0.utf8) }
    spec.env = env
    spec.cwd = cwd
    spec.timeout = timeout
    let reactor = Reactor()
    var result: ProcessResult?
    _ = ChildProcess.start(spec, reactor: reactor) { result = $0 }
    while result == nil { reactor.runOnce() }
    return Outcome(code: result!.code, stdout: String(decoding: result!.stdout, as: UTF8.self),
                   stderr: String(decoding: result!.stderr, as: UTF8.self))
}

/// A temporary directory, removed by the caller with `removeTree`.
func makeTempDir() -> String {
    var template = Array("/tmp/qw-test-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

func removeTree(_ path: String) {
    _ = qwShell("rm -rf '\(path)'")
}

/// Runs a shell command (test plumbing only) and returns its stdout.
@discardableResult
func qwShell(_ command: String) -> String {
    let reactor = Reactor()
    var result: ProcessResult?
    _ = ChildProcess.start(.shell(command), reactor: reactor) { result = $0 }
    while result == nil { reactor.runOnce() }
    return String(decoding: result!.stdout, as: UTF8.self)
}

func writeFile(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    precondition(fd >= 0, "cannot write \(path)")
    _ = text.withCString { write(fd, $0, strlen($0)) }
    close(fd)
}

func readText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buf, buf.count)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

/// Pids of live (not zombie) processes whose command line contains `marker`, or, with
/// `inEnvironment`, whose environment has the entry `marker` (`NAME=value`).
func livePids(matching marker: String, inEnvironment: Bool = false) -> [Int32] {
    var pids: [Int32] = []
    guard let dir = opendir("/proc") else { return [] }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let name = withUnsafePointer(to: entry.pointee.d_name) { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
        guard let pid = Int32(name), pid != getpid() else { continue }
        guard let stat = readText("/proc/\(pid)/stat") else { continue }
        if let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(close, offsetBy: 2)]
            if state == "Z" || state == "X" { continue }
        }
        if inEnvironment {
            guard let env = readText("/proc/\(pid)/environ") else { continue }
            if env.split(separator: "\0").contains(where: { $0 == marker }) { pids.append(pid) }
        } else {
            guard let cmd = readText("/proc/\(pid)/cmdline") else { continue }
            if cmd.replacingNULs().contains(marker) { pids.append(pid) }
        }
    }
    return pids
}

/// Waits up to `seconds` for no live process to match `marker`; true when none is left.
func noneLeft(matching marker: String, within seconds: Double = 5) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        if livePids(matching: marker).isEmpty { return true }
        usleep(20_000)
    }
    return livePids(matching: marker).isEmpty
}

extension String {
    func replacingNULs() -> String { String(map { $0 == "\0" ? " " : $0 }) }
    func contains(_ other: String) -> Bool {
        guard !other.isEmpty else { return true }
        let a = Array(utf8), b = Array(other.utf8)
        guard a.count >= b.count else { return false }
        for i in 0...(a.count - b.count) where a[i] == b[0] && Array(a[i..<i + b.count]) == b { return true }
        return false
    }
}

/// A program running on a pseudo-terminal, driven like a person at a keyboard.
final class Terminal {
    let master: Int32
    let pid: pid_t
    private(set) var output = ""
    private var mark = String.Index?.none

    init(_ args: [String], env: [String] = []) throws {
        var m: Int32 = -1
        var p: pid_t = 0
        let argv = [qwBinary] + args
        var cArgs = argv.map { strdup($0) } + [nil]
        var envStrings: [String] = ["TERM=xterm", "PATH=/usr/local/bin:/usr/bin:/bin"] + qwTestEnv.map { $0.0 + "=" + $0.1 }
        if let home = getenv("HOME") { envStrings.append("HOME=" + String(cString: home)) }
        // a sanitizer build's settings (detect_leaks=0...) reach the binary under test too
        for name in ["ASAN_OPTIONS", "LSAN_OPTIONS"] {
            if let v = getenv(name) { envStrings.append(name + "=" + String(cString: v)) }
        }
        envStrings += env
        var cEnv = envStrings.map { strdup($0) } + [nil]
        defer {
            for c in cArgs { free(c) }
            for c in cEnv { free(c) }
        }
        let rc = qw_spawn_pty(qwBinary, &cArgs, &cEnv, nil, 40, 120, &m, &p)
        try #require(rc == 0, "cannot start qw on a terminal: \(rc)")
        master = m
        pid = p
    }

    deinit {
        kill(pid, SIGKILL)
        var st: Int32 = 0
        waitpid(pid, &st, 0)
        close(master)
    }

    func send(_ text: String) {
        _ = text.withCString { write(master, $0, strlen($0)) }
    }

    /// Reads until the output after the last match contains `needle`; returns that output.
    @discardableResult
    func expect(_ needle: String, timeout: Double = 10, sourceLocation: SourceLocation = #_sourceLocation) -> String {
        let deadline = monotonicSeconds() + timeout
        while true {
            let start = mark ?? output.startIndex
            let tail = String(output[start...])
            if let r = tail.firstRange(of: needle) {
                let consumed = tail[..<r.upperBound]
                mark = output.index(start, offsetBy: consumed.count)
                return String(consumed)
            }
            let left = deadline - monotonicSeconds()
            if left <= 0 {
                Issue.record("timed out waiting for \(needle.debugDescription); screen so far:\n\(tail)", sourceLocation: sourceLocation)
                return tail
            }
            var pfd = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, Int32(left * 1000)) > 0 {
                var buf = [UInt8](repeating: 0, count: 4096)
                let n = read(master, &buf, buf.count)
                if n <= 0 {
                    Issue.record("the program ended while waiting for \(needle.debugDescription):\n\(tail)", sourceLocation: sourceLocation)
                    return tail
                }
                output += String(decoding: buf[0..<n], as: UTF8.self)
            }
        }
    }

    /// Waits for the program to exit; its exit status, or nil on timeout.
    func waitExit(timeout: Double = 10) -> Int32? {
        let deadline = monotonicSeconds() + timeout
        var buf = [UInt8](repeating: 0, count: 4096)
        while monotonicSeconds() < deadline {
            var st: Int32 = 0
            if waitpid(pid, &st, WNOHANG) == pid { return (st >> 8) & 0xff }
            var pfd = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 20) > 0 {
                let n = read(master, &buf, buf.count)
                if n > 0 { output += String(decoding: buf[0..<n], as: UTF8.self) }
            }
        }
        return nil
    }
}

extension String {
    func firstRange(of needle: String) -> Range<String.Index>? {
        guard !needle.isEmpty else { return startIndex..<startIndex }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}

extension String {
    /// Every `a` replaced by `b` (Foundation-free).
    func replacingOccurrences(_ a: String, _ b: String) -> String {
        var out = "", rest = Substring(self)
        while let r = rest.firstRange(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }

    /// How many times `needle` occurs.
    func components(_ needle: String) -> Int {
        var n = 0, rest = Substring(self)
        while let r = rest.firstRange(of: needle) { n += 1; rest = rest[r.upperBound...] }
        return n
    }
}

/// A helper process the tests talk to (test plumbing): started with its stdout on a pipe and,
/// when asked, its stdin on one; its stderr goes to /dev/null, so that a crashed test run
/// never waits for it. Returns its pid and the test's ends of the pipes (stdin -1 when none).
func spawnHelper(_ argv: [String], withStdin: Bool = false) -> (pid: pid_t, stdin: Int32, stdout: Int32)? {
    var out: [Int32] = [-1, -1], inp: [Int32] = [-1, -1]
    guard pipe(&out) == 0 else { return nil }
    if withStdin && pipe(&inp) != 0 { close(out[0]); close(out[1]); return nil }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, out[1], 1)
    posix_spawn_file_actions_addclose(&actions, out[0])
    if withStdin {
        posix_spawn_file_actions_adddup2(&actions, inp[0], 0)
        posix_spawn_file_actions_addclose(&actions, inp[1])
    }
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    var cArgs = argv.map { strdup($0) } + [nil]
    defer { for c in cArgs { free(c) } }
    var p: pid_t = 0
    let rc = posix_spawnp(&p, argv[0], &actions, nil, &cArgs, environ)
    posix_spawn_file_actions_destroy(&actions)
    close(out[1])
    if withStdin { close(inp[0]) }
    guard rc == 0 else {
        close(out[0])
        if withStdin { close(inp[1]) }
        return nil
    }
    return (p, withStdin ? inp[1] : -1, out[0])
}

/// The first line a helper prints (without its newline); the pipe is closed after.
func firstLine(of fd: Int32) -> String {
    var line: [UInt8] = []
    var c: UInt8 = 0
    while read(fd, &c, 1) == 1 && c != 10 { line.append(c) }
    close(fd)
    return String(decoding: line, as: UTF8.self)
}
