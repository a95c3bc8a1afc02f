-- parallel-build.lua: compile a small set of C programs in parallel, then test them in
-- parallel, with a timeout and a failing step handled along the way.
--
--   qw run examples/parallel-build.lua          (from the repo root, or from anywhere)
--
-- The project is in examples/parallel-build/: src/NAME.c are the programs and
-- expected/NAME.out what each must print. Two programs fail on purpose:
--   broken.c does not compile, and slow.c never finishes, so its 2 s timeout kills it.
-- The job exits 0 when everything turned out as expected, and 1 otherwise.

-- Paths are relative to this script, so the job works from any current directory.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local project      = here .. "/parallel-build"
local src_dir      = project .. "/src"
local build_dir    = project .. "/build"
local expected_dir = project .. "/expected"

local MAX_CONCURRENT = 4   -- compile and test at most 4 programs at a time
local TEST_TIMEOUT   = 2   -- seconds a test program may run before it is killed

-- The failures we expect. Every other program must compile and print its expected output.
local EXPECTED = {
    broken = "compile error",
    slow   = "timeout",
}

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local text = f:read("a")
    f:close()
    return text
end

local function first_lines(text, n)
    local lines = {}
    for line in (text or ""):gmatch("[^\n]+") do
        lines[#lines + 1] = line
        if #lines == n then break end
    end
    return lines
end

local started = qw.now()

---------------------------------------------------------------------------------------
-- 1. Find the sources.
---------------------------------------------------------------------------------------
local found = qw.exec{ "find", src_dir, "-maxdepth", "1", "-name", "*.c" }
if not found.ok or found.stdout == "" then
    error("no C sources found in " .. src_dir .. ": " .. (found.error or found.stderr or ""))
end
local names = {}
for path in found.stdout:gmatch("[^\n]+") do
    names[#names + 1] = path:match("([^/]+)%.c$")
end
table.sort(names)
print(("Found %d programs in %s: %s"):format(#names, src_dir, table.concat(names, ", ")))

---------------------------------------------------------------------------------------
-- 2. Compile them all in parallel. A failed compile is reported, and the rest go on.
---------------------------------------------------------------------------------------
qw.exec{ "rm", "-rf", build_dir, check = true }
qw.exec{ "mkdir", "-p", build_dir, check = true }

local compile_jobs = {}
for i, name in ipairs(names) do
    compile_jobs[i] = { "cc", "-O2", "-o", build_dir .. "/" .. name, src_dir .. "/" .. name .. ".c",
                        name = "compile " .. name }
end

print(("\nCompiling, %d at a time:"):format(MAX_CONCURRENT))
local t0 = qw.now()
local compiled = qw.batch(compile_jobs, {
    max_concurrent = MAX_CONCURRENT,
    on_done = function(i, r)   -- called as each compile finishes, in finishing order
        if r.ok then
            print(("  ok      %-10s %5.2f s"):format(names[i], r.duration))
        else
            print(("  FAILED  %-10s %5.2f s  (exit code %s)"):format(
                names[i], r.duration or 0, tostring(r.code)))
        end
    end,
})
local compile_wall = qw.now() - t0

for i, name in ipairs(names) do
    local r = compiled[i]
    if not r.ok then
        print(("\n  %s did not compile%s:"):format(name,
            EXPECTED[name] == "compile error" and " (expected)" or ""))
        for _, line in ipairs(first_lines(r.stderr ~= "" and r.stderr or r.error, 4)) do
            print("    | " .. line)
        end
    end
end

---------------------------------------------------------------------------------------
-- 3. Run the programs that compiled, in parallel, each with a timeout, and compare
--    what they print with expected/NAME.out.
---------------------------------------------------------------------------------------
local test_names, test_jobs = {}, {}
for i, name in ipairs(names) do
    if compiled[i].ok then
        test_names[#test_names + 1] = name
        test_jobs[#test_jobs + 1] = { build_dir .. "/" .. name, timeout = TEST_TIMEOUT,
                                      name = "test " .. name }
    end
end

-- "pass", "timeout", "wrong output", "exit N", ...
local function test_outcome(name, r)
    if r.timed_out then return "timeout" end
    if not r.ok then return r.code and ("exit " .. r.code) or ("error: " .. tostring(r.error)) end
    local want = read_file(expected_dir .. "/" .. name .. ".out")
    if want == nil then return "no expected/" .. name .. ".out" end
    if r.stdout ~= want then return "wrong output" end
    return "pass"
end

print(("\nTesting, %d at a time, %g s timeout each:"):format(MAX_CONCURRENT, TEST_TIMEOUT))
t0 = qw.now()
local tests_by_name = {}
qw.batch(test_jobs, {
    max_concurrent = MAX_CONCURRENT,
    on_done = function(i, r)
        local name = test_names[i]
        local outcome = test_outcome(name, r)
        tests_by_name[name] = { result = r, outcome = outcome }
        local note = ""
        if r.timed_out then
            note = ("  (timed_out = %s, code = %s)"):format(tostring(r.timed_out), tostring(r.code))
        end
        if outcome == (EXPECTED[name] or "pass") and outcome ~= "pass" then
            note = note .. "  -- expected"
        end
        print(("  %-12s %-10s %5.2f s%s"):format(outcome, name, r.duration or 0, note))
    end,
})
local test_wall = qw.now() - t0

for _, name in ipairs(test_names) do
    local t = tests_by_name[name]
    if t.outcome == "wrong output" then
        print(("\n  %s printed something else than expected/%s.out:"):format(name, name))
        for _, line in ipairs(first_lines(read_file(expected_dir .. "/" .. name .. ".out"), 3)) do
            print("    want | " .. line)
        end
        for _, line in ipairs(first_lines(t.result.stdout, 3)) do print("    got  | " .. line) end
    end
end

---------------------------------------------------------------------------------------
-- 4. Summary: one row per program, and the exit status.
---------------------------------------------------------------------------------------
local function secs(s) return s and ("%.2f s"):format(s) or "-" end

print("\nSummary:")
local header = ("  %-10s  %-7s  %-14s  %8s  %8s  %10s  %s"):format(
    "program", "compile", "test", "compile", "test", "test CPU", "verdict")
print(header)
print("  " .. ("-"):rep(#header - 2))

local unexpected = 0
for i, name in ipairs(names) do
    local c = compiled[i]
    local t = tests_by_name[name]
    local outcome = c.ok and (t and t.outcome or "not run") or "compile error"
    local want = EXPECTED[name] or "pass"
    local verdict
    if outcome ~= want then
        verdict = "UNEXPECTED (wanted " .. want .. ")"
    elseif outcome == "timeout" and t.result.code ~= 124 then   -- qw reports timeouts as 124
        verdict = "UNEXPECTED (timeout with code " .. tostring(t.result.code) .. ", wanted 124)"
    else
        verdict = (want == "pass") and "ok" or "ok (expected failure)"
    end
    if verdict:find("^UNEXPECTED") then unexpected = unexpected + 1 end
    local test_col = c.ok and outcome or "-"
    if outcome == "timeout" then test_col = "timeout (124)" end
    print(("  %-10s  %-7s  %-14s  %8s  %8s  %10s  %s"):format(
        name, c.ok and "ok" or "error", test_col, secs(c.duration),
        t and secs(t.result.duration) or "-", t and secs(t.result.cpu_time) or "-", verdict))
end

print(("\nCompile stage %.2f s, test stage %.2f s, whole job %.2f s (wall clock)."):format(
    compile_wall, test_wall, qw.now() - started))

if unexpected == 0 then
    print("Everything went as expected (the failures above were planned).")
    os.exit(0)
else
    print(("%d program(s) did not behave as expected."):format(unexpected))
    os.exit(1)
end
