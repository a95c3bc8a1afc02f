--- Workflows: tasks with dependencies, run as soon as their dependencies succeed, with
--- every task's status, attempts, timings and result kept in the state store so that a
--- workflow run again (or `qw resume NAME`) does only what has not succeeded.
---
--- A task's identity is its id plus a fingerprint of what it runs: the command and its
--- options for a command task, the function's bytecode for a function task. A succeeded task
--- whose definition changed is run again.
---
--- Durability: status changes are written in batches, and always before the engine waits for
--- the next task to finish, so what the store says lags what happened by no more than the
--- time the engine needs to notice. Tasks that were running when qw died are marked
--- interrupted and run again. The store logs an event for each status it is given (a task
--- seen running: "task started"; a finished one: "task succeeded" or "task failed" with its
--- start, attempts, duration, exit code, peak memory and CPU time; "task skipped").
local core = ...
local M = {}

local Workflow = {}
Workflow.__index = Workflow

local TASK_OPTIONS = { deps = true, retry = true, timeout = true, resources = true, agent = true, name = true,
                       cwd = true, env = true, check = true, log = true, cpu_time = true }

local function fail(level, fmt, ...)
  error(fmt:format(...), level + 1)
end

---Creates a workflow.
---@param name string unique within the state store
---@param opts table? { max_concurrent = n }
function M.new(name, opts)
  if type(name) ~= "string" or name == "" then
    fail(2, "qw.workflow: the name must be a non-empty string (got %s)", type(name))
  end
  if opts ~= nil and type(opts) ~= "table" then fail(2, "qw.workflow: options must be a table (got %s)", type(opts)) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "max_concurrent" then fail(2, "qw.workflow: unknown option '%s' (max_concurrent)", tostring(k)) end
  end
  return setmetatable({ name = name, opts = opts, tasks = {}, order = {} }, Workflow)
end

---Adds a task: a command spec (string or table) or a function.
---@param id string
---@param spec string|table|function
---@param opts table? { deps = {ids}, retry, timeout, resources, name, ... }
function Workflow:task(id, spec, opts)
  if type(id) ~= "string" or id == "" then
    fail(2, "workflow '%s': a task id must be a non-empty string (got %s)", self.name, type(id))
  end
  if self.tasks[id] then fail(2, "workflow '%s': task '%s' is defined twice", self.name, id) end
  local t = type(spec)
  if t ~= "string" and t ~= "table" and t ~= "function" then
    fail(2, "workflow '%s': task '%s' must be a command (string or table) or a function (got %s)", self.name, id, t)
  end
  if opts ~= nil and type(opts) ~= "table" then
    fail(2, "workflow '%s': the options of task '%s' must be a table (got %s)", self.name, id, type(opts))
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not TASK_OPTIONS[k] then fail(2, "workflow '%s': task '%s' has an unknown option '%s'", self.name, id, tostring(k)) end
  end
  local deps = opts.deps or {}
  if type(deps) ~= "table" then fail(2, "workflow '%s': deps of task '%s' must be a list of task ids", self.name, id) end
  local task = { id = id, spec = spec, opts = opts, deps = deps, index = #self.order + 1 }
  self.tasks[id] = task
  self.order[#self.order + 1] = task
  return self
end

-- Checks dependencies: every dep exists and there is no cycle. Returns dependents lists.
local function check(wf, level)
  local dependents = {}
  for _, t in ipairs(wf.order) do dependents[t.id] = {} end
  for _, t in ipairs(wf.order) do
    for _, d in ipairs(t.deps) do
      if not wf.tasks[d] then
        fail(level + 1, "workflow '%s': task '%s' depends on unknown task '%s'", wf.name, t.id, tostring(d))
      end
      local list = dependents[d]
      list[#list + 1] = t
    end
  end
  -- Kahn's algorithm; what is left over is on or behind a cycle
  local remaining, queue, head, seen = {}, {}, 1, 0
  for _, t in ipairs(wf.order) do
    remaining[t.id] = #t.deps
    if #t.deps == 0 then queue[#queue + 1] = t end
  end
  while head <= #queue do
    local t = queue[head]
    head = head + 1
    seen = seen + 1
    for _, d in ipairs(dependents[t.id]) do
      remaining[d.id] = remaining[d.id] - 1
      if remaining[d.id] == 0 then queue[#queue + 1] = d end
    end
  end
  if seen < #wf.order then
    -- walk dependencies from a task left over until one repeats: that is the cycle
    local start
    for _, t in ipairs(wf.order) do if remaining[t.id] > 0 then start = t break end end
    local path, at, pos = {}, start, {}
    while not pos[at.id] do
      pos[at.id] = #path + 1
      path[#path + 1] = at.id
      local nextt
      for _, d in ipairs(at.deps) do if remaining[d] and remaining[d] > 0 then nextt = wf.tasks[d] break end end
      at = nextt
    end
    local cycle = {}
    for i = pos[at.id], #path do cycle[#cycle + 1] = path[i] end
    cycle[#cycle + 1] = at.id
    fail(level + 1, "workflow '%s': dependency cycle: %s", wf.name, table.concat(cycle, " -> "))
  end
  return dependents
end

---The batches of task ids that can run in parallel, by dependency level.
function Workflow:plan()
  check(self, 2)
  local level, batches = {}, {}
  for _, t in ipairs(self.order) do
    -- definition order is not topological: compute levels by repeated passes over deps
    level[t.id] = nil
  end
  local function depth(t)
    if level[t.id] then return level[t.id] end
    local l = 1
    for _, d in ipairs(t.deps) do l = math.max(l, depth(self.tasks[d]) + 1) end
    level[t.id] = l
    return l
  end
  for _, t in ipairs(self.order) do
    local l = depth(t)
    batches[l] = batches[l] or {}
    local b = batches[l]
    b[#b + 1] = t.id
  end
  return batches
end

-- What identifies a task's work: its command and options, or its function's bytecode.
local dumped = setmetatable({}, { __mode = "k" })  -- many tasks often share one function
local function fingerprint(task)
  local spec, payload = task.spec, nil
  if type(spec) == "function" then
    local h = dumped[spec]
    if h then return h end
    local ok, code = pcall(string.dump, spec, true)
    h = core._hash("function\0" .. (ok and code or tostring(spec)))
    dumped[spec] = h
    return h
  else
    local o = {}
    for k, v in pairs(task.opts) do
      if k ~= "deps" and k ~= "retry" and k ~= "name" then o[k] = v end
    end
    local ok, json = pcall(qw.json.encode, { spec = spec, opts = o })
    payload = ok and json or tostring(spec)
  end
  return core._hash(type(spec) .. "\0" .. payload)
end

-- The function a task runs as a batch item; `tries[id]` learns how many attempts a
-- function task with a retry policy took, and `note(task, result)` hears of each failed
-- attempt of a command task with one.
local function runner(task, tries, note)
  local spec, opts = task.spec, task.opts
  if type(spec) == "function" then
    if opts.retry then
      return function()
        local attempts, value = 0, nil
        local r = qw.retry.run(opts.retry, function()
          attempts = attempts + 1
          local ok, v = pcall(spec)
          value = v
          if ok and not (type(v) == "table" and v.ok == false) then return { ok = true } end
          local failure = { ok = false, error = ok and (type(v) == "table" and v.error) or v }
          note(task, failure)
          return failure
        end)
        tries[task.id] = attempts
        if not r.ok then error(r.error or "failed", 0) end
        return value
      end
    end
    return spec
  end
  local o = {}
  for k, v in pairs(opts) do
    if k ~= "deps" and k ~= "agent" and k ~= "retry" then o[k] = v end
  end
  if o.name == nil then o.name = task.id end
  if not opts.retry then return function() return qw.exec(spec, o) end end
  -- the retry loop is here rather than in qw.exec, so that every failed attempt is logged
  return function()
    return qw.retry.run(opts.retry, function()
      local r = qw.exec(spec, o)
      if not r.ok then note(task, r) end
      return r
    end)
  end
end

local function failed(r)
  return type(r) == "table" and r.ok == false
end

---Runs the workflow (resuming: tasks that succeeded before, unchanged, are not run again).
---@param opts table? { fresh = true, max_concurrent = n }
---@return table report { ok, succeeded, failed, skipped, results, duration }
function Workflow:run(opts)
  if opts ~= nil and type(opts) ~= "table" then fail(2, "wf:run: options must be a table (got %s)", type(opts)) end
  opts = opts or {}
  local dependents = check(self, 2)
  local name, started = self.name, qw.now()
  if opts.fresh then core._wf_reset(name) end
  local script, cwd = core._script()
  core._wf_begin(name, script, script and qw.args or nil, cwd)
  local previous = core._wf_tasks(name)

  local records, dirty, events, attempts = {}, {}, {}, {}
  -- Sets a task's status (and error), queues its record for the next flush, and logs an
  -- event when one is named. No table is made here: this runs twice per task.
  local function mark(task, status, event, err)
    local r = records[task.id]
    r.status = status
    if err ~= nil then r.error = err end
    if not dirty[task.id] then
      dirty[task.id] = true
      dirty[#dirty + 1] = task.id
    end
    if event then events[#events + 1] = { kind = event, task = task.id, data = err } end
  end
  local last_flush = qw.now()
  local function flush()
    if #dirty == 0 and #events == 0 then return end
    local list = {}
    for i = 1, #dirty do list[i] = records[dirty[i]] end
    core._wf_save(name, list, events, attempts)
    dirty, events, attempts, last_flush = {}, {}, {}, qw.now()
  end

  -- A task that succeeded before is kept when its definition is unchanged and every task it
  -- depends on is kept too: a dependency that runs again makes its dependents run again.
  local keep, fps = {}, {}
  for _, t in ipairs(self.order) do fps[t.id] = fingerprint(t) end
  local function kept(t)
    if keep[t.id] ~= nil then return keep[t.id] end
    local prev = previous[t.id]
    local k = prev ~= nil and prev.status == "succeeded" and prev.fingerprint == fps[t.id]
    if k then
      for _, d in ipairs(t.deps) do
        if not kept(self.tasks[d]) then k = false break end
      end
    end
    keep[t.id] = k
    return k
  end

  local status, results, remaining = {}, {}, {}
  for _, t in ipairs(self.order) do
    local fp = fps[t.id]
    local prev = previous[t.id]
    records[t.id] = { id = t.id, fingerprint = fp, status = "pending", attempts = 0 }
    if kept(t) then
      status[t.id] = "succeeded"
      results[t.id] = prev.result
      for k, v in pairs(prev) do records[t.id][k] = v end
    else
      status[t.id] = "pending"
      -- a task the store does not know yet is pending; only changes of a known one are written
      if prev and prev.status == "running" then
        mark(t, "interrupted", "task interrupted")
      elseif prev then
        mark(t, "pending", prev.status == "succeeded" and "task changed" or nil)
      end
    end
  end
  for _, t in ipairs(self.order) do
    local n = 0
    for _, d in ipairs(t.deps) do if status[d] ~= "succeeded" then n = n + 1 end end
    remaining[t.id] = n
  end

  local max = opts.max_concurrent or self.opts.max_concurrent or 8
  local batch = core._batch_start({}, max, false)
  local guard <close> = setmetatable({}, { __close = function(_, err)
    if err then
      batch:cancel()
      pcall(flush)
      pcall(core._wf_end, name, "interrupted")
    end
  end })
  local by_index, running, tries, noted = {}, 0, {}, {}
  -- every failed attempt of a task with a retry policy, as it happens
  local function note_attempt(t, r)
    local n = (noted[t.id] or 0) + 1
    noted[t.id] = n
    attempts[#attempts + 1] = { task = t.id, attempt = n, ok = false, error = r.error and tostring(r.error),
                                code = r.code, duration = r.duration, max_rss = r.max_rss, cpu_time = r.cpu_time }
    events[#events + 1] = { kind = "task attempt failed", task = t.id,
                            data = { attempt = n, error = r.error and tostring(r.error), code = r.code } }
  end

  local function launch(t)
    status[t.id] = "running"
    records[t.id].started_at = core._time()
    mark(t, "running")
    local run = runner(t, tries, note_attempt)
    local i = batch:add(run, type(run) ~= "function" and ("workflow '%s': task '%s'"):format(name, t.id) or nil)
    by_index[i] = t
    running = running + 1
  end

  local function skip_dependents(t)
    for _, d in ipairs(dependents[t.id]) do
      if status[d.id] == "pending" then
        status[d.id] = "skipped"
        mark(d, "skipped", nil, ("dependency '%s' did not succeed"):format(t.id))
        skip_dependents(d)
      end
    end
  end

  for _, t in ipairs(self.order) do
    if status[t.id] == "pending" and remaining[t.id] == 0 then launch(t) end
  end

  while running > 0 do
    -- Group commit: changes are written every 0.5 s or 20000 changes while tasks keep
    -- finishing, and as soon as the engine has waited 20 ms for the next one.
    if #dirty >= 20000 or qw.now() - last_flush > 0.5 then flush() end
    local i, r = batch:next(0.02)
    if i == nil and r == "timeout" then
      flush()
      i, r = batch:next()
    end
    if i == nil then break end
    local t = by_index[i]
    by_index[i] = nil
    running = running - 1
    results[t.id] = r
    local rec = records[t.id]
    local tr = type(r) == "table"
    rec.attempts = (tr and r.attempts) or tries[t.id] or ((rec.attempts or 0) + 1)
    rec.finished_at = core._time()
    rec.duration = (tr and r.duration) or (rec.started_at and rec.finished_at - rec.started_at) or nil
    rec.code = tr and r.code or nil
    rec.max_rss = tr and r.max_rss or nil
    rec.cpu_time = tr and r.cpu_time or nil
    rec.result = r
    -- A task with a retry policy gets a row per attempt (its failed ones were noted as they
    -- happened); for the others the task's own record is its one attempt.
    if t.opts.retry and not (failed(r) and noted[t.id]) then
      attempts[#attempts + 1] = { task = t.id, attempt = rec.attempts, ok = not failed(r), duration = rec.duration,
                                  code = rec.code, max_rss = rec.max_rss, cpu_time = rec.cpu_time,
                                  error = failed(r) and tostring(r.error or "failed") or nil }
    end
    if failed(r) then
      status[t.id] = "failed"
      mark(t, "failed", nil, tostring(r.error or "failed"))
      skip_dependents(t)
    else
      status[t.id] = "succeeded"
      mark(t, "succeeded")
      for _, d in ipairs(dependents[t.id]) do
        remaining[d.id] = remaining[d.id] - 1
        if remaining[d.id] == 0 and status[d.id] == "pending" then launch(d) end
      end
    end
  end
  flush()

  local report = { ok = true, succeeded = {}, failed = {}, skipped = {}, results = results }
  for _, t in ipairs(self.order) do
    local s = status[t.id]
    if s == "succeeded" then
      report.succeeded[#report.succeeded + 1] = t.id
    elseif s == "failed" then
      report.failed[#report.failed + 1] = t.id
      report.ok = false
    else
      report.skipped[#report.skipped + 1] = t.id
      report.ok = false
    end
  end
  report.duration = qw.now() - started
  core._wf_end(name, report.ok and "succeeded" or "failed")
  return report
end

return M
