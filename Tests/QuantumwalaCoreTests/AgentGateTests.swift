import Glibc
import Testing

@testable import QuantumwalaCore

/// The shared agent gate in the store, driven step by step: a refusal among runs that get
/// through paces the starts without shutting the gate; a refusal right after a refusal shuts
/// it for the backoff and lets one probe through at a time.
struct AgentGateTests {
    func store() throws -> (StateStore, String) {
        var template = Array("/tmp/qw-gate-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        return (try StateStore(path: dir + "/state.db"), dir)
    }

    // (no cap on starts per CPU here: these tests drive the pace and the door)
    let settings = AgentGate.Settings(maxAgents: 8, stagger: 0, backoff: 30, startup: 0)

    @Test func aSteadyLimitPacesStartsAndADoubleRefusalClosesTheGate() throws {
        let (s, dir) = try store()
        defer { removeFolder(dir) }
        // four runs start at once; three get through, 0.1 s apart, the fourth is refused
        for i in 1...4 { #expect(try s.gateAcquire(run: "r\(i)", settings: settings).granted) }
        let t0 = monotonicWallClock()
        for i in 1...3 {
            if i > 1 { usleep(100_000) }  // the admissions are what is measured: they must be apart
            try s.gateAdmitted(run: "r\(i)", settings: settings)
        }
        let span = monotonicWallClock() - t0
        try s.gateRelease(run: "r4", limited: true, retryAfter: nil, settings: settings)
        var g = try s.gateStatus()
        #expect(g.closedUntil == nil, "one refusal among successes does not shut the gate")
        #expect(!g.probing)
        // paced at 95% of the rate that got through (2 intervals over the span), two at once
        // (half of what ran)
        let rate = try #require(g.rate)
        let share = AgentGate.admittedShare
        #expect(abs(rate - 2 / span * share) < 0.5, "\(rate) against \(2 / span * share)")
        #expect(g.window == 2)
        for i in 1...3 { try s.gateRelease(run: "r\(i)", limited: false, retryAfter: nil, settings: settings) }
        // the next start waits one interval of the pace after the last, and until its answer
        // can come an interval after the last answer (k after the k-th)
        let next = try s.gateAcquire(run: "r5", settings: settings)
        #expect(next.granted || next.wait <= 3 / rate + 1e-6)
        while !(try s.gateAcquire(run: "r5", settings: settings).granted) { usleep(20_000) }
        // refused again with nothing through in between: shut for the backoff, one probe at a time
        try s.gateRelease(run: "r5", limited: true, retryAfter: nil, settings: settings)
        g = try s.gateStatus()
        let until = try #require(g.closedUntil)
        #expect(until - monotonicWallClock() > 29 && until - monotonicWallClock() <= 30)
        #expect(g.probing)
        let refused = try s.gateAcquire(run: "r6", settings: settings)
        #expect(!refused.granted && refused.wait > 29)
    }

    /// Under a pace, a run answered late holds the next start back until its answer can come
    /// an interval after that late one, though the last start was longer ago than that.
    @Test func thePaceIsThatOfTheModelsAnswers() throws {
        let (s, dir) = try store()
        defer { removeFolder(dir) }
        for i in 1...4 { #expect(try s.gateAcquire(run: "r\(i)", settings: settings).granted) }
        for i in 1...3 {
            if i > 1 { usleep(100_000) }
            try s.gateAdmitted(run: "r\(i)", settings: settings)
        }
        try s.gateRelease(run: "r4", limited: true, retryAfter: nil, settings: settings)
        for i in 1...3 { try s.gateRelease(run: "r\(i)", limited: false, retryAfter: nil, settings: settings) }
        let rate = try #require(try s.gateStatus().rate)
        while !(try s.gateAcquire(run: "late", settings: settings).granted) { usleep(20_000) }
        usleep(UInt32(2 / rate * 1e6))  // two intervals go by before its answer
        try s.gateAdmitted(run: "late", settings: settings)
        let behind = try s.gateAcquire(run: "next", settings: settings, peek: true)
        #expect(!behind.granted && behind.wait > 0.5 / rate && behind.wait <= 1 / rate + 1e-6, "\(behind) at \(rate)/s")
        while !(try s.gateAcquire(run: "next", settings: settings).granted) { usleep(20_000) }
    }

    @Test func aProbeThatGetsThroughReopensTheGateAtOnce() throws {
        let (s, dir) = try store()
        defer { removeFolder(dir) }
        let quick = AgentGate.Settings(maxAgents: 8, stagger: 0, backoff: 0.05, startup: 0)
        for i in 1...8 { #expect(try s.gateAcquire(run: "a\(i)", settings: quick).granted) }
        for i in 1...8 { try s.gateRelease(run: "a\(i)", limited: i == 1, retryAfter: nil, settings: quick) }
        while !(try s.gateAcquire(run: "b", settings: quick).granted) { usleep(20_000) }
        try s.gateRelease(run: "b", limited: true, retryAfter: nil, settings: quick)
        #expect(try s.gateStatus().probing)
        while !(try s.gateAcquire(run: "probe", settings: quick).granted) { usleep(20_000) }
        // while the probe waits for its answer nobody else starts
        #expect(!(try s.gateAcquire(run: "other", settings: quick).granted))
        // its first answer, long before its end, opens the gate for everyone (too few got
        // through to measure a rate, so no pace holds the next one back)
        try s.gateAdmitted(run: "probe", settings: quick)
        let g = try s.gateStatus()
        #expect(!g.probing && g.closedUntil == nil && g.rate == nil)
        #expect(try s.gateAcquire(run: "other", settings: quick).granted)
    }

    /// At most `cpus` runs start within `startup` seconds; and the first refusal after a
    /// burst paces at what got through within one second (too few for a mean).
    @Test func startsAreCappedPerCPUAndABurstGivesThePace() throws {
        let (s, dir) = try store()
        defer { removeFolder(dir) }
        let capped = AgentGate.Settings(maxAgents: 8, stagger: 0, backoff: 30, cpus: 2, startup: 0.5)
        #expect(try s.gateAcquire(run: "c1", settings: capped).granted)
        #expect(try s.gateAcquire(run: "c2", settings: capped).granted)
        let third = try s.gateAcquire(run: "c3", settings: capped)
        #expect(!third.granted && third.wait > 0 && third.wait <= 0.5, "\(third)")
        try s.gateAdmitted(run: "c1", settings: capped)
        try s.gateAdmitted(run: "c2", settings: capped)
        while !(try s.gateAcquire(run: "c3", settings: capped).granted) { usleep(20_000) }
        try s.gateRelease(run: "c3", limited: true, retryAfter: nil, settings: capped)
        let rate = try #require(try s.gateStatus().rate)
        #expect(abs(rate - 2 * AgentGate.admittedShare) < 1e-9, "two got through within a second: \(rate)")
    }

    /// A refusal under a pace slows it (by 5%, when the server let through more than the pace),
    /// and the refused start does not hold the next one back an interval: the next may go as
    /// soon as the answers' pace allows. A run whose CLI was not ready at its turn tells
    /// nothing of the delay to an answer.
    @Test func aRefusalUnderThePaceSlowsItAndFreesTheTurn() throws {
        let (s, dir) = try store()
        defer { removeFolder(dir) }
        // a pace from a burst: two through within a second, the third refused
        for i in 1...3 { #expect(try s.gateAcquire(run: "b\(i)", settings: settings).granted) }
        try s.gateAdmitted(run: "b1", settings: settings)
        try s.gateAdmitted(run: "b2", settings: settings, ready: false)
        try s.gateRelease(run: "b3", limited: true, retryAfter: nil, settings: settings)
        for i in 1...2 { try s.gateRelease(run: "b\(i)", limited: false, retryAfter: nil, settings: settings) }
        let first = try #require(try s.gateStatus().rate)
        #expect(abs(first - 2 * AgentGate.admittedShare) < 1e-9)
        // one run gets through at that pace (the pace grows a little), the next is refused
        while !(try s.gateAcquire(run: "ok", settings: settings).granted) { usleep(10_000) }
        try s.gateAdmitted(run: "ok", settings: settings)
        try s.gateRelease(run: "ok", limited: false, retryAfter: nil, settings: settings)
        let grown = try #require(try s.gateStatus().rate)
        #expect(abs(grown - first * (1 + AgentGate.increase)) < 1e-9)
        while !(try s.gateAcquire(run: "refused", settings: settings).granted) { usleep(10_000) }
        try s.gateRelease(run: "refused", limited: true, retryAfter: nil, settings: settings)
        let slowed = try #require(try s.gateStatus().rate)
        // the server let three through within a second: more than the pace, so the pace sets it
        #expect(abs(slowed - grown * AgentGate.admittedShare) < 1e-9, "\(slowed) after \(grown)")
        // the next start waits for the answers' pace only: an interval of the new pace after
        // the last answer is hardly later than the refused start (not an interval after it)
        let next = try s.gateAcquire(run: "next", settings: settings, peek: true)
        #expect(next.granted || next.wait < 0.5 / slowed, "\(next) at \(slowed)/s")
        // the quick fifth of the delays is that of the ready runs only: b2's counts for nothing
        var delays: [Double?] = []
        try s.writeGate { db in
            try db.direct("SELECT delay FROM agent_admits ORDER BY at") { r in delays.append(r.isNull(0) ? nil : r.double(0)) }
        }
        #expect(delays.count == 3 && delays[1] == nil && delays[0] != nil && delays[2] != nil, "\(delays)")
    }
}
