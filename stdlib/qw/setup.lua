--- `qw init`: installs the agent catalogue, the slash commands and the steering templates
--- into a project, and checks them.
---
--- A file qw installed and the user did not change is brought up to date; a file the user
--- changed (or wrote) is left alone unless `force`. What qw installed is noted, with each
--- file's hash, in `.qw/installed.json`.
local core = ...
local spec = qw.spec
local M = {}

local MANIFEST = ".qw/installed.json"

local read_file = spec.read_file

-- Where the catalogue and commands come from: the checkout's .claude (next to stdlib), or
-- an installed qw's share/qw/claude.
local function source_dir()
  local base = spec.stdlib_dir():match("^(.*)/[^/]+$") or "."
  for _, d in ipairs({ base .. "/.claude", base .. "/claude" }) do
    if #core._subdirs(d) > 0 then return d end
  end
  return base .. "/.claude"
end

-- Every file to install: { { target, text } }, in order.
function M.files()
  local out = {}
  local src = source_dir()
  for _, kind in ipairs({ "agents", "commands" }) do
    for _, f in ipairs(core._agent_files(src .. "/" .. kind)) do
      out[#out + 1] = { target = ".claude/" .. kind .. "/" .. f.path:match("([^/]+)$"), text = read_file(f.path) }
    end
  end
  for _, doc in ipairs({ "product", "tech", "structure" }) do
    out[#out + 1] = { target = ".claude/steering/" .. doc .. ".md", text = spec.template("steering/" .. doc .. ".md") }
  end
  return out
end

local function manifest()
  local text = read_file(MANIFEST)
  local ok, m = pcall(qw.json.decode, text or "{}")
  return ok and type(m) == "table" and m or {}
end

local function hash(text) return tostring(core._hash(text)) end

---Installs; returns { { target, action = "wrote"|"updated"|"unchanged"|"kept"|"would ..." , why } }.
function M.install(opts)
  opts = opts or {}
  local m = manifest()
  local report = {}
  local new_manifest = {}
  for k, v in pairs(m) do new_manifest[k] = v end
  for _, f in ipairs(M.files()) do
    local current = read_file(f.target)
    local action, why
    if current == f.text then
      action = "unchanged"
    elseif current == nil then
      action = "wrote"
    elseif m[f.target] and hash(current) == m[f.target] then
      action = "updated"  -- ours, untouched since: a newer version replaces it
    elseif opts.force then
      action, why = "overwrote", m[f.target] and "changed since qw installed it" or "not installed by qw"
    else
      action, why = "kept", m[f.target] and "changed since qw installed it; --force replaces it"
                                      or "not installed by qw; --force replaces it"
    end
    local would = { wrote = "would write", updated = "would update", overwrote = "would overwrite" }
    if opts.dry_run and would[action] then action = would[action] end
    if not opts.dry_run and (action == "wrote" or action == "updated" or action == "overwrote") then
      spec.mkdirs(f.target:match("^(.*)/[^/]+$"))
      -- written beside, then renamed over: never a half-written file
      local tmp = f.target .. ".qw-new"
      local out = assert(io.open(tmp, "wb"))
      out:write(f.text)
      out:close()
      assert(os.rename(tmp, f.target))
    end
    if action ~= "kept" and not action:match("^would") then new_manifest[f.target] = hash(f.text) end
    report[#report + 1] = { target = f.target, action = action, why = why }
  end
  if not opts.dry_run then
    spec.mkdirs(".qw")
    local keys = {}
    for k in pairs(new_manifest) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = ("  %s: %s"):format(qw.json.encode(k), qw.json.encode(new_manifest[k])) end
    local out = assert(io.open(MANIFEST .. ".qw-new", "wb"))
    out:write("{\n", table.concat(parts, ",\n"), "\n}\n")
    out:close()
    assert(os.rename(MANIFEST .. ".qw-new", MANIFEST))
  end
  return report
end

-- Front matter keys of a slash command, and its tools.
M.COMMAND_KEYS = { "description", "argument-hint", "allowed-tools", "model", "disable-model-invocation" }

---What is wrong with the slash commands in `dir` (default .claude/commands), as file:line.
function M.check_commands(dir)
  dir = dir or ".claude/commands"
  local agents = qw.agents
  local problems = {}
  local keys = {}
  for _, k in ipairs(M.COMMAND_KEYS) do keys[k] = true end
  local tools = {}
  for _, t in ipairs(agents.TOOLS) do tools[t] = true end
  local models = {}
  for _, m in ipairs(agents.MODELS) do models[m] = true end
  for _, f in ipairs(core._agent_files(dir)) do
    local function add(line, msg) problems[#problems + 1] = ("%s:%d: %s"):format(f.path, line, msg) end
    for _, p in ipairs(f.problems) do add(p.line, p.message) end
    if #f.problems == 0 then
      local by = {}
      for _, field in ipairs(f.fields) do
        by[field.key] = field
        if not keys[field.key] then add(field.line, ("unknown key '%s' in a command (the CLI ignores it)"):format(field.key)) end
      end
      if not by.description or not by.description.text or by.description.text == "" then
        add(1, "no 'description' (the CLI shows the first line of the body instead)")
      end
      local at = by["allowed-tools"]
      if at then
        local items = at.items
        if #items == 0 and at.text then
          items = {}
          for part in at.text:gmatch("[^,]+") do items[#items + 1] = { text = part:gsub("^%s+", ""):gsub("%s+$", ""), line = at.line } end
        end
        for _, item in ipairs(items) do
          local name = item.text:match("^([%w_]+)%(") or item.text
          if not (tools[name] or name:match("^mcp__")) then add(item.line, ("unknown tool '%s' in allowed-tools"):format(item.text)) end
        end
      end
      if by.model and not (models[by.model.text] or (by.model.text or ""):match("^claude%-")) then
        add(by.model.line, ("unknown model '%s'"):format(tostring(by.model.text)))
      end
      -- a `!` command in the body needs a Bash permission that allows it
      for cmd in (f.prompt or ""):gmatch("!`([^`]+)`") do
        local word = cmd:match("^%s*(%S+)")
        local allowed = false
        for part in ((at and at.text) or ""):gmatch("[^,]+") do
          local pat = part:match("Bash%(([^%)]*)%)")
          if part:match("^%s*Bash%s*$") or (pat and (pat == "*" or cmd:sub(1, #(pat:gsub(":?%*$", ""))) == pat:gsub(":?%*$", ""))) then allowed = true end
        end
        if not allowed then
          add(f.prompt_line, ("the body runs !`%s`, which allowed-tools does not permit (add Bash(%s:*))"):format(cmd, word or "?"))
        end
      end
    end
  end
  table.sort(problems)
  return problems
end

---`qw init [--force] [--dry-run] [--check]`; returns the exit code.
function M.report(opts)
  if opts.check then
    local problems = {}
    for _, p in ipairs(qw.agents.check{ user = false }) do problems[#problems + 1] = p end
    for _, p in ipairs(M.check_commands()) do problems[#problems + 1] = p end
    for _, p in ipairs(problems) do print(p) end
    print(#problems == 0 and "agents and commands: no problems" or (#problems .. " problem(s)"))
    return #problems == 0 and 0 or 1
  end
  local report = M.install(opts)
  local counts = {}
  for _, r in ipairs(report) do
    counts[r.action] = (counts[r.action] or 0) + 1
    if r.action ~= "unchanged" then print(("%-20s %s%s"):format(r.action, r.target, r.why and ("  (" .. r.why .. ")") or "")) end
  end
  local parts = {}
  for _, a in ipairs({ "wrote", "updated", "overwrote", "would write", "would update", "would overwrite", "kept", "unchanged" }) do
    if counts[a] then parts[#parts + 1] = counts[a] .. " " .. a end
  end
  print(table.concat(parts, ", ") .. (opts.dry_run and " (dry run: nothing written)" or ""))
  return 0
end

return M
