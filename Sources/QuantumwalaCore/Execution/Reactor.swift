public import CSystem
import Glibc

/// A single-threaded event loop over epoll: file descriptors and timers.
///
/// Everything qw waits for (process exits through pidfds, pipe output, timers, the signal
/// wake pipe) is dispatched from here on the thread that owns the Lua state, so results reach
/// Lua without a thread hop or a lock.
public final class Reactor {
    /// A handler for readiness events on one descriptor.
    public typealias Handler = (_ events: UInt32) -> Void

    /// A timer's identity, for ``cancel(_:)``.
    public struct TimerID: Hashable, Sendable { let seq: UInt64 }

    private struct Timer {
        var deadline: UInt64
        var seq: UInt64
    }

    private let epfd: Int32
    private var handlers: [Handler?] = []
    private var watched = 0
    private var heap: [Timer] = []
    private var timerCallbacks: [UInt64: () -> Void] = [:]
    private var nextSeq: UInt64 = 0
    private var events = [epoll_event](repeating: epoll_event(), count: 256)

    /// A 64 KiB buffer for reads done inside handlers (one thread, so one buffer serves all).
    public let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)

    /// Where programs named without a slash were found in PATH (see ``resolveProgram(_:)``).
    private var programPaths: [String: String] = [:]
    private var programPathsFor: String?

    /// The path `execvp` would run for `name`, remembered per PATH value so that a child does
    /// not try every PATH entry before the right one. nil: not found (let the spawn report it).
    public func resolveProgram(_ name: String) -> String? {
        if name.contains("/") { return name }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        if path != programPathsFor {
            programPaths = [:]
            programPathsFor = path
        }
        if let p = programPaths[name] { return p }
        for dir in path.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = (dir.isEmpty ? "." : String(dir)) + "/" + name
            var st = stat()
            if stat(candidate, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 {
                programPaths[name] = candidate
                return candidate
            }
        }
        return nil
    }

    private var spawner: OpaquePointer?
    private var spawnCompletions: [UInt64: (UnsafeMutablePointer<qw_spawn_req>) -> Void] = [:]
    private var nextSpawnToken: UInt64 = 0

    /// Hands a spawn to the spawner threads; `completion` runs on this thread when it is done.
    /// The request is freed after `completion` returns. Returns false (and does nothing) when
    /// no spawner thread can be started: spawn in place then.
    public func submitSpawn(_ req: UnsafeMutablePointer<qw_spawn_req>, _ completion: @escaping (UnsafeMutablePointer<qw_spawn_req>) -> Void) -> Bool {
        if spawner == nil {
            // Two spawners per core (at most 8): each waits while its child execs. On 2 cores,
            // 2000 short commands took a median 569 ms with 4 spawners, 590 with 3 and 595
            // with 2 (10 interleaved runs each). QW_SPAWN_THREADS overrides it.
            var threads = max(1, min(8, 2 * sysconf(Int32(_SC_NPROCESSORS_ONLN))))
            if let v = getenv("QW_SPAWN_THREADS"), let n = Int(String(cString: v)), n >= 1, n <= 64 { threads = n }
            guard let owner = qw_spawner_owner_new(Int32(threads)) else { return false }
            spawner = owner
            watch(qw_spawner_owner_fd(owner), events: UInt32(QW_EPOLLIN)) { [unowned self] _ in
                var r = qw_spawner_take_done(owner)
                while let req = r {
                    r = req.pointee.next
                    if let done = spawnCompletions.removeValue(forKey: req.pointee.token) { done(req) }
                    qw_spawn_req_free(req)
                }
            }
            externalWatches += 1
        }
        nextSpawnToken += 1
        req.pointee.token = nextSpawnToken
        spawnCompletions[nextSpawnToken] = completion
        qw_spawner_submit(spawner, req)
        return true
    }

    /// Forgets a remembered program path (it failed to start).
    public func forgetProgram(_ name: String) { programPaths[name] = nil }

    /// Called when a signal handler wrote to the wake pipe.
    public var onWake: (() -> Void)?

    public init() {
        // Writing to a child that closed its input must fail with EPIPE, not kill qw.
        signal(SIGPIPE, SIG_IGN)
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epfd >= 0, "epoll_create1 failed: \(errnoText(errno))")
        let wake = qw_wake_fd()
        if wake >= 0 {
            watch(wake, events: UInt32(QW_EPOLLIN)) { [unowned self] _ in
                qw_drain_wake()
                self.onWake?()
            }
        }
    }

    deinit {
        // an owner with spawns in flight is left to the worker threads (never freed under them)
        if let spawner, spawnCompletions.isEmpty { qw_spawner_owner_free(spawner) }
        close(epfd)
        scratch.deallocate()
    }

    /// Whether anything besides the wake pipe is being waited for.
    public var hasWork: Bool {
        watched > (qw_wake_fd() >= 0 ? 1 : 0) + externalWatches || !timerCallbacks.isEmpty || !spawnCompletions.isEmpty
    }
    /// Watches that stay for the reactor's life (the spawner's eventfd) and are not work.
    private var externalWatches = 0

    /// Calls `handler` whenever `fd` is ready for `events` (EPOLLIN, EPOLLOUT...).
    public func watch(_ fd: Int32, events: UInt32, _ handler: @escaping Handler) {
        var ev = epoll_event()
        ev.events = events
        ev.data.fd = fd
        if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0 {
            preconditionFailure("epoll_ctl(ADD, \(fd)) failed: \(errnoText(errno))")
        }
        if Int(fd) >= handlers.count { handlers += Array(repeating: nil, count: Int(fd) + 64 - handlers.count) }
        handlers[Int(fd)] = handler
        watched += 1
    }

    /// Stops watching `fd` (before it is closed).
    ///
    /// Closing alone is not enough: a child being spawned holds copies of every descriptor
    /// until its exec, and epoll keeps reporting a description while any copy is open.
    public func unwatch(_ fd: Int32) {
        guard Int(fd) < handlers.count, handlers[Int(fd)] != nil else { return }
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
        handlers[Int(fd)] = nil
        watched -= 1
    }

    /// Calls `callback` once, `seconds` from now.
    @discardableResult
    public func after(_ seconds: Double, _ callback: @escaping () -> Void) -> TimerID {
        nextSeq += 1
        let delay = seconds > 0 ? UInt64(min(seconds, 1e9) * 1e9) : 0
        let t = Timer(deadline: monotonicNanos() + delay, seq: nextSeq)
        timerCallbacks[t.seq] = callback
        heap.append(t)
        siftUp(heap.count - 1)
        return TimerID(seq: t.seq)
    }

    /// Cancels a timer that has not fired yet.
    public func cancel(_ id: TimerID) {
        timerCallbacks[id.seq] = nil
    }

    /// Waits for events up to `maxWait` seconds (nil: until the next timer or event) and
    /// dispatches them.
    public func runOnce(maxWait: Double? = nil) {
        var timeout: Int32 = -1
        purgeCancelled()
        if let first = heap.first {
            let now = monotonicNanos()
            timeout = first.deadline <= now ? 0 : Int32(min((first.deadline - now + 999_999) / 1_000_000, 3_600_000))
        }
        if let maxWait {
            let ms = Int32(max(0, min(maxWait, 3600)) * 1000)
            timeout = timeout < 0 ? ms : min(timeout, ms)
        }
        let n = events.withUnsafeMutableBufferPointer { buf in
            epoll_wait(epfd, buf.baseAddress, Int32(buf.count), timeout)
        }
        if n > 0 {
            for i in 0..<Int(n) {
                let ev = events[i]
                let fd = Int(ev.data.fd)
                if fd < handlers.count, let h = handlers[fd] { h(ev.events) }
            }
        }
        fireTimers()
    }

    private func fireTimers() {
        let now = monotonicNanos()
        while let first = heap.first, first.deadline <= now {
            popHeap()
            if let cb = timerCallbacks.removeValue(forKey: first.seq) { cb() }
        }
    }

    private func purgeCancelled() {
        while let first = heap.first, timerCallbacks[first.seq] == nil { popHeap() }
    }

    private func popHeap() {
        heap.swapAt(0, heap.count - 1)
        heap.removeLast()
        if !heap.isEmpty { siftDown(0) }
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        heap[a].deadline != heap[b].deadline ? heap[a].deadline < heap[b].deadline : heap[a].seq < heap[b].seq
    }

    private func siftUp(_ i: Int) {
        var i = i
        while i > 0 {
            let p = (i - 1) / 2
            if !less(i, p) { break }
            heap.swapAt(i, p)
            i = p
        }
    }

    private func siftDown(_ i: Int) {
        var i = i
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && less(l, m) { m = l }
            if r < heap.count && less(r, m) { m = r }
            if m == i { return }
            heap.swapAt(i, m)
            i = m
        }
    }
}
