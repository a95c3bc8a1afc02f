import Testing

/// Estimates for commands that name no request come from their past runs.
@Suite struct EstimateTests {
    /// A small command's `max_rss` from the kernel includes qw's own size (it starts in qw's
    /// address space): that must not become its memory estimate. A big one's must.
    @Test func pastPeaksBecomeRequestsButNotQwsOwnSize() {
        let r = qw(["-e", """
            qw.exec{ "sh", "-c", "x=$(head -c 80000000 /dev/zero | tr '\\\\0' x); echo ${#x}", name = "big" }
            qw.exec{ "true", name = "small" }
            local function granted(name)
              local h = qw.spawn{ "sleep", "30", name = name }
              local g = qw.resources().memory_granted
              h:kill(); h:wait()
              return g
            end
            print(granted("big") >= 80000000, granted("small"))
            """])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout == "true\t0\n")
    }
}

