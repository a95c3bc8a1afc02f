import Glibc

/// Work done on a thread of its own while the caller goes on, joined when its result is
/// wanted: for the few milliseconds of a short qw's start and end that wait on the system (a
/// store opened, leftover processes looked for) rather than on the Lua code.
///
/// ``wait()`` is for the thread that made it. A process that exits first waits for the work at
/// exit, so that nothing is cut off halfway.
public final class BackgroundWork<Value>: @unchecked Sendable {
    private let thread: WorkThread
    private let box: ValueBox<Value>

    /// Starts `work`; when no thread can be started, ``wait()`` does it instead.
    public init(_ work: @escaping () -> Value) {
        let box = ValueBox<Value>()
        thread = WorkThread { box.value = work() }
        self.box = box
    }

    /// The work's result, once it is done.
    public func wait() -> Value {
        thread.join()
        return box.value!
    }
}

private final class ValueBox<Value>: @unchecked Sendable {
    var value: Value?
}

/// A thread running one body; not generic, so that its C entry point can be.
private final class WorkThread: @unchecked Sendable {
    private var body: (() -> Void)?
    private var thread = pthread_t()
    private var running = false

    nonisolated(unsafe) private static var unjoined: [WorkThread] = []
    nonisolated(unsafe) private static var exitHandlerInstalled = false

    init(_ body: @escaping () -> Void) {
        self.body = body
        let context = Unmanaged.passRetained(self).toOpaque()
        let r = pthread_create(&thread, nil, { context in
            let me = Unmanaged<WorkThread>.fromOpaque(context!).takeRetainedValue()
            me.body?()
            me.body = nil
            return nil
        }, context)
        guard r == 0 else {
            Unmanaged<WorkThread>.fromOpaque(context).release()
            return
        }
        running = true
        Self.unjoined.append(self)
        if !Self.exitHandlerInstalled {
            Self.exitHandlerInstalled = true
            atexit { while let t = WorkThread.unjoined.last { t.join() } }
        }
    }

    /// Waits for the body to be done (runs it here when no thread could be started).
    func join() {
        if running {
            pthread_join(thread, nil)
            running = false
            Self.unjoined.removeAll { $0 === self }
        }
        if let body {
            self.body = nil
            body()
        }
    }
}
