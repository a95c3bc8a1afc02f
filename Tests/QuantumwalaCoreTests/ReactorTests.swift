import CSystem
import Glibc
import Testing

@testable import QuantumwalaCore

@Suite struct ReactorTests {
    /// Runs `reactor` until `done()` or `limit` seconds.
    private func spin(_ reactor: Reactor, limit: Double = 5, until done: () -> Bool) {
        let deadline = monotonicSeconds() + limit
        while !done() && monotonicSeconds() < deadline { reactor.runOnce(maxWait: 0.5) }
    }

    @Test func timersFireInDeadlineOrder() {
        let reactor = Reactor()
        var fired: [String] = []
        reactor.after(0.06) { fired.append("c") }
        reactor.after(0.01) { fired.append("a") }
        reactor.after(0.03) { fired.append("b") }
        reactor.after(0.0) { fired.append("now") }
        #expect(reactor.hasWork)
        spin(reactor) { fired.count == 4 }
        #expect(fired == ["now", "a", "b", "c"])
        #expect(!reactor.hasWork)
    }

    @Test func timersWithTheSameDeadlineFireInOrderOfCreation() {
        let reactor = Reactor()
        var fired: [Int] = []
        for i in 0..<20 { reactor.after(-1) { fired.append(i) } }
        reactor.runOnce(maxWait: 1)
        #expect(fired == Array(0..<20))
    }

    @Test func manyTimersInRandomOrder() {
        let reactor = Reactor()
        var fired: [Int] = []
        var delays = (0..<50).map { $0 }
        var rng = SystemRandomNumberGenerator()
        delays.shuffle(using: &rng)
        for d in delays { reactor.after(Double(d) * 0.002) { fired.append(d) } }
        spin(reactor) { fired.count == 50 }
        #expect(fired == Array(0..<50))
    }

    @Test func timerNotFiredEarly() {
        let reactor = Reactor()
        let start = monotonicSeconds()
        var at: Double?
        reactor.after(0.1) { at = monotonicSeconds() }
        spin(reactor) { at != nil }
        #expect(at.map { $0 - start >= 0.1 } == true)
    }

    @Test func cancelledTimerNeverFires() {
        let reactor = Reactor()
        var fired: [String] = []
        let x = reactor.after(0.02) { fired.append("cancelled") }
        reactor.after(0.04) { fired.append("kept") }
        let first = reactor.after(0.0) { fired.append("first") }
        reactor.cancel(x)
        spin(reactor) { fired.contains("kept") }
        // run a little longer: the cancelled one must still not appear
        reactor.runOnce(maxWait: 0.05)
        #expect(fired == ["first", "kept"])
        // cancelling a timer that already fired is harmless
        reactor.cancel(first)
        #expect(!reactor.hasWork)
    }

    @Test func cancelAllLeavesNoWork() {
        let reactor = Reactor()
        var fired = false
        let ids = (0..<5).map { i in reactor.after(0.01 * Double(i + 1)) { fired = true } }
        #expect(reactor.hasWork)
        for id in ids { reactor.cancel(id) }
        #expect(!reactor.hasWork)
        let start = monotonicSeconds()
        reactor.runOnce(maxWait: 0.1)
        #expect(!fired)
        #expect(monotonicSeconds() - start < 1)
    }

    @Test func timerScheduledFromATimer() {
        let reactor = Reactor()
        var fired: [Int] = []
        reactor.after(0.01) {
            fired.append(1)
            reactor.after(0.01) { fired.append(2) }
        }
        spin(reactor) { fired.count == 2 }
        #expect(fired == [1, 2])
    }

    @Test func maxWaitBoundsAnIdleWait() {
        let reactor = Reactor()
        let start = monotonicSeconds()
        reactor.runOnce(maxWait: 0.05)
        let elapsed = monotonicSeconds() - start
        #expect(elapsed >= 0.04)
        #expect(elapsed < 1)
    }

    @Test func watchAndUnwatchAPipe() throws {
        let reactor = Reactor()
        var fds: [Int32] = [-1, -1]
        #expect(qw_pipe(&fds, 1, 0) == 0)
        defer { close(fds[0]); close(fds[1]) }
        var got: [UInt8] = []
        var calls = 0
        reactor.watch(fds[0], events: UInt32(QW_EPOLLIN)) { events in
            calls += 1
            #expect(events & UInt32(QW_EPOLLIN) != 0)
            let n = read(fds[0], reactor.scratch.baseAddress, reactor.scratch.count)
            if n > 0 { got += UnsafeRawBufferPointer(rebasing: reactor.scratch[0..<n]) }
        }
        #expect(reactor.hasWork)
        _ = "ping".withCString { write(fds[1], $0, 4) }
        spin(reactor) { got.count == 4 }
        #expect(String(decoding: got, as: UTF8.self) == "ping")
        #expect(calls >= 1)

        reactor.unwatch(fds[0])
        #expect(!reactor.hasWork)
        let before = calls
        _ = "pong".withCString { write(fds[1], $0, 4) }
        reactor.runOnce(maxWait: 0.05)
        #expect(calls == before)
        // unwatching twice is harmless
        reactor.unwatch(fds[0])
        #expect(!reactor.hasWork)
    }
}
