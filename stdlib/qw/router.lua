--- Routing: which agent takes a task. Policy, all of it: replace or extend the rules from
--- `.qw/policy.lua` (`qw.router.clear()`, then `qw.router.rule{ ... }`).
---
--- A rule is { match = PATTERN | function(task) -> bool, agent = NAME, priority = N }. A
--- pattern is a Lua pattern matched against the task's text in lower case: its id, title,
--- description, prompt and files, one after another. The matching rule of highest priority
--- wins (the first added among equals); with none, `qw.router.default` does.
local M = { default = "developer" }

local rules = {}
local added = 0

local function fail(fmt, ...) error(fmt:format(...), 3) end

---Adds a rule.
---@param r table { match = pattern|function, agent = string, priority = number (50), name = string? }
---@return table the rule
function M.rule(r)
  if type(r) ~= "table" then fail("qw.router.rule: expects a table { match, agent, priority } (got %s)", type(r)) end
  for k in pairs(r) do
    if k ~= "match" and k ~= "agent" and k ~= "priority" and k ~= "name" then
      fail("qw.router.rule: unknown field '%s' (match, agent, priority, name)", tostring(k))
    end
  end
  if type(r.match) ~= "string" and type(r.match) ~= "function" then
    fail("qw.router.rule: 'match' must be a Lua pattern or a function(task) (got %s)", type(r.match))
  end
  if type(r.match) == "string" then
    local ok, err = pcall(string.find, "", r.match)
    if not ok then fail("qw.router.rule: 'match' is not a valid pattern: %s", tostring(err)) end
  end
  if type(r.agent) ~= "string" or r.agent == "" then fail("qw.router.rule: 'agent' must be an agent's name") end
  if r.priority ~= nil and type(r.priority) ~= "number" then
    fail("qw.router.rule: 'priority' must be a number (got %s)", type(r.priority))
  end
  added = added + 1
  local rule = { match = r.match, agent = r.agent, priority = r.priority or 50, order = added,
                 name = r.name or (type(r.match) == "string" and r.match or ("function #" .. added)) }
  rules[#rules + 1] = rule
  table.sort(rules, function(a, b)
    if a.priority ~= b.priority then return a.priority > b.priority end
    return a.order < b.order
  end)
  return rule
end

---Removes every rule (the defaults too).
function M.clear()
  rules = {}
end

---The rules, in the order they are tried.
function M.rules()
  local out = {}
  for i, r in ipairs(rules) do out[i] = { name = r.name, agent = r.agent, priority = r.priority } end
  return out
end

-- A task's text for patterns: a string as it is, or a table's fields that describe it.
local function text_of(task)
  if type(task) == "string" then return task:lower() end
  if type(task) ~= "table" then return tostring(task):lower() end
  local parts = {}
  for _, k in ipairs({ "id", "title", "description", "prompt", "text" }) do
    if type(task[k]) == "string" then parts[#parts + 1] = task[k] end
  end
  if type(task.files) == "table" then
    for _, f in ipairs(task.files) do parts[#parts + 1] = tostring(f) end
  end
  return table.concat(parts, "\n"):lower()
end

local function matches(rule, task, text)
  if type(rule.match) == "function" then
    local ok, v = pcall(rule.match, task)
    return ok and v and true or false
  end
  return text:find(rule.match) ~= nil
end

---The agent for a task (a string, or a table with id, title, description, prompt, files).
---@return string agent, table? rule
function M.route(task)
  local text = text_of(task)
  for _, r in ipairs(rules) do
    if matches(r, task, text) then return r.agent, { name = r.name, agent = r.agent, priority = r.priority } end
  end
  return M.default, nil
end

---Every rule that matches the task, in the order they are tried (the first one wins), and
---the default when none does.
---@return table { { name, agent, priority }, ... }
function M.explain(task)
  local text, out = text_of(task), {}
  for _, r in ipairs(rules) do
    if matches(r, task, text) then out[#out + 1] = { name = r.name, agent = r.agent, priority = r.priority } end
  end
  if #out == 0 then out[1] = { name = "default", agent = M.default, priority = 0 } end
  return out
end

-- The catalogue's defaults, below anything a project adds (priority 50 by default).
for _, d in ipairs({
  { "%f[%a]security%f[%A]", "security-engineer", 30 }, { "%f[%a]vulnerab", "security-engineer", 30 },
  { "%f[%a]auth[%a]*%f[%A]", "security-engineer", 20 }, { "%f[%a]secrets?%f[%A]", "security-engineer", 20 },
  { "%f[%a]review", "code-reviewer", 25 },
  { "%f[%a]tests?%f[%A]", "qa-engineer", 20 }, { "%f[%a]testing%f[%A]", "qa-engineer", 20 },
  { "%f[%a]qa%f[%A]", "qa-engineer", 20 }, { "%f[%a]coverage%f[%A]", "qa-engineer", 20 },
  { "%f[%a]perf[%a]*%f[%A]", "performance-optimizer", 20 }, { "%f[%a]latency%f[%A]", "performance-optimizer", 20 },
  { "%f[%a]optimi[sz]", "performance-optimizer", 20 }, { "%f[%a]benchmark", "performance-optimizer", 20 },
  { "%f[%a]ci%f[%A]", "devops-engineer", 15 }, { "%f[%a]deploy", "devops-engineer", 15 },
  { "%f[%a]docker", "devops-engineer", 15 }, { "%f[%a]pipeline%f[%A]", "devops-engineer", 15 },
  { "%f[%a]migration", "data-engineer", 15 }, { "%f[%a]schema%f[%A]", "data-engineer", 15 },
  { "%f[%a]sql%f[%A]", "data-engineer", 15 }, { "%f[%a]database", "data-engineer", 15 },
  { "%f[%a]webhook", "api-integration-specialist", 15 }, { "%f[%a]api client", "api-integration-specialist", 15 },
  { "%f[%a]integrat[%a]* with", "api-integration-specialist", 15 },
  { "%f[%a]prompts?%f[%A]", "genai-engineer", 12 }, { "%f[%a]llm%f[%A]", "genai-engineer", 12 },
  { "%f[%a]embedding", "genai-engineer", 12 },
  { "%f[%a]ui%f[%A]", "uiux-designer", 12 }, { "%f[%a]ux%f[%A]", "uiux-designer", 12 },
  { "%f[%a]css%f[%A]", "uiux-designer", 12 }, { "%f[%a]accessib", "uiux-designer", 12 },
  { "%f[%a]architecture%f[%A]", "architect", 10 }, { "%f[%a]design doc", "architect", 10 },
  { "%f[%a]requirements?%f[%A]", "product-manager", 10 }, { "%f[%a]user stor", "product-manager", 10 },
  { "%f[%a]steering%f[%A]", "steering-context-manager", 10 },
}) do
  M.rule{ match = d[1], agent = d[2], priority = d[3] }
end

return M
