import CSystem
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

    private struct Watch {
        var handler: Handler
        /// Also in the event's data, so that an event read before its fd was closed and the
        /// number reused never reaches the new fd's handler.
        var tag: UInt32
        /// Dropped once called (a one-shot registration, silent after its event).
        var once: Bool
    }

    private let epfd: Int32
    private var watches: [Watch?] = []
    private var nextTag: UInt32 = 0
    private var watched = 0
    private var heap: [Timer] = []
    private var timerCallbacks: [UInt64: () -> Void] = [:]
    private var nextSeq: UInt64 = 0
    private var events = [epoll_event](repeating: epoll_event(), count: 256)

    /// A 64 KiB buffer for reads done inside handlers (one thread, so one buffer serves all).
    public let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)

    /// Where programs named without a slash were found in PATH (see ``resolveProgram(_:)``).
    private var programPaths: [String: String] = [:]
    /// The PATH those were found in.
    private var programPathsFor: [CChar] = []

    /// What ``resolveProgram(_:)`` found.
    public enum ProgramLookup: Equatable {
        case path(String)
        /// Not runnable from PATH: ENOENT, or EACCES when a candidate exists but cannot be run
        /// (as `execvp` reports it).
        case failed(errno: Int32)
    }

    /// The path `execvp` would run for `name` (a name with a slash is its own path),
    /// remembered per PATH value so that a child does not try every PATH entry first.
    /// PATH when none is set, as the child's search uses it.
    nonisolated(unsafe) private static let defaultPath: UnsafeMutablePointer<CChar> = strdup("/usr/local/bin:/usr/bin:/bin")!

    public func resolveProgram(_ name: String) -> ProgramLookup {
        if name.utf8.contains(UInt8(ascii: "/")) { return .path(name) }
        let path = getenv("PATH") ?? Self.defaultPath
        let same = programPathsFor.withUnsafeBufferPointer { $0.count > 0 && strcmp($0.baseAddress!, path) == 0 }
        if !same {
            programPaths = [:]
            programPathsFor = Array(UnsafeBufferPointer(start: path, count: strlen(path) + 1))
        }
        if let p = programPaths[name] { return .path(p) }
        var error = ENOENT
        for dir in String(cString: path).split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = (dir.isEmpty ? "." : String(dir)) + "/" + name
            var st = stat()
            guard stat(candidate, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 {
                programPaths[name] = candidate
                return .path(candidate)
            }
            error = EACCES
        }
        return .failed(errno: error)
    }

    /// Whether spawns use vfork + execve instead of clone (QW_SPAWN=vfork; see qwsystem.c).
    public var spawnWithVfork = getenv("QW_SPAWN").map { String(cString: $0) == "vfork" } ?? false

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
        close(epfd)
        scratch.deallocate()
    }

    /// Whether anything besides the wake pipe is being waited for.
    public var hasWork: Bool {
        watched > (qw_wake_fd() >= 0 ? 1 : 0) || timerCallbacks.count > (soonArmed ? 1 : 0)
    }

    /// Calls `handler` whenever `fd` is ready for `events` (EPOLLIN, EPOLLOUT...).
    public func watch(_ fd: Int32, events: UInt32, _ handler: @escaping Handler) {
        add(fd, events: events, once: false, handler)
    }

    /// Calls `handler` once, the first time `fd` is ready for `events`. After that the fd may
    /// be closed without ``unwatch(_:)`` (its registration stays silent).
    public func watchOnce(_ fd: Int32, events: UInt32, _ handler: @escaping Handler) {
        add(fd, events: events | (1 << 30), once: true, handler)  // EPOLLONESHOT
    }

    private func add(_ fd: Int32, events: UInt32, once: Bool, _ handler: @escaping Handler) {
        nextTag &+= 1
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = UInt64(nextTag) << 32 | UInt64(UInt32(bitPattern: fd))
        if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0 {
            preconditionFailure("epoll_ctl(ADD, \(fd)) failed: \(errnoText(errno))")
        }
        store(fd, Watch(handler: handler, tag: nextTag, once: once))
    }

    private func store(_ fd: Int32, _ w: Watch) {
        if Int(fd) >= watches.count { watches += Array(repeating: nil, count: Int(fd) + 64 - watches.count) }
        if watches[Int(fd)] == nil { watched += 1 }
        watches[Int(fd)] = w
    }

    /// Stops watching `fd` (before it is closed).
    ///
    /// Closing alone is not enough: a child being spawned holds copies of every descriptor
    /// until its exec, and epoll keeps reporting a description while any copy is open.
    public func unwatch(_ fd: Int32) {
        guard Int(fd) < watches.count, watches[Int(fd)] != nil else { return }
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
        watches[Int(fd)] = nil
        watched -= 1
    }

    /// Calls `callback` about ``shortDelay`` from now: a cheaper ``after(_:_:)`` for the many
    /// callbacks that share this delay (one timer serves them all; they cannot be cancelled).
    /// They are not work for ``hasWork``: each waits for something else that is.
    public func afterShortDelay(_ callback: @escaping () -> Void) {
        soon.append((monotonicNanos() + Self.shortDelayNanos, callback))
        if !soonArmed { armSoon() }
    }

    /// The delay of ``afterShortDelay(_:)``, in seconds.
    public static let shortDelay = 0.01
    private static let shortDelayNanos = UInt64(shortDelay * 1e9)
    private var soon: [(deadline: UInt64, callback: () -> Void)] = []
    private var soonHead = 0
    private var soonArmed = false

    private func armSoon() {
        let delay = Double(soon[soonHead].deadline &- min(monotonicNanos(), soon[soonHead].deadline)) / 1e9
        soonArmed = true
        after(delay) { [unowned self] in
            soonArmed = false
            let now = monotonicNanos()
            while soonHead < soon.count, soon[soonHead].deadline <= now {
                let cb = soon[soonHead].callback
                soon[soonHead].callback = {}
                soonHead += 1
                cb()
            }
            if soonHead == soon.count {
                soon.removeAll(keepingCapacity: true)
                soonHead = 0
            } else {
                if soonHead >= 4096 {
                    soon.removeFirst(soonHead)
                    soonHead = 0
                }
                if !soonArmed { armSoon() }
            }
        }
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
                let fd = Int(UInt32(truncatingIfNeeded: ev.data.u64))
                guard fd < watches.count, let w = watches[fd], w.tag == UInt32(ev.data.u64 >> 32) else { continue }
                if w.once {
                    watches[fd] = nil
                    watched -= 1
                }
                w.handler(ev.events)
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
