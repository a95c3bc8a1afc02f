import Glibc

/// What a piece of work asks for before it runs.
public struct ResourceRequest: Sendable, Equatable {
    /// Concurrency slots (one per running command by default).
    public var slots: Int
    /// CPU cores it expects to keep busy (may be fractional).
    public var cpu: Double
    /// Bytes of memory it expects to use at its peak.
    public var memory: Int

    public init(slots: Int = 1, cpu: Double = 0, memory: Int = 0) {
        self.slots = slots
        self.cpu = cpu
        self.memory = memory
    }
}

/// The limits admission keeps to; see `qw.limits` in lua-api.md.
public struct ResourceLimits: Sendable, Equatable {
    public var maxConcurrent = 8
    /// Percent of the machine's (or cgroup's) cores that granted `cpu` may add up to, and that
    /// the live CPU reading must stay under for new work to start.
    public var cpuPercent: Double = 80
    /// Percent of the machine's (or cgroup's) memory, likewise.
    public var memoryPercent: Double = 75
    /// How far past its `memory` request a watched process may go before it is terminated.
    public var memoryMargin: Double = 0.25
    public init() {}
}

/// A grant of resources, held until ``ResourceManager/release(_:)``.
public final class Lease {
    public let id: Int
    public let request: ResourceRequest
    public fileprivate(set) var released = false
    init(id: Int, request: ResourceRequest) {
        self.id = id
        self.request = request
    }
}

/// Why a request was refused.
public struct ResourceError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable { case impossible, timedOut, cancelled }
    public var code: Code
    public var message: String
    public var description: String { message }
}

/// Live load of the machine, as admission sees it.
public struct LoadReading: Sendable {
    public var cpuBusyPercent: Double?
    public var memoryUsedPercent: Double?
    public init(cpuBusyPercent: Double?, memoryUsedPercent: Double?) {
        self.cpuBusyPercent = cpuBusyPercent
        self.memoryUsedPercent = memoryUsedPercent
    }
}

/// Admission control: grants requests while slots remain, the granted cpu and memory fit the
/// limits, and the machine's live load stays under the percentages.
///
/// Waiting requests are served in arrival order; a later request that fits may pass one
/// that does not, but no request is passed more than `maxBypass` times, so a large request
/// behind a stream of small ones is granted within a bounded number of grants. Live readings
/// never hold back work while nothing of ours runs (as `make -l` always runs one job).
public final class ResourceManager {
    public var limits: ResourceLimits {
        didSet { pump() }
    }
    /// Cores and bytes of the machine (or of the cgroup qw runs in, whichever is smaller),
    /// measured when first needed: reading cgroups costs more than the rest of a start.
    public var cores: Double { capacity.cores }
    public var memoryTotal: Int { capacity.memoryTotal }
    private var measured: (cores: Double, memoryTotal: Int)?
    private let measure: () -> (cores: Double, memoryTotal: Int)
    private var capacity: (cores: Double, memoryTotal: Int) {
        if let m = measured { return m }
        let m = measure()
        measured = m
        return m
    }
    /// How many later requests may be granted ahead of a waiting one.
    public var maxBypass = 8
    /// How many waiting requests that do not fit a pass looks past for one that does.
    static let lookahead = 64

    public private(set) var slotsUsed = 0
    public private(set) var cpuGranted: Double = 0
    public private(set) var memoryGranted = 0
    public var queued: Int { queue.count - head }

    private struct Pending {
        let id: Int
        let request: ResourceRequest
        var bypassed: Int
        let grant: (Result<Lease, ResourceError>) -> Void
        var timer: Reactor.TimerID?
    }

    private unowned let reactor: Reactor
    private let readLoad: () -> LoadReading
    private var queue: [Pending?] = []
    private var head = 0
    private var nextID = 0
    private var recheck: Reactor.TimerID?
    private var lastReading: (at: Double, value: LoadReading)?

    /// - Parameters:
    ///   - readLoad: the live CPU and memory readings; called at most every 100 ms, and only
    ///     when something of ours already runs.
    public convenience init(reactor: Reactor, cores: Double, memoryTotal: Int, limits: ResourceLimits = ResourceLimits(),
                            readLoad: @escaping () -> LoadReading) {
        self.init(reactor: reactor, capacity: { (cores, memoryTotal) }, limits: limits, readLoad: readLoad)
    }

    /// - Parameters:
    ///   - capacity: cores and bytes, asked for once, when first needed.
    ///   - readLoad: the live CPU and memory readings; called at most every 100 ms, and only
    ///     when something of ours already runs.
    public init(reactor: Reactor, capacity: @escaping () -> (cores: Double, memoryTotal: Int),
                limits: ResourceLimits = ResourceLimits(), readLoad: @escaping () -> LoadReading) {
        self.reactor = reactor
        self.measure = capacity
        self.limits = limits
        self.readLoad = readLoad
    }

    /// The cores that granted requests may add up to.
    public var cpuBudget: Double { cores * limits.cpuPercent / 100 }
    /// The bytes that granted requests may add up to.
    public var memoryBudget: Int { Int(Double(memoryTotal) * limits.memoryPercent / 100) }

    /// Asks for `request`; `grant` is called (now or later, on the reactor's thread) with a
    /// lease, or with an error when it can never fit, times out, or is cancelled.
    ///
    /// - Returns: an id for ``cancel(_:)`` while the request waits, or nil when it was answered
    ///   at once.
    @discardableResult
    public func acquire(_ request: ResourceRequest, timeout: Double? = nil,
                        grant: @escaping (Result<Lease, ResourceError>) -> Void) -> Int? {
        if let why = impossible(request) {
            grant(.failure(ResourceError(code: .impossible, message: why)))
            return nil
        }
        nextID += 1
        let id = nextID
        if queued == 0 && fits(request) {
            grant(.success(take(id: id, request)))
            return nil
        }
        var p = Pending(id: id, request: request, bypassed: 0, grant: grant, timer: nil)
        if let timeout {
            p.timer = reactor.after(timeout) { [weak self] in
                self?.remove(id, with: ResourceError(code: .timedOut, message: "resources not available within \(timeout) s (\(self?.describe(request) ?? ""))"))
            }
        }
        queue.append(p)
        pump()  // it may pass requests ahead of it that do not fit
        return queue[head...].contains { $0?.id == id } ? id : nil
    }

    /// Withdraws a waiting request; its `grant` is called with a `.cancelled` error.
    public func cancel(_ id: Int, reason: String = "cancelled") {
        remove(id, with: ResourceError(code: .cancelled, message: reason))
    }

    /// Returns a lease's resources (a second release does nothing).
    public func release(_ lease: Lease) {
        guard !lease.released else { return }
        lease.released = true
        slotsUsed -= lease.request.slots
        cpuGranted -= lease.request.cpu
        memoryGranted -= lease.request.memory
        if slotsUsed == 0 {  // keep rounding from drifting
            cpuGranted = 0
            memoryGranted = 0
        }
        pump()
    }

    /// Why `request` can never be granted under the current limits, or nil.
    public func impossible(_ r: ResourceRequest) -> String? {
        if r.slots < 0 || r.cpu < 0 || r.memory < 0 { return "a resource request cannot be negative (\(describe(r)))" }
        if r.slots > limits.maxConcurrent {
            return "the request needs \(r.slots) slots but max_concurrent is \(limits.maxConcurrent)"
        }
        if r.cpu > cpuBudget {
            return "the request needs \(formatAmount(r.cpu)) cores but only \(formatAmount(cpuBudget)) may be granted (\(formatAmount(cores)) cores x cpu_percent \(formatAmount(limits.cpuPercent)))"
        }
        if r.memory > memoryBudget {
            return "the request needs \(formatBytes(r.memory)) but only \(formatBytes(memoryBudget)) may be granted (\(formatBytes(memoryTotal)) x memory_percent \(formatAmount(limits.memoryPercent)))"
        }
        return nil
    }

    private func fits(_ r: ResourceRequest) -> Bool {
        guard slotsUsed + r.slots <= limits.maxConcurrent,
              cpuGranted + r.cpu <= cpuBudget + 1e-9,
              memoryGranted + r.memory <= memoryBudget
        else { return false }
        if slotsUsed == 0 { return true }  // live load never stalls the first piece of work
        let load = reading()
        if let c = load.cpuBusyPercent, c >= limits.cpuPercent { heldByLoad = true; return false }
        if let m = load.memoryUsedPercent, m >= limits.memoryPercent { heldByLoad = true; return false }
        return true
    }

    /// Whether a request waited only for the live load in the last pass: only then does
    /// anything but a release change the answer (and a timer look again).
    private var heldByLoad = false

    private func reading() -> LoadReading {
        let now = monotonicSeconds()
        if let last = lastReading, now - last.at < 0.1 { return last.value }
        let value = readLoad()
        lastReading = (now, value)
        return value
    }

    private func take(id: Int, _ r: ResourceRequest) -> Lease {
        slotsUsed += r.slots
        cpuGranted += r.cpu
        memoryGranted += r.memory
        return Lease(id: id, request: r)
    }

    /// Grants waiting requests in order, letting later ones pass a blocked one a bounded
    /// number of times.
    /// Set while ``pump()`` runs: a grant can end at once (a command that cannot start
    /// releases its lease within the grant), and a pump from there only asks for one more
    /// pass instead of nesting one level per request.
    private var pumping = false
    private var pumpAgain = false

    private func pump() {
        if pumping {
            pumpAgain = true
            return
        }
        pumping = true
        defer { pumping = false }
        repeat {
            pumpAgain = false
            pumpPass()
        } while pumpAgain
    }

    private func pumpPass() {
        heldByLoad = false
        var blockedAhead: [Int] = []  // indices of waiting requests passed over in this round
        var i = head
        while i < queue.count {
            guard let p = queue[i] else {
                i += 1
                continue
            }
            if let why = impossible(p.request) {  // the limits were lowered under it
                queue[i] = nil
                if let t = p.timer { reactor.cancel(t) }
                p.grant(.failure(ResourceError(code: .impossible, message: why)))
            } else if fits(p.request) {
                queue[i] = nil
                if let t = p.timer { reactor.cancel(t) }
                for j in blockedAhead { queue[j]?.bypassed += 1 }
                p.grant(.success(take(id: p.id, p.request)))
            } else {
                blockedAhead.append(i)
                if p.bypassed >= maxBypass { break }  // it has waited long enough: nobody passes it
                // Look no further than this many waiting requests that do not fit: a pass over
                // a queue of thousands would cost as much, at every release, as the queue is long.
                if blockedAhead.count >= Self.lookahead { break }
            }
            i += 1
        }
        while head < queue.count && queue[head] == nil { head += 1 }
        if head > 64 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        scheduleRecheck()
    }

    /// While requests wait only for the live load to drop, look again shortly. (Requests that
    /// wait for slots, cpu or memory to be released are looked at on release; no timer keeps
    /// the event loop busy for them, so a wait that nothing can end is seen as a deadlock.)
    private func scheduleRecheck() {
        guard queued > 0, heldByLoad, recheck == nil else { return }
        recheck = reactor.after(0.25) { [weak self] in
            guard let self else { return }
            self.recheck = nil
            self.lastReading = nil
            self.pump()
        }
    }

    private func remove(_ id: Int, with error: ResourceError) {
        for i in head..<queue.count where queue[i]?.id == id {
            let p = queue[i]!
            queue[i] = nil
            if let t = p.timer { reactor.cancel(t) }
            p.grant(.failure(error))
            pump()
            return
        }
    }

    /// `slots 1, cpu 2, memory 1.0 GiB`.
    public func describe(_ r: ResourceRequest) -> String {
        var parts = ["slots \(r.slots)"]
        if r.cpu > 0 { parts.append("cpu \(formatAmount(r.cpu))") }
        if r.memory > 0 { parts.append("memory \(formatBytes(r.memory))") }
        return parts.joined(separator: ", ")
    }
}

/// `2`, `0.5`, `1.25`.
public func formatAmount(_ v: Double) -> String {
    if v == v.rounded() && abs(v) < 1e15 { return String(Int(v)) }
    return String((v * 100).rounded() / 100)
}

/// `512 B`, `1.5 KiB`, `2.0 GiB`.
public func formatBytes(_ b: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(b)
    var u = 0
    while v >= 1024 && u < units.count - 1 {
        v /= 1024
        u += 1
    }
    if u == 0 { return "\(b) B" }
    return "\((v * 10).rounded() / 10) \(units[u])"
}
