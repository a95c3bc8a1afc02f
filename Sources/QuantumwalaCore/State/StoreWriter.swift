import Glibc

/// Writes to the store on a thread of its own, in the order the writes were handed over, so
/// that the event loop goes on while SQLite works (a workflow's batches of task records).
///
/// ``drain()`` waits until everything handed over is written and reports the first failure.
/// A write that fails does not stop the ones after it.
public final class StoreWriter: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var jobs: [() -> Void] = []
    private var busy = false
    private var failure: String?
    private var thread: pthread_t?
    private var stopping = false

    public init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    deinit {
        _ = drain()
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
        if let thread { pthread_join(thread, nil) }
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    /// Hands a write over; it runs after every write handed over before it.
    public func submit(_ job: @escaping () throws(StoreError) -> Void) {
        let run = { [unowned self] in
            do throws(StoreError) {
                try job()
            } catch {
                pthread_mutex_lock(&mutex)
                if failure == nil { failure = error.message }
                pthread_mutex_unlock(&mutex)
            }
        }
        pthread_mutex_lock(&mutex)
        if thread == nil { start() }
        guard thread != nil else {  // no thread to be had: write here and now
            pthread_mutex_unlock(&mutex)
            run()
            return
        }
        jobs.append(run)
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }

    /// Whether writes are handed over and not done yet.
    public var pending: Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return busy || !jobs.isEmpty
    }

    /// Waits for every write handed over so far. Returns the first failure since the last
    /// drain, if any.
    public func drain() -> String? {
        pthread_mutex_lock(&mutex)
        while busy || !jobs.isEmpty { pthread_cond_wait(&cond, &mutex) }
        let f = failure
        failure = nil
        pthread_mutex_unlock(&mutex)
        return f
    }

    /// The first failure since the last drain, without waiting.
    public func takeFailure() -> String? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        let f = failure
        failure = nil
        return f
    }

    private func start() {
        let box = Unmanaged.passUnretained(self).toOpaque()
        var t = pthread_t()
        // all signals blocked: they are the event loop's to handle
        var all = sigset_t(), old = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &old)
        let rc = pthread_create(&t, nil, { arg in
            Unmanaged<StoreWriter>.fromOpaque(arg!).takeUnretainedValue().loop()
            return nil
        }, box)
        pthread_sigmask(SIG_SETMASK, &old, nil)
        if rc == 0 { thread = t }
    }

    private func loop() {
        pthread_mutex_lock(&mutex)
        while true {
            while jobs.isEmpty && !stopping { pthread_cond_wait(&cond, &mutex) }
            if jobs.isEmpty && stopping { break }
            let batch = jobs
            jobs = []
            busy = true
            pthread_mutex_unlock(&mutex)
            for job in batch { job() }
            pthread_mutex_lock(&mutex)
            busy = false
            pthread_cond_broadcast(&cond)
        }
        pthread_mutex_unlock(&mutex)
    }
}
