--- Agent definitions: `.claude/agents/*.md` of the project and of `~/.claude/agents/`
--- (the project's win on a name clash), read with a strict YAML parser and checked.
---
--- The real CLI drops a file with no front matter, bad YAML, no `name` or no `description`
--- without a word, and keeps unknown tool names. `qw.agents()` returns what the CLI would
--- load; `qw.agents.check()` says what is wrong, as `path:line: message`.
local core = ...
local M = {}

-- The tools of the Claude Code CLI (2.1.332) that an agent's `tools` may name; `Agent` is
-- the API's name of the subagent tool, `Task` its name in the CLI's lists. A new CLI
-- version is a change here.
M.TOOLS = {
  "Agent", "Bash", "CronCreate", "CronDelete", "CronList", "DesignSync", "Edit", "EnterWorktree", "ExitWorktree",
  "Glob", "Grep", "ListAgents", "Monitor", "NotebookEdit", "Read", "ReportFindings", "ScheduleWakeup", "SendMessage",
  "Skill", "Task", "TaskStop", "TodoWrite", "ToolSearch", "WebFetch", "WebSearch", "Workflow", "Write",
}
-- Model aliases; a full model id starts with "claude-".
M.MODELS = { "sonnet", "opus", "haiku", "fable", "inherit" }
M.PERMISSION_MODES = { "default", "acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan" }
-- Front matter keys the CLI reads.
M.KEYS = { "name", "description", "tools", "disallowedTools", "model", "color", "permissionMode", "mcpServers",
           "hooks", "skills", "memory", "effort", "maxTurns" }

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function home()
  return os.getenv("HOME")
end

---The folders read, most specific first: `{ {dir, source}, ... }`.
---@param opts table? { dir = project agents folder, user = false to leave ~/.claude/agents out }
local function folders(opts)
  opts = opts or {}
  local list = { { opts.dir or ".claude/agents", "project" } }
  if opts.user ~= false and home() then list[#list + 1] = { home() .. "/.claude/agents", "user" } end
  return list
end

local function fields_of(file)
  local by = {}
  for _, f in ipairs(file.fields) do by[f.key] = f end
  return by
end

local function list_of(field)
  if not field then return nil end
  local out = {}
  for _, item in ipairs(field.items) do out[#out + 1] = item.text end
  return out
end

-- The base name of a tool entry: "Bash(git *)" is Bash.
local function tool_name(entry)
  return entry:match("^([%w_]+)%(") or entry
end

---Reads every agent file; returns the files (parsed) in folder order.
local function read_all(opts)
  local out = {}
  for _, f in ipairs(folders(opts)) do
    for _, file in ipairs(core._agent_files(f[1])) do
      file.source = f[2]
      out[#out + 1] = file
    end
  end
  return out
end

-- An agent as the CLI would load it (front matter with a name and a description), else nil.
local function agent_of(file)
  if #file.problems > 0 then return nil end
  local by = fields_of(file)
  local name, description = by.name and by.name.text, by.description and by.description.text
  if not name or name == "" or not description or description == "" then return nil end
  local tools = by.tools and list_of(by.tools) or nil
  if tools and #tools == 1 and tools[1] == "*" then tools = nil end
  return {
    name = name,
    description = description,
    tools = tools,
    disallowed_tools = list_of(by.disallowedTools),
    model = by.model and by.model.text or nil,
    permission_mode = by.permissionMode and by.permissionMode.text or nil,
    color = by.color and by.color.text or nil,
    path = file.path,
    line = by.name.line,
    prompt = file.prompt,
    source = file.source,
  }
end

---The agents the CLI would load, by name (a project agent wins over a user one of that name).
---@param opts table? { dir, user }
---@return table { [name] = { name, description, tools, model, path, prompt, ... } }
local function agents(opts)
  local out = {}
  for _, file in ipairs(read_all(opts)) do
    local a = agent_of(file)
    if a and not out[a.name] then out[a.name] = a end
  end
  return out
end

-- Edit distance, for suggestions.
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- The known name closest to `entry`, when it is close (case and underscores aside, or at
-- most two edits away).
local function suggest(entry, known)
  local lower = entry:lower():gsub("_", "")
  local best, best_d
  for name in pairs(known) do
    local d = distance(lower, name:lower())
    if d <= 2 and (not best_d or d < best_d or (d == best_d and name < best)) then best, best_d = name, d end
  end
  return best
end

---Every problem of the agent files, as "path:line: message", by path and line.
---@param opts table? { dir, user }
---@return table problems
function M.check(opts)
  local problems = {}
  local function add(file, line, msg) problems[#problems + 1] = { file.path, line, msg } end
  local tools, models, modes, keys = set(M.TOOLS), set(M.MODELS), set(M.PERMISSION_MODES), set(M.KEYS)
  local seen = {}  -- name -> "path:line", per source
  for _, file in ipairs(read_all(opts)) do
    for _, p in ipairs(file.problems) do add(file, p.line, p.message .. " (the CLI ignores this file)") end
    if #file.problems == 0 then
      local by = fields_of(file)
      if not by.name or not by.name.text or by.name.text == "" then
        add(file, 1, "no 'name' in the front matter (the CLI ignores this file)")
      elseif by.name.text ~= file.stem then
        add(file, by.name.line, ("name '%s' differs from the file name '%s.md'"):format(by.name.text, file.stem))
      end
      if not by.description or not by.description.text or by.description.text == "" then
        add(file, by.description and by.description.line or 1, "no 'description' in the front matter (the CLI ignores this file)")
      end
      if by.name and by.name.text then
        local key = file.source .. "\0" .. by.name.text
        if seen[key] then
          add(file, by.name.line, ("agent '%s' is defined twice: also in %s"):format(by.name.text, seen[key]))
        else
          seen[key] = file.path .. ":" .. by.name.line
        end
      end
      for _, f in ipairs(file.fields) do
        if not keys[f.key] then add(file, f.line, ("unknown key '%s' (the CLI ignores it)"):format(f.key)) end
      end
      for _, key in ipairs({ "tools", "disallowedTools" }) do
        local f = by[key]
        if f then
          for _, item in ipairs(f.items) do
            local name = tool_name(item.text)
            if not (item.text == "*" or tools[name] or name:match("^mcp__")) then
              local hint = suggest(name, tools)
              add(file, item.line, ("unknown tool '%s' in %s (the CLI keeps it, and the agent cannot use it)%s")
                  :format(item.text, key, hint and ("; did you mean '" .. hint .. "'?") or ""))
            end
          end
        end
      end
      local model = by.model and by.model.text
      if by.model and not (model and (models[model] or model:match("^claude%-"))) then
        add(file, by.model.line, ("unknown model '%s' (%s, or a full id such as claude-sonnet-5-5)")
            :format(tostring(model), table.concat(M.MODELS, ", ")))
      end
      local mode = by.permissionMode and by.permissionMode.text
      if by.permissionMode and not (mode and modes[mode]) then
        add(file, by.permissionMode.line, ("unknown permissionMode '%s' (%s)"):format(tostring(mode), table.concat(M.PERMISSION_MODES, ", ")))
      end
    end
  end
  table.sort(problems, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local out = {}
  for i, p in ipairs(problems) do out[i] = ("%s:%d: %s"):format(p[1], p[2], p[3]) end
  return out
end

---`qw agents [--check] [--json]`: prints the agents (or, with check, the problems) and
---returns the exit status: 1 when check found problems.
---@param opts table { check = bool, json = bool, dir = folder, user = bool }
---@return integer status
function M.report(opts)
  if opts.check then
    local problems = M.check(opts)
    if opts.json then
      print(qw.json.encode({ ok = #problems == 0, problems = problems }))
    else
      for _, p in ipairs(problems) do print(p) end
      local n = 0
      for _ in pairs(agents(opts)) do n = n + 1 end
      print(#problems == 0 and ("%d agent%s, no problems"):format(n, n == 1 and "" or "s")
            or ("%d problem%s"):format(#problems, #problems == 1 and "" or "s"))
    end
    return #problems == 0 and 0 or 1
  end
  local all, names = agents(opts), {}
  for name in pairs(all) do names[#names + 1] = name end
  table.sort(names)
  if opts.json then
    local list = {}
    for i, name in ipairs(names) do
      local a = all[name]
      list[i] = { name = a.name, description = a.description, tools = a.tools, model = a.model, path = a.path,
                  source = a.source, permission_mode = a.permission_mode }
    end
    print(qw.json.encode(list))
    return 0
  end
  if #names == 0 then
    print("no agents in " .. table.concat((function()
      local dirs = {}
      for _, f in ipairs(folders(opts)) do dirs[#dirs + 1] = f[1] end
      return dirs
    end)(), " or "))
    return 0
  end
  local rows, width = {}, { 4, 5, 5 }
  for _, name in ipairs(names) do
    local a = all[name]
    local row = { name, a.model or "(default)", a.tools and table.concat(a.tools, ",") or "(all)", a.path }
    for k = 1, 3 do width[k] = math.max(width[k], #row[k]) end
    rows[#rows + 1] = row
  end
  local fmt = ("%%-%ds  %%-%ds  %%-%ds  %%s"):format(width[1], width[2], width[3])
  print(fmt:format("NAME", "MODEL", "TOOLS", "FILE"))
  for _, r in ipairs(rows) do print(fmt:format(r[1], r[2], r[3], r[4])) end
  return 0
end

return setmetatable(M, { __call = function(_, opts) return agents(opts) end })
