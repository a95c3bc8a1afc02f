/// A command that first waits for admission (a ``Lease`` from the ``ResourceManager``), then
/// runs as a ``ChildProcess`` holding that lease until it exits.
///
/// Cancelling it works in either phase: a waiting request is withdrawn, a running process
/// is terminated; either way `onExit` is called exactly once.
public final class AdmittedProcess {
    public let spec: CommandSpec
    public let request: ResourceRequest
    public private(set) var child: ChildProcess?
    public private(set) var finished = false
    /// The process id, 0 while it waits for admission.
    public var pid: Int32 { child?.pid ?? 0 }
    /// When it asked for admission, and when its process started (wall-clock seconds).
    public let queuedAt = wallSeconds()
    public private(set) var startedAt: Double?
    public var running: Bool { !finished }

    private unowned let manager: ResourceManager
    private var waiting: Int?
    private var onExit: ((ProcessResult) -> Void)?
    private var lease: Lease?
    /// What was asked of the process before it started (``write(_:)``, ``closeInput()``,
    /// ``setTimeout(_:)``), done when it starts.
    private var pendingInput: [UInt8] = []
    private var pendingClose = false
    private var pendingTimeout: Double??

    /// Asks for admission and starts the process once granted.
    ///
    /// - Parameters:
    ///   - onStart: called when the process has been started (before it exits).
    public init(_ spec: CommandSpec, request: ResourceRequest, admissionTimeout: Double? = nil,
                manager: ResourceManager, reactor: Reactor,
                onStart: ((ChildProcess) -> Void)? = nil, onExit: @escaping (ProcessResult) -> Void) {
        self.spec = spec
        self.request = request
        self.manager = manager
        self.onExit = onExit
        waiting = manager.acquire(request, timeout: admissionTimeout) { [self] result in
            waiting = nil
            switch result {
            case .failure(let e):
                finish(.notStarted(e.message), releasing: nil)
            case .success(let lease):
                self.lease = lease
                startedAt = wallSeconds()
                let child = ChildProcess.start(spec, reactor: reactor) { [self] r in
                    finish(r, releasing: lease)
                }
                self.child = child
                if let child, !finished {
                    if !pendingInput.isEmpty { child.write(pendingInput) }
                    if pendingClose { child.closeInput() }
                    if let t = pendingTimeout { child.setTimeout(t) }
                    pendingInput = []
                    onStart?(child)
                }
            }
        }
    }

    private func finish(_ r: ProcessResult, releasing lease: Lease?) {
        guard !finished else { return }
        finished = true
        if let lease { manager.release(lease) }  // before onExit, so its slot can start the next
        let cb = onExit
        onExit = nil
        cb?(r)
    }

    /// Terminates the process (or withdraws the waiting request); `reason` becomes the error.
    public func terminate(reason: String) {
        if let id = waiting {
            manager.cancel(id, reason: reason)
        } else {
            child?.terminate(reason: reason)
        }
    }

    /// Writes to the standard input of a process whose spec has `stdinOpen` (kept until it
    /// starts, while it waits for admission). False when its input is closed.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        if let child { return child.write(bytes) }
        guard !finished, spec.stdinOpen, !pendingClose else { return false }
        pendingInput.append(contentsOf: bytes)
        return true
    }

    /// Ends the standard input (after what was written).
    public func closeInput() {
        if let child { child.closeInput() } else { pendingClose = true }
    }

    /// Sets the timeout to `seconds` from now (from its start, when it waits for admission);
    /// nil: none.
    public func setTimeout(_ seconds: Double?) {
        if let child { child.setTimeout(seconds) } else { pendingTimeout = .some(seconds) }
    }

    /// Sends a signal to the running process group.
    public func send(_ signal: Int32) { child?.send(signal) }
}
