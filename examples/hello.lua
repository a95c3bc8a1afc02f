-- hello.lua: a short tour of qw.        Run it with:  qw run examples/hello.lua
--
-- Every qw.exec below starts a real process. While it runs, this script's coroutine is
-- paused and qw does the waiting, so many commands can run at once (see step 5).

print("Quantumwala " .. qw.version)

local function chomp(s) return (s:gsub("\n$", "")) end   -- drop one trailing newline

-- 1. Run a program. A table is an argv list (no shell involved); the result is a table.
local r = qw.exec{ "echo", "hello from a child process" }
print(("1. stdout = %q, code = %d, took %.3f s"):format(chomp(r.stdout), r.code, r.duration))

-- 2. A string runs through /bin/sh -c, so pipes and redirections work.
r = qw.exec("printf 'one two three\\n' | wc -w")
print(("2. the shell counted %s words (ok = %s)"):format(r.stdout:match("%d+"), tostring(r.ok)))

-- 3. Failing commands do not raise: look at ok, code and stderr (or pass check = true).
r = qw.exec{ "ls", "/no/such/directory" }
print(("3. ok = %s, code = %d, stderr = %q"):format(tostring(r.ok), r.code, chomp(r.stderr)))

-- 4. A timeout kills the process (its whole process group) and reports code 124.
r = qw.exec{ "sleep", "5", timeout = 0.5 }
print(("4. timed_out = %s, code = %d, stopped after %.2f s"):format(
    tostring(r.timed_out), r.code, r.duration))

-- 5. qw.parallel runs functions side by side: two 0.3 s sleeps take ~0.3 s, not 0.6 s.
local t0 = qw.now()
local a, b = qw.parallel(
    function() return qw.exec{ "sleep", "0.3" } end,
    function() return qw.exec{ "sleep", "0.3" } end)
print(("5. two 0.3 s sleeps in parallel took %.2f s in total (ok: %s, %s)"):format(
    qw.now() - t0, tostring(a.ok), tostring(b.ok)))

-- 6. qw.batch runs a list of commands, at most max_concurrent at a time, and returns the
--    results in the same order as the items.
local results = qw.batch({ { "echo", "first" }, "echo second", { "echo", "third" } },
                         { max_concurrent = 2 })
for i, res in ipairs(results) do io.write(("6.%d %s"):format(i, res.stdout)) end

-- 7. qw.json turns Lua values into JSON and back.
print("7. " .. qw.json.encode{ 1, 2, 3, "four", true })
print("   " .. qw.json.encode{ tool = "qw", parallel = true })
