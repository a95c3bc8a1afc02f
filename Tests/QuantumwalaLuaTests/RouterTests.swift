import LuaHost
@testable import QuantumwalaLua
import Testing

/// qw.router: the catalogue's default rules, a project's own rules above them, explain.
@Suite struct RouterTests {
    @Test func defaultRulesSendTasksToTheCatalogue() throws {
        let (o, r) = try runScript("""
            local route = qw.router.route
            result = {
              a = (route("Write unit tests for the parser")), b = (route({ title = "Fix the SQL migration", files = { "db/001.sql" } })),
              c = (route("Security review of the login flow")), d = (route("Add a retry to the latest fetch")),
              e = (route("Speed up startup: perf regression")), f = (route("Implement task 2.1")),
            }
            """)
        #expect(o.error == nil, "\(o.error?.message ?? "")")
        #expect(r["a"] == "qa-engineer")
        #expect(r["b"] == "data-engineer")
        #expect(r["c"] == "security-engineer", "security (30) outranks review (25)")
        #expect(r["d"] == "developer", "'latest' is not a test: the default")
        #expect(r["e"] == "performance-optimizer")
        #expect(r["f"] == "developer")
    }

    @Test func aProjectsRulesWinAndExplainListsWhatMatched() throws {
        let (o, r) = try runScript("""
            qw.router.rule{ match = "parser", agent = "codebase-analyst" }
            qw.router.rule{ match = function(t) return type(t) == "table" and t.kind == "docs" end, agent = "product-manager", priority = 90, name = "docs tasks" }
            local why = qw.router.explain("Write unit tests for the parser")
            result = { first = qw.router.route("Write unit tests for the parser"), n = #why, a = why[1].agent, b = why[2].agent,
                       docs = qw.router.route({ kind = "docs", title = "tests" }), none = qw.router.explain("zzz")[1].name }
            qw.router.clear()
            result.cleared = qw.router.route("Write unit tests")
            """)
        #expect(o.error == nil, "\(o.error?.message ?? "")")
        #expect(r["first"] == "codebase-analyst")
        #expect(r["n"] == 2)
        #expect(r["a"] == "codebase-analyst")
        #expect(r["b"] == "qa-engineer")
        #expect(r["docs"] == "product-manager")
        #expect(r["none"] == "default")
        #expect(r["cleared"] == "developer")
    }

    @Test func badRulesAreErrorsAtTheCallersLine() throws {
        try expectFailures([
            ("qw.router.rule{ agent = 'x' }", "test.lua:1: qw.router.rule: 'match' must be a Lua pattern or a function(task) (got nil)"),
            ("qw.router.rule{ match = '[', agent = 'x' }", "test.lua:1: qw.router.rule: 'match' is not a valid pattern"),
            ("qw.router.rule{ match = 'a', agent = 'x', weight = 3 }", "test.lua:1: qw.router.rule: unknown field 'weight'"),
            ("qw.router.rule{ match = 'a' }", "test.lua:1: qw.router.rule: 'agent' must be an agent's name"),
        ])
    }
}

/// The agent limits in qw.limits: checked, and a call with a bad limit changes nothing.
@Suite struct AgentLimitTests {
    @Test func aBadLimitChangesNothing() throws {
        let (o, r) = try runScript("""
            local ok1 = pcall(qw.limits, { max_agents = 5, cpu_percent = 500 })
            local ok2 = pcall(qw.limits, { max_agents = 6, budget_usd = "lots" })
            local before = qw.limits().max_agents
            qw.limits{ max_agents = 4, agent_stagger = 0 }
            result = { ok1 = ok1, ok2 = ok2, before = before == nil, after = qw.limits().max_agents, stagger = qw.limits().agent_stagger }
            """)
        #expect(o.error == nil, "\(o.error?.message ?? "")")
        #expect(r["ok1"] == false && r["ok2"] == false)
        #expect(r["before"] == true)
        #expect(r["after"] == 4)
        #expect(r["stagger"] == 0)
        try expectFailures([("qw.limits{ budget_usd = -1 }", "test.lua:1: qw.limits: budget_usd must be a number >= 0")])
    }
}
