-- incremental-build.lua: compile and link only what changed, judged by content, not mtimes.
--
--   qw run examples/incremental-build.lua [BUILD_DIR]
--
-- BUILD_DIR (default examples/parallel-build/build/incremental) gets a copy of the sources
-- of examples/parallel-build/src on the first run; edit those copies. Then:
--   - run it twice: the second run compiles nothing;
--   - edit a source: only its object and its program are made again;
--   - `touch` a source, or check it out again unchanged: nothing runs (same content);
--   - delete an object or a program: it is made again.
-- Before running, the script prints why each task will run (wf:run{ dry_run = true }).

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local build = qw.args[1] or (here .. "/parallel-build/build/incremental")
local programs = { "checksum", "fib", "primes", "sort", "wordcount" }

-- the sources to build from: a copy the user may edit
qw.exec({ "mkdir", "-p", build .. "/src", build .. "/obj", build .. "/bin" }, { check = true })
for _, p in ipairs(programs) do
  qw.exec({ "cp", "-n", here .. "/parallel-build/src/" .. p .. ".c", build .. "/src/" }, { check = true })
end

-- one workflow per build folder; paths below are relative to it (the tasks' cwd)
local wf = qw.workflow("incremental-build:" .. build, { max_concurrent = 4 })
for _, p in ipairs(programs) do
  local src, obj, exe = "src/" .. p .. ".c", "obj/" .. p .. ".o", "bin/" .. p
  wf:task(p .. ".o", { "cc", "-O2", "-c", src, "-o", obj }, { cwd = build, inputs = { src }, outputs = { obj } })
  -- depends on the compile through its input: obj is that task's output
  wf:task(p, { "cc", "-o", exe, obj }, { cwd = build, inputs = { obj }, outputs = { exe } })
end

local plan = wf:run{ dry_run = true }
print(("%d of %d tasks to run (%.1f MB hashed):"):format(#plan.run, #plan.tasks, plan.hashed.bytes / 1e6))
for _, t in ipairs(plan.tasks) do
  if t.run then print(("  %-12s %s"):format(t.id, t.reason)) end
end

local report = wf:run()
for _, id in ipairs(report.failed) do
  print(("FAILED %s: %s"):format(id, report.results[id].error or report.results[id].stderr))
end
print(report.ok and ("done in %.2f s"):format(report.duration) or "stopped")
os.exit(report.ok and 0 or 1)
