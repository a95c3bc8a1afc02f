-- resources.lua: limits, admission and memory enforcement.   qw run examples/resources.lua
--
-- Every command qw starts first takes a lease from one admission queue: a slot (at most
-- max_concurrent run at once), plus whatever cpu and memory it asks for. Requests wait in
-- order until they fit; a process that uses far more memory than it asked for is stopped.

local function mib(bytes) return ("%.0f MiB"):format(bytes / 2^20) end
local r = qw.resources()
print(("This machine (or its cgroup): %g cores, %s of memory, %s available now.")
  :format(r.cores, mib(r.memory_total), mib(r.memory_available)))

-- 1. Limits can come from .qw/policy.lua, --max-concurrent, or the script itself.
qw.limits{ max_concurrent = 3 }
local limits = qw.limits()
print(("1. max_concurrent = %d, cpu_percent = %d, memory_percent = %d"):format(
  limits.max_concurrent, limits.cpu_percent, limits.memory_percent))

-- 2. Six 0.3 s jobs with 3 slots: two rounds, even though the batch allows all six at once.
local t = qw.now()
qw.batch({ "sleep 0.3", "sleep 0.3", "sleep 0.3", "sleep 0.3", "sleep 0.3", "sleep 0.3" })
print(("2. six 0.3 s jobs, 3 slots: %.1f s"):format(qw.now() - t))

-- 3. A memory-hungry job is held back: each of these asks for 40% of what may be granted,
--    so two run together and the third waits for one of them to finish.
local budget = r.memory_total * limits.memory_percent / 100
local big = { memory = math.floor(budget * 0.4) }
local started = {}
t = qw.now()
qw.parallel(
  function() started[1] = qw.now() - t; qw.exec({ "sleep", "0.4" }, { resources = big }) end,
  function() started[2] = qw.now() - t; qw.exec({ "sleep", "0.4" }, { resources = big }) end,
  function()
    local lease = qw.acquire(big)   -- the same request, taken by hand: waits for room
    started[3] = qw.now() - t
    lease:release()
  end)
print(("3. %s each: the third got its memory after %.1f s (the first two at once)")
  :format(mib(big.memory), started[3]))

-- 4. A process that outgrows its request (plus the margin, 25% by default) is terminated;
--    its neighbour, within its own request, finishes normally.
local hog = "x=$(head -c 300000000 /dev/zero | tr '\\0' x); sleep 10"
local rs = qw.batch({
  { "sh", "-c", hog, resources = { memory = "64M" } },
  { "sh", "-c", "sleep 0.5; echo neighbour done", resources = { memory = "64M" } },
})
print(("4. hog: ok = %s, %s"):format(tostring(rs[1].ok), rs[1].error))
print(("   neighbour: ok = %s, %s"):format(tostring(rs[2].ok), rs[2].stdout:gsub("\n", "")))

-- 5. A request that can never fit fails at once, and a waiting one can time out.
local ok, err = pcall(qw.acquire, { memory = r.memory_total * 2 })
print("5. impossible: " .. err)
qw.limits{ max_concurrent = 1 }
local held = qw.acquire{ slots = 1 }
ok, err = pcall(qw.acquire, { slots = 1, timeout = 0.2 })
print("   waiting:    " .. err)
held:release()

-- 6. Leases come back on every path: errors, cancels, the end of a task.
pcall(qw.with_resources, { slots = 1, memory = "1G" }, function() error("something failed") end)
print(("6. after all that: %d slots in use, %s granted"):format(
  qw.resources().slots_used, mib(qw.resources().memory_granted)))
