--- Claude Code hooks: `qw hook` records each event and answers with the project's policy.
---
--- Policy: `qw.hooks.on(event, function(ev) ... end, opts)` in `.qw/hooks.lua` or
--- `.qw/policy.lua`. `ev` is the hook payload; a handler returns nil (no opinion) or a
--- table: `{ deny = reason }`, `{ allow = true }`, `{ ask = reason }`, `{ block = reason }`
--- (Stop, SubagentStop, PostToolUse, UserPromptSubmit), `{ context = text }`,
--- `{ message = text }` (shown to the user), `{ stop = reason }` (ends the run); add
--- `exit = 2` to a deny or block to answer with exit code 2 and the reason on stderr.
--- `opts.fail = "closed"` makes an error in that handler a deny (or block) instead of no
--- opinion. Every handler of an event runs; a deny wins over an allow.
---
--- A hook must never break the agent by accident: malformed input, an unknown event, a
--- store that is locked or missing, an error in a policy: exit 0, one line on stderr, and
--- the event kept in `hooks-pending.jsonl` beside the store until a later hook imports it.
---
--- Shipped policies, off unless `qw.hooks.enable(NAME, opts)`: `guard_rm` (deny `rm -r`
--- outside the project), `guard_writes` (deny writes outside the project and its
--- worktrees), `permissions` (an allow-list that answers PermissionRequest in headless
--- runs), `task_context` (the task's context at SessionStart of runs qw started). On unless
--- disabled: `phases` (notice that a spec's document is complete and queue the next step).
local core = ...
local M = { handlers = {}, enabled = {} }

-- The events the CLI fires (claude-code-cli.md, section 2); others are recorded as unknown.
M.EVENTS = {}
for name in ([[PreToolUse PostToolUse PostToolUseFailure PostToolBatch Notification UserPromptSubmit
  UserPromptExpansion SessionStart SessionEnd Stop StopFailure SubagentStart SubagentStop PreCompact PostCompact
  PreModelSwitch PostModelSwitch PermissionRequest PermissionDenied Setup TeammateIdle TaskCreated TaskCompleted
  Elicitation ElicitationResult ConfigChange WorktreeCreate WorktreeRemove InstructionsLoaded CwdChanged FileChanged
  DirectoryAdded MessageDisplay PreSkillShellCommand]]):gmatch("%S+") do M.EVENTS[name] = true end

local function fail(fmt, ...) error(fmt:format(...), 3) end

---Registers a handler for `event` ("*": every event).
---@param event string
---@param fn function(ev) -> nil | { deny, allow, ask, block, context, message, stop, exit }
---@param opts table|nil { name, fail = "open"|"closed" }
function M.on(event, fn, opts)
  if type(event) ~= "string" or (event ~= "*" and not M.EVENTS[event]) then
    fail("qw.hooks.on: no hook event '%s' (one of the CLI's: PreToolUse, PostToolUse, Stop, SessionEnd, ...)", tostring(event))
  end
  if type(fn) ~= "function" then fail("qw.hooks.on: the handler must be a function (got %s)", type(fn)) end
  opts = opts or {}
  if opts.fail ~= nil and opts.fail ~= "open" and opts.fail ~= "closed" then
    fail("qw.hooks.on: fail is 'open' or 'closed' (got '%s')", tostring(opts.fail))
  end
  local where = core._where and core._where() or ""
  M.handlers[#M.handlers + 1] = { event = event, fn = fn, name = opts.name or where:gsub(":%s*$", ""), named = opts.name ~= nil,
                                  fail = opts.fail or "open" }
end

---------------------------------------------------------------------------------------------
-- Running the handlers, and the CLI's protocol

---Runs the handlers of `ev.hook_event_name`; returns the merged verdict and the errors
---({ "handler: message" }).
function M.dispatch(ev)
  local out, errors = {}, {}
  local contexts, messages = {}, {}
  for _, h in ipairs(M.handlers) do
    if h.event == "*" or h.event == ev.hook_event_name then
      local ok, r = pcall(h.fn, ev)
      if not ok then
        errors[#errors + 1] = h.named and ("%s: %s"):format(h.name, tostring(r)) or tostring(r)
        if h.fail == "closed" then
          r = { deny = "the hook policy failed (" .. tostring(r) .. ")", block = "the hook policy failed (" .. tostring(r) .. ")" }
        else
          r = nil
        end
      end
      if type(r) == "table" then
        if r.deny and not out.deny then out.deny = tostring(r.deny == true and "denied by the project's hook policy" or r.deny); out.exit = r.exit end
        if r.block and not out.block then out.block = tostring(r.block == true and "blocked by the project's hook policy" or r.block); out.exit = out.exit or r.exit end
        if r.ask and not out.ask then out.ask = tostring(r.ask) end
        if r.allow then out.allow = true end
        if r.stop and not out.stop then out.stop = tostring(r.stop) end
        if r.context then contexts[#contexts + 1] = tostring(r.context) end
        if r.message then messages[#messages + 1] = tostring(r.message) end
      end
    end
  end
  if #contexts > 0 then out.context = table.concat(contexts, "\n\n") end
  if #messages > 0 then out.message = table.concat(messages, "\n") end
  return out, errors
end

-- Events whose `decision: block` the CLI honours, and those that take additionalContext.
local BLOCKS = { Stop = true, SubagentStop = true, PostToolUse = true, UserPromptSubmit = true, PostToolUseFailure = true }
local CONTEXT = { SessionStart = true, UserPromptSubmit = true, PreToolUse = true, PostToolUse = true, PostToolUseFailure = true }

---The answer to the CLI for a verdict: stdout text, stderr text, exit code, and the
---outcome and reason to record.
function M.respond(event, v)
  local out, specific = {}, nil
  local outcome, reason = "ok", nil
  if event == "PreToolUse" then
    local decision = (v.deny and "deny") or (v.ask and "ask") or (v.allow and "allow") or nil
    if decision then
      reason = v.deny or v.ask
      if v.deny and v.exit == 2 then return "", v.deny .. "\n", 2, "deny", v.deny end
      specific = { hookEventName = event, permissionDecision = decision, permissionDecisionReason = reason }
      outcome = decision
    end
  elseif event == "PermissionRequest" then
    if v.deny then
      specific = { hookEventName = event, decision = { behavior = "deny", message = v.deny } }
      outcome, reason = "deny", v.deny
    elseif v.allow then
      specific = { hookEventName = event, decision = { behavior = "allow" } }
      outcome = "allow"
    end
  elseif BLOCKS[event] and (v.block or v.deny) then
    reason = v.block or v.deny
    if v.exit == 2 then return "", reason .. "\n", 2, "block", reason end
    out.decision, out.reason = "block", reason
    outcome = "block"
  end
  if v.context and CONTEXT[event] then
    specific = specific or { hookEventName = event }
    specific.additionalContext = v.context
    if outcome == "ok" then outcome = "context" end
  end
  if specific then out.hookSpecificOutput = specific end
  if v.message then
    out.systemMessage = v.message
    if outcome == "ok" then outcome = "message" end
  end
  if v.stop then
    out["continue"], out.stopReason = false, v.stop
    outcome, reason = "stop", v.stop
  end
  if next(out) == nil then return "", "", 0, outcome, reason end
  return qw.json.encode(out) .. "\n", "", 0, outcome, reason
end

---------------------------------------------------------------------------------------------
-- What is recorded of an event

local function one_line(s, n)
  s = tostring(s or ""):gsub("%s+", " ")
  if #s > (n or 200) then s = s:sub(1, (n or 200) - 3) .. "..." end
  return s
end

local function absolute(path, cwd)
  if type(path) ~= "string" or path == "" then return nil end
  if path:sub(1, 1) == "/" then return path end
  return (type(cwd) == "string" and cwd or core._cwd()) .. "/" .. path:gsub("^%./", "")
end

---The tool input in one line, and the paths it touches.
function M.summarize(ev)
  local input = type(ev.tool_input) == "table" and ev.tool_input or {}
  local tool = ev.tool_name
  local paths = {}
  for _, k in ipairs({ "file_path", "notebook_path", "path" }) do
    local p = absolute(input[k], ev.cwd)
    if p then paths[#paths + 1] = p end
  end
  local summary
  if tool == "Bash" then summary = input.command
  elseif input.file_path or input.notebook_path then summary = input.file_path or input.notebook_path
  elseif input.pattern then summary = input.pattern .. (input.path and (" in " .. input.path) or "")
  elseif tool == "Agent" or tool == "Task" then summary = tostring(input.subagent_type or "?") .. ": " .. tostring(input.description or "")
  elseif input.url then summary = input.url
  elseif input.query then summary = input.query
  elseif next(input) then summary = qw.json.encode(input) end
  return summary and one_line(summary) or nil, paths
end

-- Event fields worth keeping beyond the columns.
local DETAIL = { "source", "reason", "stop_hook_active", "error", "is_interrupt", "agent_id", "permission_mode",
                 "command_name", "command_args", "expansion_type", "trigger", "old_cwd", "new_cwd", "tool_use_id" }

function M.record_of(ev, env)
  local summary, paths = M.summarize(ev)
  local detail = {}
  for _, k in ipairs(DETAIL) do
    if ev[k] ~= nil and type(ev[k]) ~= "table" then detail[k] = type(ev[k]) == "string" and one_line(ev[k], 300) or ev[k] end
  end
  if ev.prompt then detail.prompt = one_line(ev.prompt, 300) end
  if ev.last_assistant_message then detail.last_message = one_line(ev.last_assistant_message, 300) end
  return {
    at = core._time(), event = ev.hook_event_name or "?", session = ev.session_id, run = env.run, workflow = env.workflow,
    task = env.task, agent = ev.agent_type, tool = ev.tool_name, summary = summary,
    paths = #paths > 0 and qw.json.encode(paths) or nil,
    duration_ms = type(ev.duration_ms) == "number" and ev.duration_ms or nil,
    detail = next(detail) and qw.json.encode(detail) or nil,
  }
end

---The events recorded: of a session or run when given ({ session, run, event, after, limit }).
---Events kept aside meanwhile are taken in first.
function M.events(opts)
  pcall(M.import_pending)
  return core._hook_events(opts or {})
end

-- How long a hook's record waits for another process's write lock before it is kept aside
-- (so that a busy store never slows an agent's tool calls), and how long events may wait
-- aside before a hook says so on stderr (QW_HOOK_WAIT, seconds).
M.RECORD_WAIT = 0.005
M.SAY_AFTER = tonumber(os.getenv("QW_HOOK_WAIT") or "") or 1

-- Keeps a record aside (its folder made when the store never was); true when it is kept.
local function keep_aside(rec)
  local path = M.pending_path()
  local dir = path:match("^(.*)/[^/]+$")
  if dir then core._mkdir(dir) end
  return (core._append_line(path, qw.json.encode(rec)))
end

---The records kept aside, oldest first.
function M.pending_records()
  local out = {}
  local f = io.open(M.pending_path(), "rb")
  if not f then return out end
  for line in f:lines() do
    local ok, r = pcall(qw.json.decode, line)
    if ok and type(r) == "table" then out[#out + 1] = r end
  end
  f:close()
  return out
end

-- The file that keeps events the store could not take: beside the store.
function M.pending_path()
  local store = core._state_path()
  local dir = store:match("^(.*)/[^/]+$") or "."
  return dir .. "/hooks-pending.jsonl"
end

---Moves the events kept aside into the store (waiting `wait` seconds at most for its lock);
---returns how many.
function M.import_pending(wait)
  local path = M.pending_path()
  local taken = path .. ".importing-" .. core._pid()
  if not os.rename(path, taken) then return 0 end
  local f = io.open(taken, "rb")
  local records = {}
  if f then
    for line in f:lines() do
      local ok, r = pcall(qw.json.decode, line)
      if ok and type(r) == "table" then records[#records + 1] = r end
    end
    f:close()
  end
  local ok, err = pcall(core._hook_record_many, records, wait)
  if not ok then
    -- back where it was, for the next try (appended: hooks may have started a new file)
    local back = io.open(taken, "rb")
    local text = back and back:read("a") or ""
    if back then back:close() end
    core._append_line(path, (text:gsub("\n$", "")))
    os.remove(taken)
    error(err, 0)
  end
  os.remove(taken)
  return #records
end

---------------------------------------------------------------------------------------------
-- `qw hook [EVENT]`

local loaded = false

-- The project's policy files, each under protection: a broken one is reported, not fatal.
local function load_policies()
  if loaded then return {} end
  loaded = true
  local errors = {}
  for _, f in ipairs({ ".qw/policy.lua", ".qw/hooks.lua" }) do
    local fh = io.open(f, "rb")
    if fh then
      fh:close()
      local chunk, err = loadfile(f)
      if not chunk then
        errors[#errors + 1] = err
      else
        local ok, e = pcall(chunk)
        if not ok then errors[#errors + 1] = tostring(e) end
      end
    end
  end
  return errors
end

local function handle(text, name, started)
  local env = { run = os.getenv("QW_RUN_ID"), workflow = os.getenv("QW_WORKFLOW"), task = os.getenv("QW_TASK") }
  local problems = {}
  local ok, ev = pcall(qw.json.decode, text or "")
  local parsed = ok and type(ev) == "table"
  if not parsed then
    problems[#problems + 1] = "the hook input is not a JSON object" .. (ok and "" or (" (" .. tostring(ev):gsub("^.-:%d+: ", "") .. ")"))
    ev = { hook_event_name = name or "?", raw = one_line(text, 2000) }
  end
  if name and ev.hook_event_name and name ~= ev.hook_event_name and ev.hook_event_name ~= "?" then
    problems[#problems + 1] = ("called as %s for a %s event"):format(name, ev.hook_event_name)
  end
  ev.hook_event_name = ev.hook_event_name or name or "?"
  if parsed and not M.EVENTS[ev.hook_event_name] then
    problems[#problems + 1] = ("unknown hook event '%s'"):format(tostring(ev.hook_event_name))
  end
  local verdict = {}
  if #problems == 0 then
    for _, e in ipairs(load_policies()) do problems[#problems + 1] = "policy: " .. e end
    if M.enabled.phases == nil then M.enable("phases") end
    local v, errs = M.dispatch(ev)
    verdict = v
    for _, e in ipairs(errs) do problems[#problems + 1] = "policy: " .. e end
  end
  local stdout, stderr, code, outcome, reason = M.respond(ev.hook_event_name, verdict)
  local rec = M.record_of(ev, env)
  rec.outcome = #problems > 0 and outcome == "ok" and "error" or outcome
  rec.reason = reason or (#problems > 0 and table.concat(problems, "; ") or nil)
  if ev.raw then rec.detail = qw.json.encode({ raw = ev.raw }) end
  rec.latency_ms = (core._time() - (started or rec.at)) * 1000
  local saved, why = pcall(core._hook_record, rec, M.RECORD_WAIT)
  if saved then
    -- what earlier hooks kept aside, now that the store takes events again
    local aside = io.open(M.pending_path(), "rb")
    if aside then
      aside:close()
      pcall(M.import_pending, M.RECORD_WAIT)
    end
  else
    local first = M.pending_records()[1]
    local kept = keep_aside(rec)
    why = tostring(why):gsub("^.-:%d+: ", ""):gsub("\n.*", "")
    -- a moment's contention is no news; a store that stays locked, or cannot be opened, is
    local busy = why:find("database is locked", 1, true) or why:find("SQLite error 5", 1, true)
    if not busy or (first and type(first.at) == "number" and rec.at - first.at >= M.SAY_AFTER) then
      problems[#problems + 1] = ("the state store did not take the event (%s)%s; %s"):format(why,
        busy and first and (" for %.0f s"):format(rec.at - first.at) or "",
        kept and ("kept in " .. M.pending_path()) or "and it could not be kept")
    end
  end
  if #problems > 0 then stderr = stderr .. "qw hook: " .. table.concat(problems, "; ") .. "\n" end
  return stdout, stderr, code
end

---Handles one hook call: `text` is stdin, `name` the EVENT argument (or nil), `started`
---when the process started (core._time()). Returns stdout, stderr, exit code. Never raises:
---a payload that trips qw up is kept aside as it came, and the agent goes on.
function M.main(text, name, started)
  local ok, stdout, stderr, code = pcall(handle, text, name, started)
  if ok then return stdout, stderr, code end
  local rec = { at = core._time(), event = name or "?", outcome = "error", reason = tostring(stdout),
                detail = qw.json.encode({ raw = one_line(text, 2000) }) }
  local kept = pcall(keep_aside, rec)
  return "", ("qw hook: %s; %s\n"):format(tostring(stdout):gsub("\n.*", ""),
    kept and ("the event is kept in " .. M.pending_path()) or "the event could not be kept"), 0
end

---------------------------------------------------------------------------------------------
-- The shipped policies

-- The project's root: where the CLI's hooks run (CLAUDE_PROJECT_DIR), else qw's project.
function M.project_root()
  return os.getenv("QW_PROJECT") or os.getenv("CLAUDE_PROJECT_DIR") or core._cwd()
end

local function normalize(path)
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." then parts[#parts] = nil elseif part ~= "." then parts[#parts + 1] = part end
  end
  return "/" .. table.concat(parts, "/")
end

local function inside(path, root)
  path, root = normalize(path), normalize(root)
  return path == root or path:sub(1, #root + 1) == root .. "/"
end

-- The folders writes may go to: the project and the worktrees of its repository.
local function allowed_roots()
  local roots = { M.project_root() }
  local ok, wts = pcall(function() return qw.git.worktrees{ repo = M.project_root(), all = true, quick = true } end)
  if ok and type(wts) == "table" then
    for _, w in ipairs(wts) do if w.path then roots[#roots + 1] = w.path end end
  end
  return roots
end

local function inside_any(path, roots)
  for _, r in ipairs(roots) do if inside(path, r) then return true end end
  return false
end

-- The targets of each `rm` with -r in a shell command; nil, reason when they cannot be known.
local function rm_targets(command, cwd)
  local home = os.getenv("HOME") or "/root"
  local found = {}
  for segment in (command .. ";"):gmatch("([^;&|\n]+)") do
    local words = {}
    for w in segment:gmatch("%S+") do words[#words + 1] = w end
    local i = 1
    while words[i] and (words[i] == "sudo" or words[i]:match("^%w+=")) do i = i + 1 end
    if words[i] and (words[i] == "rm" or words[i]:match("/rm$")) then
      local recursive, targets = false, {}
      for j = i + 1, #words do
        local w = words[j]
        if w:match("^%-%-recursive$") or (w:match("^%-[^%-]") and w:find("[rR]")) then recursive = true
        elseif not w:match("^%-") then targets[#targets + 1] = w end
      end
      if recursive then
        for _, t in ipairs(targets) do
          t = t:gsub("^['\"]", ""):gsub("['\"]$", "")
          if t:find("[%$`*?]") and not t:match("^%$HOME/") then return nil, ("cannot tell where '%s' points"):format(t) end
          t = t:gsub("^~/", home .. "/"):gsub("^~$", home):gsub("^%$HOME/", home .. "/")
          found[#found + 1] = absolute(t, cwd)
        end
      end
    end
  end
  return found
end

M.policies = {}

---`guard_rm`: deny `rm -r` (any spelling of the flag) of anything outside the project and its
---worktrees, and of a target that cannot be resolved (variables, globs, command substitution).
M.policies.guard_rm = function()
  M.on("PreToolUse", function(ev)
    if ev.tool_name ~= "Bash" or type(ev.tool_input) ~= "table" then return nil end
    local cmd = tostring(ev.tool_input.command or "")
    if not cmd:find("rm") then return nil end
    local targets, why = rm_targets(cmd, ev.cwd)
    if not targets then return { deny = "qw policy guard_rm: " .. why .. "; rm -r only inside the project" } end
    local roots = allowed_roots()
    for _, t in ipairs(targets) do
      if not inside_any(t, roots) or normalize(t) == normalize(M.project_root()) then
        return { deny = ("qw policy guard_rm: rm -r of %s, which is outside the project %s (or the project itself)"):format(t, M.project_root()) }
      end
    end
  end, { name = "guard_rm" })
end

local WRITERS = { Write = true, Edit = true, MultiEdit = true, NotebookEdit = true }

---`guard_writes`: deny Write/Edit/MultiEdit/NotebookEdit of a file outside the project and
---its worktrees.
M.policies.guard_writes = function()
  M.on("PreToolUse", function(ev)
    if not WRITERS[ev.tool_name] or type(ev.tool_input) ~= "table" then return nil end
    local p = absolute(ev.tool_input.file_path or ev.tool_input.notebook_path, ev.cwd)
    if p and not inside_any(p, allowed_roots()) then
      return { deny = ("qw policy guard_writes: %s is outside the project %s and its worktrees"):format(p, M.project_root()) }
    end
  end, { name = "guard_writes" })
end

-- Whether a permission rule ("Read", "Bash(git status:*)", "Write(.claude/specs/**)") covers
-- a tool call; paths in rules are relative to the project.
local function glob_match(path, glob)
  local pat = "^" .. glob:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*%*/", "\1"):gsub("%*%*", "\2"):gsub("%*", "[^/]*")
                        :gsub("\1", ".-/?"):gsub("\2", ".*"):gsub("%?", "[^/]") .. "$"
  return path:match(pat) ~= nil
end

function M.rule_covers(rule, ev)
  local tool, arg = rule:match("^([%w_]+)%((.*)%)$")
  tool = tool or rule
  if tool ~= ev.tool_name then return false end
  if not arg or arg == "" or arg == "*" then return true end
  local input = type(ev.tool_input) == "table" and ev.tool_input or {}
  if tool == "Bash" then
    local cmd = tostring(input.command or "")
    -- a compound command is covered only when each part is: `git status; rm -rf x` is not
    if cmd:find("[;&|`\n]") or cmd:find("%$%(") then return false end
    local prefix = arg:match("^(.-):?%*$")
    if prefix then return cmd == prefix or cmd:sub(1, #prefix + 1) == prefix .. " " end
    return cmd == arg
  end
  local p = absolute(input.file_path or input.notebook_path or input.path, ev.cwd)
  if not p then return false end
  local root = normalize(M.project_root())
  p = normalize(p)
  if not inside(p, root) then return false end
  return glob_match(p:sub(#root + 2), arg)
end

---`permissions`: answers PermissionRequest from an allow-list and a deny-list of rules
---(`opts.allow`, `opts.deny`); a call neither covers gets no answer (the CLI's own rule).
---The default allow-list: reading anywhere in the project, writing the spec and steering
---documents, and `qw` commands.
M.policies.permissions = function(opts)
  opts = opts or {}
  local allow = opts.allow or { "Read", "Glob", "Grep", "Write(.claude/specs/**)", "Edit(.claude/specs/**)",
                                "Write(.claude/steering/**)", "Edit(.claude/steering/**)", "Write(.qw/drafts/**)", "Bash(qw:*)" }
  local deny = opts.deny or {}
  M.on("PermissionRequest", function(ev)
    for _, r in ipairs(deny) do
      if M.rule_covers(r, ev) then return { deny = ("qw policy permissions: %s is denied (%s)"):format(ev.tool_name, r) } end
    end
    for _, r in ipairs(allow) do
      if M.rule_covers(r, ev) then return { allow = true } end
    end
  end, { name = "permissions" })
end

---`task_context`: at SessionStart of a run qw started for a spec task (QW_SPEC, QW_SPEC_TASK)
---the task's context from `qw.spec.context`; for another qw run, its workflow and task.
M.policies.task_context = function()
  M.on("SessionStart", function(ev)
    if not os.getenv("QW_RUN_ID") or ev.source == "compact" then return nil end
    local spec, task = os.getenv("QW_SPEC"), os.getenv("QW_SPEC_TASK")
    if spec and task then
      local ok, text = pcall(qw.spec.context, spec, task)
      if ok and type(text) == "string" then return { context = text } end
    end
    local wf, t = os.getenv("QW_WORKFLOW"), os.getenv("QW_TASK")
    if wf or t then
      return { context = ("This run is task %s of the qw workflow %s."):format(tostring(t or "-"), tostring(wf or "-")) }
    end
  end, { name = "task_context" })
end

---------------------------------------------------------------------------------------------
-- Spec phases: noticing that a document is complete, and queueing the next step

-- "ask": a complete document waits for `qw spec approve`; "auto": the policy approves it.
M.approvals = "ask"

-- What follows a complete (and approved) document.
M.NEXT = {
  requirements = function(name) return { "/spec-design", name } end,
  design = function(name) return { "/spec-tasks", name } end,
  tasks = function(name) return { "qw", "spec", "run", name, "--from", "implementation" } end,
}

-- The document each slash command of the catalogue writes.
M.COMMAND_DOCS = { ["spec-create"] = "requirements", ["spec-requirements"] = "requirements",
                   ["spec-design"] = "design", ["spec-tasks"] = "tasks" }

local function strip_comments(text) return (text:gsub("<!%-%-.-%-%->", "")) end

---Whether a spec's document is complete: written, no template placeholder left (`<name>`),
---and what its phase needs (requirements with SHALL criteria, a design with an Overview, a
---tasks.md with tasks that lint clean). Returns true, or false and why.
function M.document_complete(name, doc)
  local spec = qw.spec.find(name)
  if not spec then return false, "no spec " .. tostring(name) end
  local text = qw.spec.read_file(spec[doc])
  if not text then return false, spec[doc] .. " does not exist" end
  local body = strip_comments(text)
  local placeholder = body:match("<[%a][%w %-]*>")
  if placeholder then return false, ("%s still has the placeholder %s"):format(spec[doc], placeholder) end
  if doc == "requirements" then
    if not body:find("SHALL", 1, true) then return false, spec[doc] .. " has no acceptance criteria (SHALL)" end
  elseif doc == "design" then
    local overview = body:match("\n##%s+Overview%s*\n(.-)\n#") or body:match("\n##%s+Overview%s*\n(.*)$")
    if not overview or not overview:match("%S") then return false, spec[doc] .. " has no ## Overview" end
  elseif doc == "tasks" then
    local parsed = qw.spec.parse(name)
    local n = 0
    for _, t in ipairs(parsed.tasks) do if t.id then n = n + 1 end end
    if n == 0 then return false, spec[doc] .. " has no tasks" end
    local problems = qw.spec.lint(name)
    if #problems > 0 then return false, problems[1] end
  end
  return true
end

---Queues what follows `doc` of spec `name`, once its document is approved (`M.approvals` =
---"auto" approves it here). Returns the suggestion's id, or nil and why not.
function M.advance(name, doc, source)
  local next_step = M.NEXT[doc]
  if not next_step then return nil, "nothing follows " .. tostring(doc) end
  local state = qw.spec.approval(name, doc).state
  if state ~= "approved" then
    if M.approvals ~= "auto" then return nil, ("waiting for qw spec approve %s %s"):format(name, doc) end
    qw.spec.approve(name, doc, { by = "auto" })
    core._spec_phase(name, doc, "approved", source)
  end
  local argv = next_step(name)
  local id, added = qw.suggestions.add(argv, { source = source, spec = name })
  -- for tools that read the next command from the file (qw consume knows it is queued)
  if added and M.write_next_command then
    local f = io.open(qw.suggestions.FILE .. ".qw-new", "wb")
    if f then
      f:write(table.concat(argv, " "), "\n")
      f:close()
      os.rename(qw.suggestions.FILE .. ".qw-new", qw.suggestions.FILE)
    end
  end
  return id, added
end

-- Whether advancing also writes the next command to .claude/next_command.txt.
M.write_next_command = true

---Notices a complete document once per version of it: records the phase change and
---advances. Returns the suggestion's id, or nil and why not.
function M.notice(name, doc, source)
  local ok, why = M.document_complete(name, doc)
  if not ok then return nil, why end
  local spec = qw.spec.find(name)
  local text = qw.spec.read_file(spec[doc]) or ""
  local key = ("spec:%s:%s:noticed"):format(name, doc)
  local hash = tostring(core._hash(doc == "tasks" and qw.spec.blank_states(text) or text))
  if qw.state.get(key) == hash then return nil, "noticed already" end
  qw.state.set(key, hash)
  core._spec_phase(name, doc, "complete", source)
  return M.advance(name, doc, source)
end

-- The spec and document a session works on: its qw workflow task, or the slash command it
-- was started with.
local function session_phase(ev)
  local wf, task = os.getenv("QW_WORKFLOW"), os.getenv("QW_TASK")
  if wf and wf:match("^spec:") and M.COMMAND_DOCS["spec-" .. tostring(task)] then return wf:sub(6), task, true end
  if not ev.session_id then return nil end
  local list = core._hook_events{ session = ev.session_id, event = "UserPromptExpansion", limit = 1 }
  local e = list[#list]
  if not e then  -- kept aside while the store was busy?
    for _, r in ipairs(M.pending_records()) do
      if r.session == ev.session_id and r.event == "UserPromptExpansion" then e = r end
    end
  end
  if not e or not e.detail then return nil end
  local ok, d = pcall(qw.json.decode, e.detail)
  if not ok or type(d) ~= "table" then return nil end
  local doc = M.COMMAND_DOCS[tostring(d.command_name)]
  local name = tostring(d.command_args or ""):match("^%s*([%w][%w_.%-]*)")
  if doc and name then return name, doc end
end

---`phases` (on unless `qw.hooks.disable("phases")`): a Write or Edit of
---`.claude/specs/NAME/DOC.md`, and the end (Stop, SubagentStop, SessionEnd) of a session
---that works on a spec's document, notice a complete document. Runs of `qw spec run` are
---only recorded: that workflow goes on by itself.
M.policies.phases = function()
  local function act(name, doc, source)
    local wf = os.getenv("QW_WORKFLOW")
    if wf and wf:match("^spec:") then
      if M.document_complete(name, doc) then core._spec_phase(name, doc, "complete", source) end
      return
    end
    M.notice(name, doc, source)
  end
  M.on("PostToolUse", function(ev)
    if not WRITERS[ev.tool_name] or type(ev.tool_input) ~= "table" then return nil end
    local p = tostring(ev.tool_input.file_path or "")
    local name, doc = p:match("%.claude/specs/([%w][%w_.%-]*)/(%a+)%.md$")
    if not (name and M.NEXT[doc]) then return nil end
    -- a session that works on this document goes on when it ends; an edit elsewhere (a
    -- person in an interactive session) goes on now
    local sname, sdoc = session_phase(ev)
    if sname == name and sdoc == doc then
      if M.document_complete(name, doc) then core._spec_phase(name, doc, "complete", "hook:PostToolUse") end
      return nil
    end
    act(name, doc, "hook:PostToolUse")
  end, { name = "phases" })
  M.on("UserPromptExpansion", function(ev)
    local doc = M.COMMAND_DOCS[tostring(ev.command_name)]
    local name = tostring(ev.command_args or ""):match("^%s*([%w][%w_.%-]*)")
    if doc and name then core._spec_phase(name, doc, "started", "hook:UserPromptExpansion") end
  end, { name = "phases" })
  for _, event in ipairs({ "Stop", "SubagentStop", "SessionEnd" }) do
    M.on(event, function(ev)
      -- the CLI's internal compaction agents end with an empty agent_type: not a phase's work
      if event == "SubagentStop" and (ev.agent_type == nil or ev.agent_type == "") then return nil end
      local name, doc = session_phase(ev)
      if name and qw.spec.find(name) then act(name, doc, "hook:" .. event) end
    end, { name = "phases" })
  end
end

---Turns a shipped policy on: `qw.hooks.enable("guard_rm")`, `qw.hooks.enable("permissions",
---{ allow = {...} })`. Enabling one twice has no further effect.
function M.enable(name, opts)
  local p = M.policies[name]
  if not p then
    local names = {}
    for k in pairs(M.policies) do names[#names + 1] = k end
    table.sort(names)
    fail("qw.hooks.enable: no policy '%s' (%s)", tostring(name), table.concat(names, ", "))
  end
  if M.enabled[name] then return end
  M.enabled[name] = true
  p(opts)
end

---Turns off a policy that is on by default (`phases`); call it before the first event.
function M.disable(name)
  M.enabled[name] = false
end

return M
