--- The suggestion queue and its consumer (`qw consume`).
---
--- A suggestion is an argv, never a shell line: `{ "/spec-design", "demo" }` (a slash
--- command, run as an agent run through the CLI) or `{ "qw", "spec", "run", "demo", "--from",
--- "implementation" }` (a qw subcommand, run as a process). It is queued once while the same
--- argv is pending or running; a consumer claims it in a transaction with a lease, so that
--- two consumers never run it twice, and a consumer killed with `kill -9` gives it back when
--- its lease ends (at once when its process is gone). What the allow-list does not cover,
--- or an argument that fails validation, is refused and recorded, never run. A failing
--- suggestion is retried with exponential backoff and jitter, then parked as failed.
local core = ...
local M = {}

-- Policy (change in .qw/policy.lua): attempts before a failing suggestion is parked, the
-- first backoff and its cap in seconds, the lease a consumer holds a claim for, and how
-- many suggestions one consumer runs at once.
M.max_attempts = 3
M.backoff = 2
M.max_backoff = 300
M.lease = 60
M.parallel = 2
-- Options of the agent runs of slash commands (the CLI's headless runs).
M.agent_options = { permission_mode = "acceptEdits" }
-- The file older tools write their next command to; `qw consume` reads it too.
M.FILE = ".claude/next_command.txt"

local function fail(fmt, ...) error(fmt:format(...), 3) end

local SPEC_NAME = "^[%w][%w_.%-]*$"
M.MAX_ARG, M.MAX_ARGS, M.MAX_TOTAL = 256, 24, 2048

---Whether an argv is well-formed: strings without control characters or shell syntax, no
---`..` path parts, within the size limits. Returns true, or false and the reason.
function M.validate(argv)
  if type(argv) ~= "table" or #argv == 0 then return false, "a suggestion is a non-empty list of words" end
  if #argv > M.MAX_ARGS then return false, ("%d words (at most %d)"):format(#argv, M.MAX_ARGS) end
  local total = 0
  for i, a in ipairs(argv) do
    if type(a) ~= "string" then return false, ("word %d is a %s, not a string"):format(i, type(a)) end
    total = total + #a
    if #a == 0 then return false, ("word %d is empty"):format(i) end
    if #a > M.MAX_ARG then return false, ("word %d is %d bytes long (at most %d)"):format(i, #a, M.MAX_ARG) end
    if a:find("[%c\127]") then return false, ("word %d has a control character (a newline, a tab, an escape...)"):format(i) end
    local meta = a:match("[;&|`$<>\\\"'*?{}%(%)]")
    if meta then return false, ("word %d has the shell character '%s' (suggestions never go through a shell, and take none)"):format(i, meta) end
    for part in a:gmatch("[^/]+") do
      if part == ".." then return false, ("word %d has a '..' path part"):format(i) end
    end
  end
  if total > M.MAX_TOTAL then return false, ("%d bytes in all (at most %d)"):format(total, M.MAX_TOTAL) end
  return true
end

-- The project's slash commands: the names of .claude/commands/*.md.
local function project_commands()
  local names = {}
  for _, f in ipairs(core._agent_files(".claude/commands")) do
    local n = f.path:match("([^/]+)%.md$")
    if n then names[n] = true end
  end
  return names
end

-- qw subcommands a suggestion may run, and what each takes.
M.QW_SPEC_ACTIONS = { run = true, status = true, approve = true, lint = true, plan = true, tasks = true, new = true, list = true }
M.QW_SPEC_OPTIONS = { ["--from"] = true, ["--until"] = true, ["--approve"] = true }

local realpath = core._realpath

---The allow-list (policy: replace `qw.suggestions.allowed` in .qw/policy.lua): the project's
---`.claude/commands`, `qw spec ...` of a spec name, and `qw run` of a script under the
---project. Returns true, or false and the reason.
function M.allowed(argv)
  local head = argv[1]
  local slash = head:match("^/([%w][%w_.:%-]*)$")
  if slash then
    if not project_commands()[slash] then
      return false, ("/%s is not one of the project's commands (.claude/commands)"):format(slash)
    end
    if slash:match("^spec%-") and argv[2] and not argv[2]:match(SPEC_NAME) then
      return false, ("'%s' is not a spec name (letters, digits, '-', '_', '.')"):format(argv[2])
    end
    return true
  end
  if head ~= "qw" then return false, ("'%s' is neither a slash command nor qw"):format(head) end
  local sub = argv[2]
  if sub == "spec" then
    if not M.QW_SPEC_ACTIONS[argv[3] or ""] then return false, ("qw spec %s is not allowed"):format(tostring(argv[3])) end
    if argv[4] and not argv[4]:match(SPEC_NAME) then return false, ("'%s' is not a spec name"):format(argv[4]) end
    local i = 5
    while argv[i] do
      local a = argv[i]
      if a:match("^%-") then
        local name = a:match("^(%-%-[%w-]+)")
        if not M.QW_SPEC_OPTIONS[name] then return false, ("the option %s is not allowed"):format(a) end
        if not a:find("=", 1, true) then i = i + 1 end
        local v = a:match("=(.*)$") or argv[i]
        if not v or not v:match("^[%w_.%-]+$") then return false, ("the option %s has no plain value"):format(name) end
      elseif argv[3] ~= "new" and argv[3] ~= "approve" then
        return false, ("unexpected word '%s'"):format(a)
      end
      i = i + 1
    end
    return true
  elseif sub == "run" then
    local file = argv[3]
    if not file or not file:match("%.lua$") then return false, "qw run needs a .lua script" end
    local real, root = realpath(file), realpath(".")
    if not real then return false, ("the script %s does not exist"):format(file) end
    if real:sub(1, #root + 1) ~= root .. "/" then return false, ("the script %s is outside the project"):format(file) end
    return true
  end
  return false, ("qw %s is not allowed (qw spec and qw run are)"):format(tostring(sub))
end

---Queues a suggestion. Returns its id and whether it is new (false: the same argv is
---pending or running already). An argv that fails validation is recorded as refused.
---@param argv table the words: { "/spec-design", "demo" } or { "qw", "spec", ... }
---@param opts table? { source, spec }
function M.add(argv, opts)
  opts = opts or {}
  local ok, why = M.validate(argv)
  local words = {}
  if type(argv) == "table" then for i, a in ipairs(argv) do words[i] = tostring(a) end end
  if not ok then
    local id = core._suggest(qw.json.encode(words), opts.source, opts.spec, "refused", why)
    return id, false, why
  end
  return core._suggest(qw.json.encode(words), opts.source, opts.spec)
end

local function decode(rec)
  local ok, argv = pcall(qw.json.decode, rec.argv_json)
  rec.argv = ok and type(argv) == "table" and argv or {}
  rec.command = table.concat(rec.argv, " ")
  rec.argv_json = nil
  return rec
end

---The queue, oldest first: { { id, argv, command, state, attempts, source, spec, error, ... } }.
---@param opts table? { states = { "pending", ... }, limit }
function M.list(opts)
  opts = opts or {}
  local out = core._suggestions(opts.states or {}, opts.limit or 1000)
  for _, r in ipairs(out) do decode(r) end
  return out
end

-- A line of the file whose command was queued this many seconds before is that suggestion,
-- not a new one (the hooks' phase policy writes the file as it queues).
M.FILE_SAME_WITHIN = 600

---Takes the lines of `.claude/next_command.txt` into the queue (each line split at spaces:
---no quoting, no shell) and removes the file. Returns how many lines.
function M.import_file(path)
  path = path or M.FILE
  local taken = path .. ".qw-taken-" .. core._pid()
  if not os.rename(path, taken) then return 0 end
  local recent = {}
  local now = core._time()
  for _, s in ipairs(M.list{ limit = 200 }) do
    if now - s.created_at < M.FILE_SAME_WITHIN then recent[s.command] = true end
  end
  local n = 0
  local f = io.open(taken, "rb")
  if f then
    local text = f:read("a") or ""
    f:close()
    for line in text:gmatch("[^\n]+") do
      line = line:gsub("\r$", "")
      if line:match("%S") then
        local words = {}
        for w in line:gmatch("%S+") do words[#words + 1] = w end
        -- a control character inside a line is kept, for validation to refuse
        if not recent[table.concat(words, " ")] then
          M.add(words, { source = path })
          n = n + 1
        end
      end
    end
  end
  os.remove(taken)
  return n
end

-- The environment variable that marks every process of a suggestion's run, so that the
-- consumer that takes it again after a `kill -9` of the first can end what that one left.
local MARK = "QW_SUGGESTION"

-- Runs one claimed suggestion; returns ok, error.
function M.execute(s)
  local argv = s.argv
  local env = { [MARK] = tostring(s.id) }
  if argv[1]:sub(1, 1) == "/" then
    local opts = {}
    for k, v in pairs(M.agent_options) do opts[k] = v end
    opts.prompt = table.concat(argv, " ")
    opts.workflow = "suggestions"
    opts.task = "#" .. s.id .. " " .. argv[1]
    opts.env = env
    local r = qw.agent.run(opts)
    if not r.ok then return false, tostring(r.error) end
    local text = tostring(r.text or "")
    if text:find("STATUS: blocked", 1, true) then return false, text:match("STATUS: blocked:?%s*([^\n]*)") or "blocked" end
    return true
  end
  local cmd = { core._exe() }
  for i = 2, #argv do cmd[#cmd + 1] = argv[i] end
  cmd.name = "suggestion #" .. s.id
  cmd.env = env
  local r = qw.exec(cmd)
  if r.ok then return true end
  local tail = (r.stderr or ""):gsub("%s+$", ""):match("([^\n]*)$")
  return false, (r.error or ("exit " .. tostring(r.code))) .. (tail ~= "" and (": " .. tail) or "")
end

-- The backoff before attempt n + 1: exponential, with equal jitter.
function M.delay(attempts)
  local d = math.min(M.max_backoff, M.backoff * 2 ^ math.max(0, attempts - 1))
  return d / 2 + math.random() * d / 2
end

---Runs queued suggestions. `opts.once`: until none is due; `opts.continuous`: until
---interrupted, waiting for new ones without polling; `opts.dry_run`: say what would run
---and run nothing. Returns { ran = { {id, command, ok, error} }, refused = {...} }.
function M.consume(opts)
  opts = opts or {}
  local report = { ran = {}, refused = {}, dry_run = opts.dry_run or nil }
  M.import_file()
  pcall(qw.hooks.import_pending)
  if opts.dry_run then
    for _, s in ipairs(M.list{ states = { "pending" } }) do
      local ok, why = M.validate(s.argv)
      if ok then ok, why = M.allowed(s.argv) end
      local entry = { id = s.id, command = s.command, would = ok and "run" or "refuse", reason = why }
      report.ran[#report.ran + 1] = entry
    end
    return report
  end
  local consumer = ("%d-%.0f"):format(core._pid(), core._time() * 1000)
  local held = {}
  local release <close> = setmetatable({}, { __close = function()
    -- interrupted: what this consumer holds goes back to the queue for another
    for id in pairs(held) do pcall(core._suggest_finish, id, consumer, "pending", "the consumer stopped", 0) end
  end })
  local store_dir = (core._state_path():match("^(.*)/[^/]+$")) or "."
  local watch = { store_dir, (M.FILE:match("^(.*)/[^/]+$")) or "." }
  local active, finished = 0, false
  local function claim_one()
    M.import_file()
    local s = core._suggest_claim(consumer, M.lease)
    if not s then return nil end
    decode(s)
    held[s.id] = true
    return s
  end
  local function handle(s)
    local ok, why = M.validate(s.argv)
    if ok then ok, why = M.allowed(s.argv) end
    if not ok then
      core._suggest_finish(s.id, consumer, "refused", why, 0)
      held[s.id] = nil
      report.refused[#report.refused + 1] = { id = s.id, command = s.command, reason = why }
      qw.log.warn(("qw consume: refused #%d %s: %s"):format(s.id, s.command, why))
      return
    end
    -- taken again from a consumer that died: what it left running goes first
    if s.attempts > 1 then core._kill_marked(MARK, tostring(s.id)) end
    qw.log.info(("qw consume: #%d %s"):format(s.id, s.command))
    local okrun, ran, err = pcall(M.execute, s)
    if not okrun then ran, err = false, tostring(ran) end
    if ran then
      core._suggest_finish(s.id, consumer, "done", nil, 0)
    elseif s.attempts < M.max_attempts then
      core._suggest_finish(s.id, consumer, "pending", err, core._time() + M.delay(s.attempts))
    else
      core._suggest_finish(s.id, consumer, "failed", err, 0)
      qw.log.warn(("qw consume: #%d %s failed %d times; parked: %s"):format(s.id, s.command, s.attempts, tostring(err)))
    end
    held[s.id] = nil
    report.ran[#report.ran + 1] = { id = s.id, command = s.command, ok = ran, error = (not ran) and err or nil, attempt = s.attempts }
  end
  local function worker()
    while true do
      local s = claim_one()
      if s then
        active = active + 1
        handle(s)
        active = active - 1
      elseif opts.continuous or active > 0 then
        if finished then return end
        -- nothing due: wait for the store or the file to change, or for the next backoff or lease to end
        local due = core._suggest_due()
        local wait = 1
        if due then wait = math.max(0.01, math.min(wait, due - core._time())) end
        core._wait_change(watch, wait)
      else
        return
      end
    end
  end
  local function renewer()
    while not finished do
      local ids = {}
      for id in pairs(held) do ids[#ids + 1] = id end
      if #ids > 0 then pcall(core._suggest_renew, ids, consumer, M.lease) end
      local waited = 0
      while not finished and waited < M.lease / 3 do qw.sleep(0.2); waited = waited + 0.2 end
    end
  end
  local workers = {}
  for i = 1, math.max(1, M.parallel) do workers[i] = worker end
  qw.parallel(function() qw.parallel(table.unpack(workers)); finished = true end, renewer)
  return report
end

---`qw consume [--continuous] [--once] [--dry-run] [--json]`; returns the exit code.
function M.report(o)
  if o.continuous and o.once then
    io.stderr:write("qw consume: --continuous and --once do not go together\n")
    return 2
  end
  local r = M.consume{ continuous = o.continuous, once = o.once or not o.continuous, dry_run = o.dry_run }
  if o.json then
    -- (an empty list would encode as {}: it is left out, and the counts say it)
    r.counts = { ran = #r.ran, refused = #r.refused }
    if #r.ran == 0 then r.ran = nil end
    if #r.refused == 0 then r.refused = nil end
    io.write(qw.json.encode(r), "\n")
    r.ran, r.refused = r.ran or {}, r.refused or {}
  else
    for _, e in ipairs(r.ran) do
      if r.dry_run then
        print(("#%d  would %s  %s%s"):format(e.id, e.would, e.command, e.reason and ("  (" .. e.reason .. ")") or ""))
      else
        print(("#%d  %s  %s%s"):format(e.id, e.ok and "done" or "failed", e.command, e.error and ("  (" .. e.error .. ")") or ""))
      end
    end
    for _, e in ipairs(r.refused) do print(("#%d  refused  %s  (%s)"):format(e.id, e.command, e.reason)) end
    if #r.ran == 0 and #r.refused == 0 then print("nothing to run") end
  end
  for _, e in ipairs(r.ran) do if e.ok == false then return 1 end end
  return 0
end

return M
