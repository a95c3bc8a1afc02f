--- The `qw` library: the Swift primitives (handed in as `core`) and the policy built on
--- them in Lua: batches, retries, logging, pretty printing. Loaded once by the host, which
--- then sets the global `qw` to what this returns.
local core = ...

local qw = {
  version = core.version,
  now = core.now,
  sleep = core.sleep,
  spawn = core.spawn,
  json = core.json,
  acquire = core.acquire,
  resources = core.resources,
  args = {},
}

local ITEM_ERROR = core._item_error

-- The estimate policy set with qw.limits{ estimate = fn }, and the helper that applies it
-- (both defined under "Resources" below, used by qw.exec and qw.batch).
local estimate_policy, with_estimate

---------------------------------------------------------------------------------------------
-- Coroutines: a waiting primitive called inside a user's own coroutine yields a host tag;
-- these wrappers pass that yield on to the scheduler and hand the answer back, so the user's
-- coroutine never sees it (as OpenResty does).

local HOST = core._host_tag
local co_resume, co_yield = coroutine.resume, coroutine.yield
local co_running, co_isyieldable = coroutine.running, coroutine.isyieldable
local pack, unpack = table.pack, table.unpack

-- `...` stays a vararg throughout: naming its first value would turn "no values" into a nil.
local function pass_through(co, ok, ...)
  if ok and (...) == HOST and select("#", ...) == 1 then
    local answer
    if co_isyieldable() then
      answer = pack(co_yield(HOST))
    else
      answer = pack(core._wait_here()) -- e.g. resumed from a table.sort comparator
    end
    return pass_through(co, co_resume(co, unpack(answer, 1, answer.n)))
  end
  return ok, ...
end

function coroutine.resume(co, ...)
  return pass_through(co, co_resume(co, ...))
end

coroutine.wrap = core._co_make_wrap(coroutine.resume)

-- The main chunk runs in a coroutine of the host; to the script it is the main thread.
function coroutine.running()
  local co = co_running()
  if core._in_task_thread() then return co, core._is_root_task() end
  return co, false
end

-- Yielding from it is the stock error, which pcall catches; and it is not yieldable.
coroutine.yield = core._co_yield
coroutine.isyieldable = core._co_isyieldable

---------------------------------------------------------------------------------------------
-- Logging

local function log_at(level)
  return function(...)
    local parts = pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    core._log(level, table.concat(parts, " ", 1, parts.n))
  end
end

qw.log = { debug = log_at("debug"), info = log_at("info"), warn = log_at("warn"), error = log_at("error") }

---------------------------------------------------------------------------------------------
-- Execution

-- Modules are loaded on first use: most scripts use few of them, and parsing all of stdlib
-- at every start would be most of what `qw -e` costs. A lazy module is a table that stands
-- for the module: once loaded, lookups, assignments, pairs and calls all go to the module
-- itself (so `qw.router.default = "x"` sets what the router reads). `qw._load_lazy()`
-- loads them all (the REPL does, so that Tab completion, which follows __index, sees them).
local lazy_loaders = {}
local function lazy(name, load)
  local proxy, mt = {}, {}
  local function fill()
    local m = load()
    lazy_loaders[name] = nil
    mt.__index, mt.__newindex = m, m
    mt.__pairs = function() return next, m, nil end
    mt.__call = function(_, ...) return m(...) end
    return m
  end
  lazy_loaders[name] = fill
  mt.__index = function(_, k) return fill()[k] end
  mt.__newindex = function(_, k, v) fill()[k] = v end
  mt.__pairs = function() return next, fill(), nil end
  mt.__call = function(_, ...) return fill()(...) end
  return setmetatable(proxy, mt)
end
local function with_core(name)
  -- compiled once, then loaded from the cache of compiled chunks (its file's size, mtime and
  -- inode are the key: an edited module is compiled again)
  return function() return assert(core._loadfile(assert(package.searchpath(name, package.path))))(core) end
end

---The resource readings (see lua-api.md); with `agents = { running, probing, closed_until, rate, window,
---max_agents }`, the shared agent gate, once this process has used agents.
function qw.resources()
  local r = core.resources()
  if not lazy_loaders["qw.agent"] then
    local ok, g = pcall(qw.agent.gate)
    if ok then
      g.max_agents = qw.agent.limits.max_agents or 3
      r.agents = g
    end
  end
  return r
end

function qw._load_lazy()
  for _, fill in pairs(lazy_loaders) do fill() end
end

qw.retry = lazy("qw.retry", function() return require("qw.retry") end)
qw.state = lazy("qw.state", with_core("qw.state"))
local workflows = lazy("qw.workflow", with_core("qw.workflow"))
---Creates a workflow; see stdlib/qw/workflow.lua.
function qw.workflow(...) return workflows.new(...) end
local raw_exec = core.exec

local function option(spec, opts, key)
  if opts ~= nil and type(opts) == "table" and opts[key] ~= nil then return opts[key] end
  if type(spec) == "table" then return spec[key] end
  return nil
end

---Runs a command and waits for it; see lua-api.md for the spec, options and result.
---@param spec string|table a shell string, or { argv..., option = value }
---@param opts table? more options (they win over the spec's)
---@return table result { ok, code, signal, timed_out, stdout, stderr, duration, attempts, ... }
function qw.exec(spec, opts)
  if estimate_policy then opts = with_estimate(spec, opts) end
  local policy = option(spec, opts, "retry")
  if policy == nil then return raw_exec(spec, opts) end
  if not qw.retry.is_policy(policy) then
    error("qw.exec: option 'retry' must be a retry policy (a function or callable table)", 2)
  end
  local check = option(spec, opts, "check")
  local once = {}
  if type(opts) == "table" then for k, v in pairs(opts) do once[k] = v end end
  once.check = false
  return qw.retry.run(policy, function() return raw_exec(spec, once) end, function(r)
    if check and not r.ok then error(core._where() .. core._failure_message(r), 0) end
    return r
  end)
end

---------------------------------------------------------------------------------------------
-- Resources

---Sets limits (any of max_concurrent, cpu_percent, memory_percent, memory_margin) and
---`estimate`, a function(task) -> request used for commands that give no `resources`;
---`task` is { name = label, argv = {...} or command = "shell string" }. Returns the limits.
---@param limits table?
---@return table limits
function qw.limits(limits)
  if limits ~= nil and type(limits) ~= "table" then
    error(("qw.limits: expects a table of limits (got %s)"):format(type(limits)), 2)
  end
  if limits and limits.estimate ~= nil then
    if limits.estimate ~= false and type(limits.estimate) ~= "function" then
      error("qw.limits: estimate must be a function(task) -> request, or false to remove it", 2)
    end
    estimate_policy = limits.estimate or nil
  end
  -- the agent limits are the agent layer's (stdlib/qw/agent.lua); the rest are admission's
  local rest = limits
  local AGENT_LIMITS = { budget_usd = true, max_agents = true, agent_stagger = true, agent_backoff = true }
  local has_agent_limit = false
  for k in pairs(limits or {}) do if AGENT_LIMITS[k] then has_agent_limit = true end end
  if has_agent_limit then
    -- all checked before any is set: a bad one changes nothing
    for k, v in pairs(limits) do
      if AGENT_LIMITS[k] and v ~= false and (type(v) ~= "number" or v < 0) then
        error(("qw.limits: %s must be a number >= 0, or false to remove it (got %s)"):format(k, tostring(v)), 2)
      end
    end
    rest = {}
    for k, v in pairs(limits) do
      if not AGENT_LIMITS[k] then rest[k] = v end
    end
  end
  local current = core.limits(rest)  -- admission's limits first: it raises on a bad one
  if has_agent_limit then
    for k in pairs(AGENT_LIMITS) do
      if limits[k] ~= nil then qw.agent.limits[k] = limits[k] or nil end
    end
  end
  current.estimate = estimate_policy
  if not lazy_loaders["qw.agent"] then
    for k, v in pairs(qw.agent.limits) do current[k] = v end
  end
  return current
end

---Runs fn(...) holding a lease for `request`; the lease is returned on every path.
---@param request table { slots, cpu, memory, timeout }
---@param fn function
function qw.with_resources(request, fn, ...)
  if type(fn) ~= "function" then
    error(("qw.with_resources: the second argument must be a function (got %s)"):format(type(fn)), 2)
  end
  local lease <close> = core.acquire(request)
  return fn(...)
end

-- The estimate policy's request for a command spec without `resources`, or nil.
local function estimated(spec, opts)
  if estimate_policy == nil then return nil end
  if (type(spec) == "table" and spec.resources) or (type(opts) == "table" and opts.resources) then return nil end
  local task
  if type(spec) == "string" then
    task = { name = (type(opts) == "table" and opts.name) or spec, command = spec }
  elseif type(spec) == "table" then
    local argv = {}
    for i = 1, #spec do argv[i] = spec[i] end
    task = { name = (type(opts) == "table" and opts.name) or spec.name or table.concat(argv, " "), argv = argv }
  else
    return nil
  end
  local r = estimate_policy(task)
  if r ~= nil and type(r) ~= "table" then
    error(("qw.limits estimate returned %s; expected a request table or nil"):format(type(r)), 0)
  end
  return r
end

-- Adds the estimate (if any) to a spec's options.
function with_estimate(spec, opts)
  local r = estimated(spec, opts)
  if r == nil then return opts end
  local o = {}
  if type(opts) == "table" then for k, v in pairs(opts) do o[k] = v end end
  o.resources = r
  return o
end

---------------------------------------------------------------------------------------------
-- Batches

local function failed(r)
  return type(r) == "table" and r.ok == false
end

local function progress_line(done, total, failures)
  local width = 30
  local filled = total > 0 and math.floor(width * done / total) or width
  local line = ("\r\27[K[%s%s] %d/%d"):format(("#"):rep(filled), ("."):rep(width - filled), done, total)
  if failures > 0 then line = line .. (" (%d failed)"):format(failures) end
  io.stderr:write(line)
end

local CANCELLED = setmetatable({}, { __index = { ok = false, error = "cancelled", cancelled = true } })

---Runs commands and functions concurrently; results come back in item order.
---@param items table commands (string or table specs) and functions
---@param opts table? { max_concurrent = n, fail_fast = bool, on_done = function(i, r), progress = bool }
---@return table results
function qw.batch(items, opts)
  if type(items) ~= "table" then
    error(("qw.batch: items must be a table (got %s)"):format(type(items)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("qw.batch: options must be a table (got %s)"):format(type(opts)), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "max_concurrent" and k ~= "fail_fast" and k ~= "on_done" and k ~= "progress" then
      error(("qw.batch: unknown option '%s'"):format(tostring(k)), 2)
    end
  end
  local n = #items
  local max = opts.max_concurrent
  if max ~= nil and (math.type(max) ~= "integer" or max < 1) then
    error(("qw.batch: max_concurrent must be a positive integer (got %s)"):format(tostring(max)), 2)
  end
  local on_done, fail_fast = opts.on_done, opts.fail_fast
  if on_done ~= nil and type(on_done) ~= "function" then
    error("qw.batch: on_done must be a function", 2)
  end
  local progress = opts.progress and core._isatty(2)
  local items_copied

  -- a command item with a retry policy runs through qw.exec, where the policy lives
  for i = 1, n do
    local item = items[i]
    if type(item) == "table" and item.retry ~= nil then
      if items_copied == nil then
        items_copied = {}
        for j = 1, n do items_copied[j] = items[j] end
        items = items_copied
      end
      items[i] = function() return qw.exec(item) end
    end
  end
  if estimate_policy then
    local copy = {}
    for i = 1, n do
      local item = items[i]
      if type(item) == "string" then
        local o = with_estimate(item, nil)
        copy[i] = o and { "/bin/sh", "-c", item, name = item, resources = o.resources } or item
      elseif type(item) == "table" then
        local o = with_estimate(item, nil)
        if o then
          local c = {}
          for k, v in pairs(item) do c[k] = v end
          c.resources = o.resources
          copy[i] = c
        else
          copy[i] = item
        end
      else
        copy[i] = item
      end
    end
    items = copy
  end
  local b = core._batch_start(items, max or math.max(n, 1), fail_fast and true or false)
  -- if on_done raises or the batch is interrupted, end what is still running before leaving
  local guard <close> = setmetatable({}, { __close = function(_, err) if err then b:cancel() end end })
  local results, done, count, failures, cancelled = {}, {}, 0, 0, false
  if progress then progress_line(0, n, 0) end
  while true do
    local i, r = b:next()
    if i == nil then break end
    results[i], done[i], count = r, true, count + 1
    if failed(r) then failures = failures + 1 end
    if progress then progress_line(count, n, failures) end
    if on_done then on_done(i, r) end
    if fail_fast and not cancelled and failed(r) then
      cancelled = true
      b:cancel() -- the host stopped launching already; this waits for the running ones to end
    end
  end
  if progress then io.stderr:write("\r\27[K") end
  if cancelled then
    for i = 1, n do
      if not done[i] then results[i] = setmetatable({}, getmetatable(CANCELLED)) end
    end
  end
  return results
end

---Runs functions concurrently and returns their first results, in order; raises the first
---error (after all have finished) if any raised.
function qw.parallel(...)
  local fns = pack(...)
  for i = 1, fns.n do
    if type(fns[i]) ~= "function" then
      error(("qw.parallel: argument %d must be a function (got %s)"):format(i, type(fns[i])), 2)
    end
  end
  local rs = qw.batch({ unpack(fns, 1, fns.n) })
  for i = 1, fns.n do
    if getmetatable(rs[i]) == ITEM_ERROR then error(rs[i].error, 0) end
  end
  return unpack(rs, 1, fns.n)
end

---------------------------------------------------------------------------------------------
-- Pretty printing

qw.inspect = lazy("qw.inspect", function() return require("qw.inspect") end)

---The agent definitions (see stdlib/qw/agents.lua): `qw.agents()` by name, `qw.agents.check()`.
qw.agents = lazy("qw.agents", with_core("qw.agents"))
---Routing tasks to agents (see stdlib/qw/router.lua): `qw.router.rule{...}`, `route`, `explain`.
qw.router = lazy("qw.router", function() return require("qw.router") end)
---Running agents (see stdlib/qw/agent.lua): `qw.agent.run{ agent, prompt, ... }`, `qw.agent.backends`.
qw.agent = lazy("qw.agent", with_core("qw.agent"))
---Specs (see stdlib/qw/spec.lua): `qw.spec.parse(name)`, `lint`, `plan`, `list`.
qw.spec = lazy("qw.spec", with_core("qw.spec"))
---Project set-up (see stdlib/qw/setup.lua): `qw init`.
qw.setup = lazy("qw.setup", with_core("qw.setup"))
---Git worktrees (see stdlib/qw/git.lua): `qw.git.worktree{...}`, `worktrees`, `gc`.
qw.git = lazy("qw.git", function() return require("qw.git") end)
qw.hooks = lazy("qw.hooks", with_core("qw.hooks"))
qw.suggestions = lazy("qw.suggestions", with_core("qw.suggestions"))

---Queues a command suggestion (an argv: `{ "/spec-design", "demo" }` or `{ "qw", "spec", ... }`)
---for `qw consume`; see qw.suggestions.add.
function qw.suggest(argv, opts) return qw.suggestions.add(argv, opts) end

return qw
