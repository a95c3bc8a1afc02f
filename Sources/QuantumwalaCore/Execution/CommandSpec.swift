/// What to run and how: the Swift form of a `qw.exec` command spec.
public struct CommandSpec: Sendable {
    /// The program and its arguments; the program is looked up in PATH.
    public var argv: [String]
    /// A label for logs and state (defaults to the program name).
    public var name: String?
    public var cwd: String?
    /// Variables added to the environment (or the whole of it with `clearEnv`).
    public var env: [(String, String)] = []
    public var clearEnv = false
    /// Bytes written to standard input; nil: /dev/null.
    public var stdin: [UInt8]?
    /// Whether standard input stays open after `stdin` is written, for more
    /// (``ChildProcess/write(_:)``) until ``ChildProcess/closeInput()``.
    public var stdinOpen = false
    /// Seconds before the process group is terminated; nil: none.
    public var timeout: Double?
    /// CPU seconds the process may use (RLIMIT_CPU, whole seconds, rounded up); nil: no limit.
    public var cpuTimeLimit: Double?
    /// Seconds between SIGTERM and SIGKILL when terminating.
    public var killGrace: Double = 2
    /// A file that receives a copy of stdout and stderr as they arrive.
    public var logPath: String?

    public init(argv: [String]) { self.argv = argv }

    /// A command run by `/bin/sh -c`.
    public static func shell(_ command: String) -> CommandSpec {
        var s = CommandSpec(argv: ["/bin/sh", "-c", command])
        s.name = command
        return s
    }

    /// The label shown for this command.
    public var label: String { name ?? argv.joined(separator: " ") }
}

/// How a process ended, with its output and the kernel's accounting.
public struct ProcessResult: Sendable {
    /// Exit status; 124 on timeout, 127 when it could not start, 128+N when killed by N.
    public var code: Int32 = 0
    /// The terminating signal, if a signal ended it.
    public var signal: Int32?
    public var timedOut = false
    public var stdout: [UInt8] = []
    public var stderr: [UInt8] = []
    /// Wall seconds from start to exit.
    public var duration: Double = 0
    public var pid: Int32 = 0
    /// Peak resident memory of the process and its waited-for descendants, bytes.
    public var maxRSS: Int = 0
    /// User plus system CPU seconds of the process and its waited-for descendants.
    public var cpuTime: Double = 0
    /// Why it did not succeed (failed to start, timed out, killed), nil when ok.
    public var error: String?

    /// Whether it exited with 0 and did not time out.
    public var ok: Bool { code == 0 && !timedOut && signal == nil && error == nil }

    public init() {}

    /// The result of a command that could not be started.
    public static func notStarted(_ message: String) -> ProcessResult {
        var r = ProcessResult()
        r.code = 127
        r.error = message
        return r
    }
}
