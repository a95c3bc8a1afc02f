--- Workflows: tasks with dependencies, run as soon as their dependencies succeed, with
--- every task's status, attempts, timings and result kept in the state store so that a
--- workflow run again (or `qw resume NAME`) does only what has not succeeded.
---
--- A task is kept (not run again) when it succeeded before with the same definition (its
--- command and options, or its function's bytecode), the same content of its `inputs`
--- (hashed; a file whose size, mtime and inode are unchanged is not read again), all its
--- `outputs` present, and all its dependencies kept. `wf:plan()` and `wf:run{ dry_run = true }`
--- say why each other task runs. A task whose input another task lists as an output depends
--- on that task.
---
--- The graph, the decisions and the records are the engine's (Swift); this module checks
--- what scripts hand it and runs the tasks: `max_concurrent` worker coroutines each take the
--- next ready task, run it, and report how it ended.
---
--- Durability: status changes are written in batches (every 0.5 s or 20,000 changes, and
--- once the workers have waited 20 ms for a task to end), so what the store says lags what
--- happened by no more than that. Tasks that were running when qw died are marked
--- interrupted and run again. The store logs an event for each status it is given (a task
--- seen running: "task started"; a finished one: "task succeeded" or "task failed" with its
--- start, attempts, duration, exit code, peak memory and CPU time; "task skipped").
local core = ...
local M = {}

local Workflow = {}
Workflow.__index = Workflow

local TASK_OPTIONS = { deps = true, retry = true, timeout = true, resources = true, agent = true, name = true,
                       cwd = true, env = true, check = true, log = true, cpu_time = true, inputs = true, outputs = true }
-- options of the engine's, not of the command: they do not go to qw.exec, nor into the fingerprint
local ENGINE_OPTIONS = { deps = true, retry = true, name = true, agent = true, inputs = true, outputs = true }
-- the options wf:task's C part takes as they are (inputs and outputs are checked in Lua)
local PLAIN_OPTIONS = {}
for k in pairs(TASK_OPTIONS) do PLAIN_OPTIONS[k] = (k ~= "inputs" and k ~= "outputs") or nil end

-- An agent task's spec: a table with a prompt and no argv.
local function is_agent_spec(spec)
  return type(spec) == "table" and spec.prompt ~= nil and spec[1] == nil
end

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
    if k ~= "max_concurrent" and k ~= "budget_usd" and k ~= "logs" then
      fail(2, "qw.workflow: unknown option '%s' (max_concurrent, budget_usd, logs)", tostring(k))
    end
  end
  if opts.logs ~= nil and type(opts.logs) ~= "boolean" then
    fail(2, "qw.workflow: logs must be true or false (got %s)", type(opts.logs))
  end
  if opts.budget_usd ~= nil and (type(opts.budget_usd) ~= "number" or opts.budget_usd < 0) then
    fail(2, "qw.workflow: budget_usd must be a number >= 0 (got %s)", tostring(opts.budget_usd))
  end
  -- The tasks in definition order: ids and dependencies in `defs`, a table in C memory
  -- (ids, dependency lists and their strings kept in Lua would be objects for the collector
  -- to walk on every cycle while a big workflow is defined), specs and options in lists;
  -- optss[n] is false for a task whose options hold nothing but deps.
  local wf = setmetatable({ name = name, opts = opts, specs = {}, optss = {} }, Workflow)
  -- wf:task is this workflow's own: its common case is one C call (a third of the
  -- instructions of the same checks in Lua); whatever that declines, Workflow.check_task
  -- checks and explains
  wf.task, wf.defs = core._wf_task_adder(PLAIN_OPTIONS, wf.specs, wf.optss, Workflow.check_task)
  return wf
end

-- inputs and outputs: lists of non-empty strings (inputs may be a function returning one)
local function check_paths(wf, id, key, v)
  if type(v) == "function" and key == "inputs" then return end
  if type(v) ~= "table" then
    fail(4, "workflow '%s': %s of task '%s' must be a list of paths or globs%s (got %s)", wf.name, key, id,
         key == "inputs" and ", or a function returning one" or "", type(v))
  end
  for k, p in ipairs(v) do
    if type(p) ~= "string" or p == "" then
      fail(4, "workflow '%s': %s[%d] of task '%s' must be a non-empty string (got %s)", wf.name, key, k, id, type(p))
    end
  end
end

---Adds a task: a command spec (string or table) or a function. (Each workflow's `task` is
---a C function that takes the common case itself and passes any other to this one, which
---checks it: errors name the caller of wf:task, two levels up.)
---@param id string
---@param spec string|table|function
---@param opts table? { deps = {ids}, retry, timeout, resources, name, ... }
function Workflow:check_task(id, spec, opts)
  if getmetatable(self) ~= Workflow then fail(3, "wf:task: call it as a method, wf:task(id, spec, opts)") end
  if type(id) ~= "string" or id == "" then
    fail(3, "workflow '%s': a task id must be a non-empty string (got %s)", self.name, type(id))
  end
  if self.defs:place(id) then fail(3, "workflow '%s': task '%s' is defined twice", self.name, id) end
  local t = type(spec)
  if t ~= "string" and t ~= "table" and t ~= "function" then
    fail(3, "workflow '%s': task '%s' must be a command (string or table) or a function (got %s)", self.name, id, t)
  end
  if opts ~= nil and type(opts) ~= "table" then
    fail(3, "workflow '%s': the options of task '%s' must be a table (got %s)", self.name, id, type(opts))
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not TASK_OPTIONS[k] then fail(3, "workflow '%s': task '%s' has an unknown option '%s'", self.name, id, tostring(k)) end
  end
  local deps = opts.deps
  if deps ~= nil then
    if type(deps) ~= "table" then fail(3, "workflow '%s': deps of task '%s' must be a list of task ids", self.name, id) end
    for k = 1, rawlen(deps) do
      local d = rawget(deps, k)
      if type(d) ~= "string" then
        fail(3, "workflow '%s': deps[%d] of task '%s' must be a task id (got %s)", self.name, k, id, type(d))
      end
    end
  end
  if opts.inputs ~= nil then check_paths(self, id, "inputs", opts.inputs) end
  if opts.outputs ~= nil then check_paths(self, id, "outputs", opts.outputs) end
  if is_agent_spec(spec) then
    if type(spec.prompt) ~= "string" or spec.prompt == "" then
      fail(3, "workflow '%s': the prompt of agent task '%s' must be a non-empty string", self.name, id)
    end
    if spec.agent ~= nil and type(spec.agent) ~= "string" and type(spec.agent) ~= "function" then
      fail(3, "workflow '%s': the agent of task '%s' must be a name or a function(task) -> name (got %s)",
           self.name, id, type(spec.agent))
    end
  end
  local n = self.defs:add(id, deps)
  self.specs[n], self.optss[n] = spec, opts
  return self
end

-- What identifies a task's work: its command and options, or its function's bytecode.
local dumped = setmetatable({}, { __mode = "k" })  -- many tasks often share one function
-- A value for the fingerprint: functions (a router as `agent`) by their code.
local function stable(v)
  if type(v) == "function" then
    local ok, code = pcall(string.dump, v, true)
    return "function:" .. core._hash(ok and code or tostring(v))
  end
  if type(v) == "table" then
    local t = {}
    for k, x in pairs(v) do t[k] = stable(x) end
    return t
  end
  return v
end

local function fingerprint(spec, opts)
  local payload
  if is_agent_spec(spec) then
    local o = {}
    for k, v in pairs(opts) do
      if not ENGINE_OPTIONS[k] or k == "agent" then o[k] = v end
    end
    local ok, json = pcall(qw.json.encode, { agent_task = stable(spec), opts = stable(o) })
    return core._hash("agent\0" .. (ok and json or tostring(spec)))
  end
  if type(spec) == "function" then
    local h = dumped[spec]
    if h then return h end
    local ok, code = pcall(string.dump, spec, true)
    h = core._hash("function\0" .. (ok and code or tostring(spec)))
    dumped[spec] = h
    return h
  else
    local o = {}
    for k, v in pairs(opts) do
      if not ENGINE_OPTIONS[k] or k == "agent" then o[k] = v end
    end
    local ok, json = pcall(qw.json.encode, { spec = spec, opts = o })
    payload = ok and json or tostring(spec)
  end
  return core._hash(type(spec) .. "\0" .. payload)
end

-- the options of a task defined with none but deps
local NO_OPTS = {}

local function failed(r)
  return type(r) == "table" and r.ok == false
end

-- Runs one task; returns its result (a failure is a result with ok == false) and, for a
-- function task with a retry policy, how many attempts it took. `h:attempt` hears of each
-- failed attempt of a task with a retry policy.
-- What an agent task passes to qw.agent.run besides its prompt.
local AGENT_FIELDS = { "model", "max_turns", "budget_usd", "allowed_tools", "disallowed_tools", "permission_mode",
                       "append_system_prompt", "json_schema", "session", "backend", "command" }

-- The file a command or agent task tees its output into, emptied for this run (the
-- dashboard follows it; see TaskLogs): unless the task names its own `log`, or the workflow
-- was made with `logs = false`.
local function task_log(t, wf_name, logs)
  if t.opts.log ~= nil or logs == false then return t.opts.log end
  return core._task_log(wf_name, t.id)
end

local function run_agent_task(t, wf_name, wf_budget, logs)
  local spec, opts = t.spec, t.opts
  local agent = spec.agent
  -- `agent = qw.router.route` (or any function) picks the agent for this task
  if type(agent) == "function" then agent = agent({ id = t.id, prompt = spec.prompt, title = spec.title, files = spec.files }) end
  local run = { agent = agent, prompt = spec.prompt, cwd = opts.cwd, env = opts.env, timeout = opts.timeout,
                retry = opts.retry, name = opts.name or t.id, log = task_log(t, wf_name, logs), workflow = wf_name, task = t.id,
                workflow_budget_usd = wf_budget,
                resources = opts.resources or qw.agent.memory_request(agent) }
  for _, k in ipairs(AGENT_FIELDS) do run[k] = spec[k] end
  return qw.agent.run(run)
end

local function run_task(t, h, i, wf_name, wf_budget, logs)
  local spec, opts = t.spec, t.opts
  if is_agent_spec(spec) then return run_agent_task(t, wf_name, wf_budget, logs) end
  if type(spec) == "function" then
    if not opts.retry then return spec() end
    local attempts, value = 0, nil
    local r = qw.retry.run(opts.retry, function()
      attempts = attempts + 1
      local ok, v = pcall(spec)
      value = v
      if ok and not failed(v) then return { ok = true } end
      local failure = { ok = false, error = ok and (type(v) == "table" and v.error) or v }
      h:attempt(i, failure)
      return failure
    end)
    if not r.ok then return { ok = false, error = r.error or "failed" }, attempts end
    return value, attempts
  end
  local o = t.exec_opts
  if not o then
    o = {}
    for k, v in pairs(opts) do
      if not ENGINE_OPTIONS[k] or k == "name" then o[k] = v end
    end
    if o.name == nil then o.name = t.id end
    t.exec_opts = o
  end
  o.log = task_log(t, wf_name, logs)
  if not opts.retry then return qw.exec(spec, o) end
  -- the retry loop is here rather than in qw.exec, so that every failed attempt is logged
  return qw.retry.run(opts.retry, function()
    local r = qw.exec(spec, o)
    if not r.ok then h:attempt(i, r) end
    return r
  end)
end

-- The folder that a task's relative inputs and outputs start from: its cwd, else the
-- script's folder, else the current one.
local function script_dir()
  local script = core._script()
  if script then return script:match("^(.*)/[^/]*$") or "." end
  return nil
end

-- Hands the tasks to the engine, which checks the graph (unknown dependencies, cycles).
-- Tasks with inputs or outputs have them in `inputs_of`, `outputs_of` and `bases` (the folder
-- they start from), by place.
local function prepare(wf)
  local dir
  local defs, specs, optss, fps = wf.defs, wf.specs, wf.optss, {}
  local bases, inputs_of, outputs_of = {}, {}, {}
  for i = 1, defs:count() do
    local opts = optss[i] or NO_OPTS
    fps[i] = fingerprint(specs[i], opts)
    if opts.inputs ~= nil or opts.outputs ~= nil then
      local id = defs:id(i)
      if dir == nil then dir = script_dir() or false end
      bases[i] = opts.cwd or dir or nil
      local inputs = opts.inputs
      if type(inputs) == "function" then
        local ok, list = pcall(inputs, id)
        if not ok then
          error(("workflow '%s': the inputs function of task '%s' failed: %s"):format(wf.name, id, tostring(list)), 0)
        end
        if type(list) ~= "table" then
          error(("workflow '%s': the inputs function of task '%s' must return a list of paths (got %s)")
                :format(wf.name, id, type(list)), 0)
        end
        for k, p in ipairs(list) do
          if type(p) ~= "string" or p == "" then
            error(("workflow '%s': the inputs function of task '%s' returned a bad path at %d (%s)")
                  :format(wf.name, id, k, type(p)), 0)
          end
        end
        inputs = list
      end
      inputs_of[i], outputs_of[i] = inputs, opts.outputs
    end
  end
  wf.inputs_of = inputs_of
  return core._wf_prepare(wf.name, defs, optss, fps, bases, inputs_of, outputs_of)
end

---The batches of task ids that can run in parallel, by dependency level; and, per task in
---definition order, whether the next run would run it and why: `{ id, run, reason, reasons }`.
---@return table batches, table decisions
function Workflow:plan()
  local h = prepare(self)
  return h:levels(), h:decide(false, true)
end

---Runs the workflow (resuming: tasks that succeeded before, unchanged, are not run again).
---@param opts table? { fresh = true, max_concurrent = n, dry_run = true }
---@return table report { ok, succeeded, failed, skipped, results, duration, hashed = { files, bytes } };
---  with dry_run, { dry_run = true, run = {ids}, keep = {ids}, tasks = decisions, hashed } and nothing runs
function Workflow:run(opts)
  if opts ~= nil and type(opts) ~= "table" then fail(2, "wf:run: options must be a table (got %s)", type(opts)) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "fresh" and k ~= "max_concurrent" and k ~= "dry_run" then
      fail(2, "wf:run: unknown option '%s' (fresh, max_concurrent, dry_run)", tostring(k))
    end
  end
  local h = prepare(self)
  local decisions = h:decide(opts.fresh and true or false, opts.dry_run)
  if opts.dry_run then
    local report = { dry_run = true, ok = true, run = {}, keep = {}, tasks = decisions, hashed = h:hashed() }
    for _, d in ipairs(decisions) do
      local list = d.run and report.run or report.keep
      list[#list + 1] = d.id
    end
    return report
  end
  local name, started = self.name, qw.now()
  if opts.fresh then core._wf_reset(name) end
  local script, cwd = core._script()
  core._wf_begin(name, script, script and qw.args or nil, cwd, self.opts.budget_usd)
  local results = {}
  local to_run = h:begin(results)
  local batch
  local guard <close> = setmetatable({}, { __close = function(_, err)
    if err then
      if batch then pcall(batch.cancel, batch) end
      pcall(h.flush, h)
      pcall(core._wf_end, name, "interrupted")
    end
  end })

  if to_run > 0 then
    local defs, specs, optss, inputs_of = self.defs, self.specs, self.optss, self.inputs_of
    -- h:step(i, ...) reports how task i ended and returns the next task (nil: all done)
    local function worker()
      local i = h:step()
      while i do
        local t = { id = defs:id(i), spec = specs[i], opts = optss[i] or NO_OPTS }
        local why = inputs_of[i] and h:prepare(i)
        if why then
          results[t.id] = { ok = false, error = why }
          i = h:step(i, false, why)
        else
          local ok, r, attempts = pcall(run_task, t, h, i, name, self.opts.budget_usd, self.opts.logs)
          if ok then
            if r ~= nil then results[t.id] = r end
          else
            results[t.id] = { ok = false, error = r }
          end
          i = h:step(i, ok, r, attempts)
        end
      end
    end
    local n = math.min(opts.max_concurrent or self.opts.max_concurrent or 8, to_run)
    batch = core._batch_start({}, n, false)
    for _ = 1, n do batch:add(worker) end
    while true do
      local k, r = batch:next()
      if k == nil then break end
      if failed(r) then error(r.error, 0) end -- not a task's failure: the engine or a cancel
    end
  end
  h:flush()

  local report = { ok = true, results = results, hashed = h:hashed() }
  report.succeeded, report.failed, report.skipped = h:outcome()
  -- the agent tasks the budget kept from starting
  report.not_started = {}
  for _, id in ipairs(report.failed) do
    local r = results[id]
    if type(r) == "table" and r.budget_exceeded then report.not_started[#report.not_started + 1] = id end
  end
  report.ok = #report.failed == 0 and #report.skipped == 0
  report.duration = qw.now() - started
  core._wf_end(name, report.ok and "succeeded" or "failed")
  return report
end

return M
