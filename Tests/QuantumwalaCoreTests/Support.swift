import Glibc
import Testing

@testable import QuantumwalaCore

/// Holds a value set from a callback.
final class Box<T> {
    var value: T?
    init() {}
}

/// qw ignores SIGPIPE process-wide (qw_install_signal_handlers); the child-process code relies
/// on it (writing stdin to a child that has exited must give EPIPE, not kill the writer).
/// The test process does the same, once.
let ignoreSIGPIPE: Void = {
    signal(SIGPIPE, SIG_IGN)
}()

/// Starts `spec` on `reactor` and runs the reactor until its result arrives (or `limit`
/// seconds pass, which records an issue and kills the group).
func run(_ spec: CommandSpec, reactor: Reactor = Reactor(), limit: Double = 15,
         sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessResult {
    _ = ignoreSIGPIPE
    let box = Box<ProcessResult>()
    let child = ChildProcess.start(spec, reactor: reactor) { box.value = $0 }
    let deadline = monotonicSeconds() + limit
    while box.value == nil && monotonicSeconds() < deadline {
        reactor.runOnce(maxWait: 0.5)
    }
    if box.value == nil, let child {
        kill(-child.pid, SIGKILL)
        // let the reactor see the exit so nothing is left behind
        let end = monotonicSeconds() + 5
        while box.value == nil && monotonicSeconds() < end { reactor.runOnce(maxWait: 0.5) }
    }
    withExtendedLifetime(child) {}
    return try #require(box.value, "no result for \(spec.label) within \(limit)s", sourceLocation: sourceLocation)
}

/// Runs `command` with `/bin/sh -c`.
func sh(_ command: String, _ configure: (inout CommandSpec) -> Void = { _ in },
        sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessResult {
    var spec = CommandSpec.shell(command)
    configure(&spec)
    return try run(spec, sourceLocation: sourceLocation)
}

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// The pids of live (not zombie) processes whose process group is `pgid`, from /proc.
func liveMembers(ofGroup pgid: Int32) -> [Int32] {
    guard let dir = opendir("/proc") else { return [] }
    defer { closedir(dir) }
    var found: [Int32] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        guard let pid = Int32(name) else { continue }
        guard let stat = readSmallFile("/proc/\(pid)/stat") else { continue }
        // "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses, so the
        // fields after the last ")" are: state, ppid, pgrp
        guard let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 2, let pgrp = Int32(fields[2]) else { continue }
        if pgrp == pgid && fields[0] != "Z" && fields[0] != "X" { found.append(pid) }
    }
    return found
}

func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 4096)
    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return nil }
    return String(decoding: buf[0..<n], as: UTF8.self)
}

/// Waits (bounded) until no live process is left in group `pgid`; returns the survivors.
func waitForGroupGone(_ pgid: Int32, within seconds: Double = 3) -> [Int32] {
    let deadline = monotonicSeconds() + seconds
    var left = liveMembers(ofGroup: pgid)
    while !left.isEmpty && monotonicSeconds() < deadline {
        var ts = timespec(tv_sec: 0, tv_nsec: 10_000_000)
        nanosleep(&ts, nil)
        left = liveMembers(ofGroup: pgid)
    }
    return left
}

/// A fresh temporary directory (real path).
func makeTempDir() throws -> String {
    var template = Array("/tmp/qw-core-tests-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    let made = try #require(p.map { String(cString: $0) })
    guard let resolved = realpath(made, nil) else { return made }
    defer { free(resolved) }
    return String(cString: resolved)
}

func removeTree(_ path: String) {
    var spec = CommandSpec(argv: ["rm", "-rf", path])
    spec.name = "cleanup"
    _ = try? run(spec)
}
