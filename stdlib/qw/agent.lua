--- Running coding agents headless: `qw.agent.run{ agent, prompt, ... }`.
---
--- A backend is a Lua table that builds the command line for a run and reads its output:
---   backend.command(opts, agent) -> argv, env[, input]
---     (input: text for the CLI's standard input, written when the gate lets the run start;
---     a CLI that takes its prompt that way is started ahead, while the run waits its turn)
---   backend.parse(result, opts) -> fields to merge into the result (ok, text, cost_usd, ...)
--- `claude` (the Claude Code CLI, stream-json) and `command` (any CLI: success by exit code
--- and an optional `check(result)`) ship here; add another by setting
--- `qw.agent.backends.NAME = { command = ..., parse = ... }` (see the README for a
--- `codex exec --json` one).
---
--- Success is judged from the CLI's result event, never from its exit code: the Claude Code
--- CLI exits 0 for some failures (a missing structured output, an interrupted run) and 1
--- with `subtype: "success"` for API errors.
local core = ...
-- limits: set with qw.limits{ budget_usd = N } (this process's agent spend)
local M = { backends = {}, limits = {} }
local spent_here = 0

-- Defaults of the agent limits (qw.limits{ max_agents, agent_stagger, agent_backoff }).
local DEFAULT_MAX_AGENTS, DEFAULT_STAGGER, DEFAULT_BACKOFF = 3, 1, 1
-- How often a run that hit a rate limit goes back into the queue before it counts as failed.
M.max_rate_limit_retries = 10
-- CLAUDE_CODE_MAX_RETRIES for the claude backend, unless the environment or the run's `env`
-- sets it (nil: leave the CLI's default of 10). The CLI would retry a 429 on its own for up
-- to 3 minutes, out of the gate's sight; with 0 the gate does the waiting, for every CLI at
-- once (scripts/bench/agents measures both). Other errors are the `retry` policy's.
M.cli_retries = 0

-- Whether a result is a rate limit or an overload: the gate closes for everyone.
local function rate_limited(r)
  local s = r.api_error_status
  if s == 429 or s == 529 then return true end
  local e = tostring(r.error or "")
  return e:find("rate_limit", 1, true) ~= nil or e:find("(429)", 1, true) ~= nil or e:find("529 Overloaded", 1, true) ~= nil
end

-- The environment variable that marks the processes of one agent run.
local MARK = "QW_AGENT_RUN"
local runs = 0

-- A run whose backend takes its prompt on standard input starts its CLI this many seconds
-- before its turn at the gate (when the gate knows when that is), so that the CLI's own start
-- is over by then; at most `prestart` runs of this process wait so at once.
M.prestart_within, M.prestart = 1, 2
-- While a rate limit paces the gate, a CLI takes its turn only once it is ready: it has
-- used no CPU for this long (it waits for its prompt).
M.idle_for = 0.05
-- Seconds after a run's turn when no CLI is started ahead (its request is on its way).
M.after_turn = 0.2
-- as the gate last said: whether a rate limit paces it, and whether other runs hold places
local gate_paced, gate_busy = false, false
local prestarted = 0
-- and a CLI's start is some half a second of CPU work: at most one per core is started ahead
-- within that time (starting more at once only makes each later)
local cores, recent_starts, last_turn = nil, {}, -math.huge
local function room_to_start()
  cores = cores or core._cpus()
  local now, kept = core._time(), {}
  -- nor in the moment after a run's turn, while its CLI works on the prompt
  if now - last_turn < M.after_turn then return false end
  for _, t in ipairs(recent_starts) do if now - t < 0.5 then kept[#kept + 1] = t end end
  recent_starts = kept
  return #kept < cores
end

local RUN_OPTIONS = { agent = true, prompt = true, cwd = true, timeout = true, model = true, max_turns = true,
                      budget_usd = true, allowed_tools = true, disallowed_tools = true, permission_mode = true,
                      append_system_prompt = true, json_schema = true, env = true, session = true, retry = true,
                      resources = true, name = true, log = true, backend = true, command = true, check = true,
                      workflow = true, task = true, workflow_budget_usd = true, gate = true }

local function fail(fmt, ...) error(fmt:format(...), 3) end

local function list_arg(v)
  if type(v) == "table" then return table.concat(v, ",") end
  return v
end

-- The last lines of a text, for a failure that printed no result.
local function tail(text, n)
  local lines = {}
  for line in (text or ""):gmatch("[^\n]+") do lines[#lines + 1] = line end
  return table.concat(lines, "\n", math.max(1, #lines - (n or 5) + 1))
end

---------------------------------------------------------------------------------------------
-- The Claude Code CLI

local claude = {}
M.backends.claude = claude

---The CLI binary: opts.command, else $QW_CLAUDE, else `claude` on PATH.
function claude.binary(opts)
  return opts.command or os.getenv("QW_CLAUDE") or "claude"
end

-- The prompt goes in on standard input, as a stream-json user message: the CLI then starts
-- (half a second or so of its own, which varies by a few tenths) before the gate lets the
-- run begin, and its request follows the prompt by a steady ~0.1 s, so the gate's pace is
-- the model's pace.
function claude.command(opts, agent)
  local argv = { claude.binary(opts), "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose" }
  local function add(flag, v) if v ~= nil then argv[#argv + 1] = flag; argv[#argv + 1] = tostring(v) end end
  if agent then add("--agent", agent.name) end
  add("--model", opts.model)
  add("--max-turns", opts.max_turns)
  add("--max-budget-usd", opts.budget_usd)
  add("--allowedTools", list_arg(opts.allowed_tools))
  add("--disallowedTools", list_arg(opts.disallowed_tools))
  add("--permission-mode", opts.permission_mode)
  add("--append-system-prompt", opts.append_system_prompt)
  if opts.json_schema ~= nil then
    add("--json-schema", type(opts.json_schema) == "table" and qw.json.encode(opts.json_schema) or opts.json_schema)
  end
  if type(opts.session) == "string" and opts.session ~= "new" and opts.session ~= "resume" then
    add("--resume", opts.session)
  end
  local env = opts.env
  if M.cli_retries and os.getenv("CLAUDE_CODE_MAX_RETRIES") == nil and not (env and env.CLAUDE_CODE_MAX_RETRIES) then
    env = {}
    for k, v in pairs(opts.env or {}) do env[k] = v end
    env.CLAUDE_CODE_MAX_RETRIES = tostring(M.cli_retries)
  end
  local input = qw.json.encode{ type = "user", message = { role = "user", content = opts.prompt } } .. "\n"
  return argv, env, input
end

-- A stream-json line as it comes: { session_id = ID } at the init event, { admitted = true }
-- at the model's first answer (an API error comes as a "<synthetic>" assistant message).
function claude.watch(line)
  if line:find('"type":"assistant"', 1, true) then
    if not line:find('"model":"<synthetic>"', 1, true) then return { admitted = true } end
  elseif line:find('"subtype":"init"', 1, true) then
    local ok, ev = pcall(qw.json.decode, line)
    if ok and type(ev) == "table" and type(ev.session_id) == "string" then return { session_id = ev.session_id } end
  end
end

-- The CLI's own commands whose run ends with no answer (`/compact` of a session: num_turns 0).
M.SILENT_COMMANDS = { compact = true }

-- The slash command a prompt starts with, if any.
local function slash_command(prompt)
  return type(prompt) == "string" and prompt:match("^%s*/([%w_.:%-]+)") or nil
end

-- Reads the stream-json lines: the result event (the last one, when a background subagent
-- makes two), the session id and the assistant's text.
function claude.parse(r, opts)
  local out = { turns = 0 }
  local result, texts, commands = nil, {}, nil
  -- lines are picked by their text before they are decoded (the init line alone is kilobytes
  -- of tools); a stream not written as the CLI writes it is read whole
  local wants_init = slash_command(opts.prompt) ~= nil  -- its list of commands
  local function read(every)
    for line in (r.stdout or ""):gmatch("[^\n]+") do
      local wanted = every or line:find('"type":"result"', 1, true) or line:find('"type":"assistant"', 1, true)
        or (wants_init and line:find('"subtype":"init"', 1, true))
      local ok, ev = false, nil
      if wanted then ok, ev = pcall(qw.json.decode, line) end
      if ok and type(ev) == "table" then
        if ev.session_id then out.session_id = ev.session_id end
        if ev.type == "result" then result = ev end
        if ev.type == "system" and ev.subtype == "init" and type(ev.slash_commands) == "table" then commands = ev.slash_commands end
        if ev.type == "assistant" and type(ev.message) == "table" and not ev.parent_tool_use_id then
          for _, block in ipairs(ev.message.content or {}) do
            if block.type == "text" and block.text then texts[#texts + 1] = block.text end
          end
        end
      end
    end
  end
  read(false)
  if not result then
    texts, commands = {}, nil
    read(true)
  end
  if not result then
    out.ok = false
    out.error = "the CLI gave no result: " .. (tail(r.stderr) ~= "" and tail(r.stderr) or (r.error or ("exit " .. tostring(r.code))))
    return out
  end
  local usage = result.usage or {}
  out.cost_usd = result.total_cost_usd
  out.input_tokens = usage.input_tokens
  out.output_tokens = usage.output_tokens
  out.cache_read_tokens = usage.cache_read_input_tokens
  out.cache_creation_tokens = usage.cache_creation_input_tokens
  -- a budget stop leaves the last turn out of usage: modelUsage has it
  if type(result.modelUsage) == "table" and result.subtype == "error_max_budget_usd" then
    local i, o, cr, cc = 0, 0, 0, 0
    for _, m in pairs(result.modelUsage) do
      i, o = i + (m.inputTokens or 0), o + (m.outputTokens or 0)
      cr, cc = cr + (m.cacheReadInputTokens or 0), cc + (m.cacheCreationInputTokens or 0)
    end
    out.input_tokens, out.output_tokens, out.cache_read_tokens, out.cache_creation_tokens = i, o, cr, cc
  end
  out.turns = result.num_turns or out.turns
  out.text = result.result or table.concat(texts, "\n")
  out.terminal_reason = result.terminal_reason
  out.api_error_status = result.api_error_status
  out.permission_denials = result.permission_denials
  out.structured_output = result.structured_output
  out.session_id = result.session_id or out.session_id
  out.subtype = result.subtype
  -- the models that ran, the costliest first (subagents may run others)
  if type(result.modelUsage) == "table" then
    local models = {}
    for id, m in pairs(result.modelUsage) do models[#models + 1] = { id, m.costUSD or 0 } end
    table.sort(models, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return a[1] < b[1] end)
    local ids = {}
    for i, m in ipairs(models) do ids[i] = m[1] end
    out.model = ids[1] and table.concat(ids, ",") or nil
  end
  -- success, as the result says it and as the CLI's "successes" that are not
  local why
  if result.is_error then
    why = (type(result.errors) == "table" and table.concat(result.errors, "; ")) or result.result or result.subtype
    -- a SIGINT to the CLI (exit 0) says only this
    if result.subtype == "error_during_execution" and tostring(why):find("[ede_diagnostic]", 1, true) == 1 then
      why = "interrupted (error_during_execution): " .. tostring(why)
    end
  elseif result.subtype ~= "success" then
    why = result.subtype
  elseif result.terminal_reason and result.terminal_reason ~= "completed" then
    why = "stopped: " .. result.terminal_reason
  elseif opts.json_schema ~= nil and result.structured_output == nil then
    why = "the agent gave no structured output for the json_schema"
  elseif result.result == "" and not M.SILENT_COMMANDS[slash_command(opts.prompt) or ""] then
    -- a Stop hook that kept blocking, or a hook that stopped the run, ends it with no answer
    why = "the agent ended with no answer (a hook stopped it)"
  end
  local slash = slash_command(opts.prompt)
  if not why and slash and commands then
    local known = false
    for _, c in ipairs(commands) do if c == slash then known = true; break end end
    if not known then
      -- the CLI sends an unknown command to the model as plain text and calls that a success
      why = ("unknown slash command /%s (not in .claude/commands, nor one of the CLI's)"):format(slash)
    end
  end
  out.ok = why == nil
  out.error = why
  return out
end

---------------------------------------------------------------------------------------------
-- Any CLI: success by exit code, and `check(result)` when given

local command = {}
M.backends.command = command

function command.command(opts)
  if opts.command == nil then fail("qw.agent.run: the command backend needs 'command' (an argv list or a shell string)") end
  return opts.command, opts.env
end

function command.parse(r, opts)
  local out = { text = r.stdout }
  if opts.check then
    local ok, verdict, msg = pcall(opts.check, r)
    if not ok then return { ok = false, error = "check failed: " .. tostring(verdict), text = r.stdout } end
    out.ok = verdict and true or false
    if not out.ok then out.error = msg or "the check said no" end
  end
  return out
end

---------------------------------------------------------------------------------------------

-- What an agent run asks admission for when it names no resources: the CLI's measured peak
-- (225-300 MB), or more when this agent's last runs used more (their peak, plus a fifth).
M.default_memory = 300 * 1024 * 1024

---The memory request of a run of `agent` (a name, or nil): { memory = bytes }.
function M.memory_request(agent)
  local peak = core._agent_peak(agent)
  return { memory = math.floor(math.max(M.default_memory, (peak or 0) * 1.2)) }
end

-- The environment every agent run gets for its hooks: the store and project as absolute
-- paths (the CLI runs hooks in the run's cwd, a worktree maybe), and this qw first on PATH.
local hook_env_cache
local function hook_env()
  if hook_env_cache then return hook_env_cache end
  local cwd = core._cwd()
  local store = core._state_path()
  if store:sub(1, 1) ~= "/" then store = cwd .. "/" .. store:gsub("^%./", "") end
  local bin = core._exe():match("^(.*)/[^/]+$")
  local path = os.getenv("PATH") or "/usr/bin:/bin"
  hook_env_cache = { QW_STATE = store, QW_PROJECT = os.getenv("QW_PROJECT") or cwd,
                     PATH = bin and (bin .. ":" .. path) or path }
  return hook_env_cache
end

---The shared agent gate: { running, probing, closed_until (seconds since the epoch, when closed),
---rate (starts a second, when a limit paced it), window (runs at once, when a limit narrowed it) }.
function M.gate()
  return core._gate_status()
end

---Runs an agent headless and returns the exec result plus what the backend read from it.
---@param opts table { agent, prompt, cwd, timeout, model, ..., backend = "claude" }
---@return table result { ok, code, stdout, stderr, duration, cost_usd, input_tokens, output_tokens,
---  cache_read_tokens, cache_creation_tokens, session_id, turns, text, terminal_reason,
---  api_error_status, permission_denials, structured_output, error, started_ahead (seconds its CLI
---  was up, waiting for its turn at the gate, when it was started ahead) }
function M.run(opts)
  if type(opts) ~= "table" then fail("qw.agent.run: expects a table of options (got %s)", type(opts)) end
  for k in pairs(opts) do
    if not RUN_OPTIONS[k] then fail("qw.agent.run: unknown option '%s'", tostring(k)) end
  end
  local backend_name = opts.backend or "claude"
  local backend = M.backends[backend_name]
  if type(backend) ~= "table" or type(backend.command) ~= "function" or type(backend.parse) ~= "function" then
    fail("qw.agent.run: no backend '%s' (qw.agent.backends.%s needs command and parse functions)", tostring(backend_name), tostring(backend_name))
  end
  if backend_name == "claude" and (type(opts.prompt) ~= "string" or opts.prompt == "") then
    fail("qw.agent.run: 'prompt' must be a non-empty string")
  end
  local agent
  if opts.agent ~= nil and backend_name == "claude" then
    local dir = opts.cwd and (opts.cwd .. "/.claude/agents") or nil
    agent = qw.agents{ dir = dir }[opts.agent]
    if not agent then
      fail("qw.agent.run: no agent named '%s' (qw agents --check lists what is wrong with the files)", tostring(opts.agent))
    end
  end
  -- Budgets: a run is not started when what was spent plus what it is expected to cost (its
  -- own budget_usd, else the average of this agent's and model's past runs) would pass the
  -- process's or the workflow's budget; otherwise the CLI gets --max-budget-usd = what is left.
  local function over_budget()
    -- no budget: nothing to look up in the ledger
    if not M.limits.budget_usd and not opts.workflow_budget_usd then return nil end
    local model = opts.model or (agent and agent.model)
    if type(model) == "string" and not model:match("^claude%-") then model = nil end  -- an alias: by agent alone
    local expected = opts.budget_usd or core._cost_average(opts.agent, model) or 0
    local left
    for _, b in ipairs({ { M.limits.budget_usd, spent_here, "this process's" },
                         { opts.workflow_budget_usd, opts.workflow and core._cost_sum(opts.workflow) or 0,
                           ("workflow '%s''s"):format(tostring(opts.workflow)) } }) do
      local budget, spent, whose = b[1], b[2], b[3]
      if budget then
        if spent + expected > budget + 1e-12 then
          return ("not started: %s budget of $%.4f would be passed ($%.4f spent, this run expects $%.4f)")
                 :format(whose, budget, spent, expected)
        end
        left = math.min(left or math.huge, budget - spent)
      end
    end
    return nil, left
  end
  local capped = opts
  local why, left = over_budget()
  if why then
    return { ok = false, budget_exceeded = true, error = why, cost_usd = 0, attempts = 0 }
  end
  if left then
    capped = {}
    for k, v in pairs(opts) do capped[k] = v end
    capped.budget_usd = math.min(opts.budget_usd or left, left)
  end
  local argv, env, input = backend.command(capped, agent)
  local function once()
    local started = core._time()
    -- every process of the run carries this mark, so that none outlives it (the CLI's Bash
    -- tool starts commands in sessions of their own, out of reach of its process group)
    runs = runs + 1
    local mark = ("%d-%d-%.0f"):format(core._pid(), runs, started * 1000)
    -- and a TMPDIR of its own (the CLI leaves sockets and probe folders there), removed after
    local tmp = core._mkdtemp("qw-agent-")
    local run_env = { [MARK] = mark, TMPDIR = tmp }
    -- what the CLI's hooks (`qw hook`) need to find this run, its store and its project
    for k, v in pairs(hook_env()) do run_env[k] = v end
    run_env.QW_RUN_ID, run_env.QW_WORKFLOW, run_env.QW_TASK = mark, opts.workflow, opts.task
    for k, v in pairs(env or {}) do run_env[k] = v end
    -- the shared gate: a place among max_agents, starts staggered, closed after a rate limit
    local gate = backend_name == "claude" and opts.gate ~= false
    local lim = M.limits
    local max_agents, stagger = lim.max_agents or DEFAULT_MAX_AGENTS, lim.agent_stagger or DEFAULT_STAGGER
    local backoff = lim.agent_backoff or DEFAULT_BACKOFF
    local holding, admitted, cleanup, h, early, spawned, ahead = false, false, nil, nil, false, nil, nil
    local leftovers <close> = setmetatable({}, { __close = function()
      if early then prestarted = prestarted - 1 end
      if h and h:running() then h:kill("SIGKILL") end  -- cancelled while it waited for the gate
      core._cleaned(cleanup or core._clean_up(MARK, mark, tmp))
      if holding then pcall(core._gate_release, mark, false, nil, backoff, max_agents) end
    end })
    -- what the kernel has started so far: the clean-up then looks only at what came after
    local tasks_before = core._tasks_started()
    local function start(timeout)
      spawned = core._time()
      recent_starts[#recent_starts + 1] = spawned
      h = qw.spawn(argv, { cwd = opts.cwd, env = run_env, timeout = timeout, log = opts.log, resources = opts.resources,
                           stdin = input ~= nil or nil,
                           name = opts.name or ("agent " .. tostring(opts.agent or backend_name)) })
      -- time to spare: the store's WAL is copied into it now rather than read whole by each
      -- qw that starts next (see StateStore.checkpointWAL), and what a kill -9 of an earlier
      -- qw left running is killed (the clean-up after this run looks at its own processes only)
      core._store_checkpoint()
      core._kill_marked(MARK, "none")
    end
    -- a CLI that takes its prompt on stdin may start before its turn (no timeout until then)
    local function start_ahead()
      if not input or h or prestarted >= M.prestart or not room_to_start() then return false end
      start(nil)
      early, prestarted = true, prestarted + 1
      return true
    end
    -- at once when there is room: its start then hides the gate's work (and the store's
    -- opening) from the run's time
    start_ahead()
    -- whether the CLI started ahead has gone quiet: its own start is over
    local quiet_since, quiet_cpu, ready = nil, nil, false
    local function cli_ready()
      if ready then return true end
      if h.pid == 0 then return false end  -- waiting for admission
      local now, cpu = core._time(), h:cpu_time()
      if cpu == nil then ready = true  -- it ended: nothing to wait for
      elseif cpu ~= quiet_cpu then quiet_since, quiet_cpu = now, cpu
      elseif now - quiet_since >= M.idle_for then ready = true end
      return ready
    end
    if gate then
      local looked = false
      while true do
        -- a run whose CLI is not started leaves the turn to one of this process's that is;
        -- and while a rate limit paces the gate, a CLI that is still starting takes no turn
        -- (its request would come later than the others', and then too close to the next).
        -- Nor while other runs hold places, paced or not (a run then starts its CLI ahead
        -- first): should one of them meet a rate limit, the CLIs that are starting wait for
        -- the pace it sets, rather than all send their prompts as their starts end and be
        -- refused together. A run alone takes its turn at once (a first look tells which).
        local warming = h and (gate_paced or gate_busy or not looked) and not cli_ready()
        local peek = input ~= nil and ((not h and (prestarted > 0 or gate_busy)) or warming)
        local granted, wait, known, paced, others = core._gate_acquire(mark, max_agents, stagger, backoff, peek)
        gate_paced, gate_busy = paced, others > 0
        if granted and not peek then break end
        local alone = not looked and granted and not paced and others == 0
        looked = true
        if not alone then
          -- a CLI still starting looks again soon, and just before its turn
          if warming then wait = wait > 0.1 and math.min(wait - 0.06, 0.5) or 0.02 end
          -- its turn is near and known: the CLI starts now and waits for its prompt, ready
          if not ((granted or (known and wait <= M.prestart_within)) and start_ahead()) then
            -- one without a CLI waits for room to start one: a CLI started ahead takes its
            -- turn, or the CPUs' half second goes by
            qw.sleep(math.max(h and 0.01 or 0.05, math.min(wait, 0.5)))
          end
        end
      end
      holding = true
    end
    -- whether its CLI waited for its prompt at its turn (else its start is in the time to answer)
    local warm = early and cli_ready()
    last_turn = core._time()
    if early then
      early, prestarted, ahead = false, prestarted - 1, core._time() - spawned
      if opts.timeout then h:set_timeout(opts.timeout) end  -- counted from its turn
    elseif not h then
      start(opts.timeout)
    end
    if input then
      h:write(input)
      h:close_input()
    end
    -- the output as it comes: the gate learns that the run got through at its first answer
    -- from the model, not at its end (a probe of a long run would keep it shut meanwhile);
    -- and the store learns the session as soon as the CLI names it, so that a kill of qw
    -- does not lose it (session = "resume" continues it)
    local want_admitted = holding
    local want_session = opts.task ~= nil or opts.workflow ~= nil or opts.session == "resume"
    if backend.watch and (want_admitted or want_session) then
      local partial = ""
      while want_admitted or want_session do
        local chunk = h:read()
        if not chunk then break end
        local text, rest = partial .. chunk, 1
        for line, after in text:gmatch("([^\n]*)\n()") do
          rest = after
          local news = backend.watch(line)
          if news and news.admitted and want_admitted then
            want_admitted = false
            admitted = true
            core._gate_admitted(mark, max_agents, stagger, backoff, warm)
          end
          if news and news.session_id and want_session then
            want_session = false
            core._agent_session(mark, opts.workflow, opts.task, opts.agent, news.session_id, started)
          end
        end
        partial = text:sub(rest)  -- the line not yet ended
      end
    end
    local r = h:wait()
    r.started_ahead = ahead
    -- what the run left (processes that got away from the CLI, its TMPDIR) goes on a thread
    -- of its own while the ledger is written
    cleanup = core._clean_up(MARK, mark, tmp, r.pid, tasks_before)
    local fields = backend.parse(r, opts)
    local exec_ok, exec_error = r.ok, r.error
    for k, v in pairs(fields) do r[k] = v end
    if fields.ok == nil then r.ok = exec_ok end
    if r.timed_out then
      r.ok = false
      r.error = exec_error
    end
    -- the ledger: every run, with its own cost (the CLI's is cumulative over a resumed session)
    r.session_cost_usd = r.cost_usd
    r.cost_usd = core._agent_record{
      run = mark, started_at = started, finished_at = core._time(), agent = opts.agent, model = r.model or opts.model or (agent and agent.model),
      workflow = opts.workflow, task = opts.task,
      session = r.session_id, ok = r.ok and true or false, session_cost_usd = r.session_cost_usd,
      input_tokens = r.input_tokens, output_tokens = r.output_tokens, cache_read_tokens = r.cache_read_tokens,
      cache_creation_tokens = r.cache_creation_tokens, duration = r.duration, turns = r.turns, max_rss = r.max_rss,
      terminal_reason = r.terminal_reason, error = r.error and tostring(r.error) or nil,
    }
    spent_here = spent_here + (r.cost_usd or 0)
    if holding then
      r.rate_limited = rate_limited(r) or nil
      if r.ok and not admitted then core._gate_admitted(mark, max_agents, stagger, backoff, false) end
      core._gate_release(mark, r.rate_limited or false, nil, backoff, max_agents)
      holding = false
    end
    return r
  end
  -- a run that hit a rate limit waits for the gate and goes again, without counting as a failure
  local single = once
  once = function()
    local r = single()
    local tries = 0
    while r.rate_limited and tries < M.max_rate_limit_retries do
      tries = tries + 1
      qw.log.debug(("agent %s: rate limited, back in the queue (%d)"):format(tostring(opts.agent or "-"), tries))
      r = single()
    end
    r.rate_limit_retries = tries
    return r
  end
  -- session = "resume": the conversation of this task's (or agent's) last run goes on
  if opts.session == "resume" then
    local id = core._last_session(opts.workflow, opts.task, opts.agent)
    local plain = once
    once = function()
      if not id then return plain() end
      -- a CLI that a kill -9 of an earlier qw left running may still hold the session
      core._kill_marked(MARK, "none")
      local copy = {}
      for k, v in pairs(capped) do copy[k] = v end
      copy.session = id
      argv, env, input = backend.command(copy, agent)
      local r = plain()
      if not r.ok and tostring(r.error):find("No conversation found", 1, true) then
        qw.log.warn(("agent %s: session %s is gone; starting a new one"):format(tostring(opts.agent or "-"), id))
        copy.session = "new"
        argv, env, input = backend.command(copy, agent)
        r = plain()
        r.resumed_from = nil
      else
        r.resumed_from = id
      end
      return r
    end
  end
  -- the retry policy sees the judged result (ok from the result event), not the exit code
  if opts.retry ~= nil then return qw.retry.run(opts.retry, once) end
  return once()
end

return M
