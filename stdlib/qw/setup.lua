--- `qw init`: installs the agent catalogue, the slash commands, the steering templates, a
--- starting hook policy (.qw/hooks.lua) and .qw/.gitignore into a project, merges the hook registrations into its `.claude/settings.json`, and checks
--- them.
---
--- A file qw installed and the user did not change is brought up to date; a file the user
--- changed (or wrote) is left alone unless `force`. What qw installed is noted, with each
--- file's hash, in `.qw/installed.json`. The settings file is never in it: qw only adds its
--- own hook entries to it, keeping everything else, and keeps the old file as a backup.
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
  -- the project's hook policy to start from, and what of .qw stays out of git
  out[#out + 1] = { target = ".qw/hooks.lua", text = spec.template("hooks.lua") }
  out[#out + 1] = { target = ".qw/.gitignore", text = spec.template("qw.gitignore") }
  return out
end

local function manifest()
  local text = read_file(MANIFEST)
  local ok, m = pcall(qw.json.decode, text or "{}")
  return ok and type(m) == "table" and m or {}
end

local function hash(text) return tostring(core._hash(text)) end

-- Written beside, then renamed over: never a half-written file.
local function write_atomic(path, text)
  spec.mkdirs(path:match("^(.*)/[^/]+$") or ".")
  local tmp = path .. ".qw-new"
  local out = assert(io.open(tmp, "wb"))
  out:write(text)
  out:close()
  assert(os.rename(tmp, path))
end

---------------------------------------------------------------------------------------------
-- Settings. A small JSON reader that keeps the order of keys, the source text of every
-- scalar and the line of every value and key, and a writer with 2-space indentation: a file
-- read and written again has the same keys, in the same order, with the same values.
--
-- A node is { kind = "object", line, pairs = { { key, raw, line, value } }, map = { [key] = value } }
-- (of a key given twice `map` has the last, as the CLI reads it, and `pairs` has both),
-- { kind = "array", line, items }, or { kind = "string"|"number"|"boolean"|"null", line, value, raw }.

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

---Parses JSON text; returns the root node, or nil, line, message.
function M.json_parse(text)
  if not text:find("%S") then return nil, 1, "the file is empty" end
  local i, line = text:sub(1, 3) == "\239\187\191" and 4 or 1, 1  -- after a byte order mark
  local function fail(msg) error({ json_line = line, message = msg }, 0) end
  local function ws()
    local s, e = text:find("^[ \t\r\n]*", i)
    for _ in text:sub(s, e):gmatch("\n") do line = line + 1 end
    i = e + 1
    return text:sub(i, i)
  end
  local function string_at()
    local start, parts = i, {}
    i = i + 1
    while true do
      local s, e = text:find('^[^"\\\0-\31]+', i)
      if s then parts[#parts + 1] = text:sub(s, e); i = e + 1 end
      local c = text:sub(i, i)
      if c == '"' then break end
      if c == "\\" then
        local x = text:sub(i + 1, i + 1)
        if ESCAPES[x] then
          parts[#parts + 1] = ESCAPES[x]; i = i + 2
        elseif x == "u" and text:find("^%x%x%x%x", i + 2) then
          local cp = tonumber(text:sub(i + 2, i + 5), 16)
          i = i + 6
          local low = cp >= 0xD800 and cp < 0xDC00 and text:match("^\\u([dD][c-fC-F]%x%x)", i)
          if low then cp = 0x10000 + (cp - 0xD800) * 0x400 + tonumber(low, 16) - 0xDC00; i = i + 6 end
          parts[#parts + 1] = utf8.char(cp)
        else
          fail("a bad escape '\\" .. x .. "' in a string")
        end
      elseif c == "" then
        fail("a string that does not end")
      else
        fail(c == "\n" and "a line break inside a string" or "a control character inside a string")
      end
    end
    i = i + 1
    return { kind = "string", value = table.concat(parts), raw = text:sub(start, i - 1) }
  end
  local value
  local function container(kind, close)
    local node = kind == "object" and { kind = kind, pairs = {}, map = {} } or { kind = kind, items = {} }
    i = i + 1
    if ws() == close then i = i + 1 return node end
    while true do
      if kind == "object" then
        if ws() ~= '"' then fail("expected a key in double quotes") end
        local key_line, key = line, string_at()
        if ws() ~= ":" then fail("expected ':' after the key " .. key.raw) end
        i = i + 1
        local v = value()
        node.pairs[#node.pairs + 1] = { key = key.value, raw = key.raw, line = key_line, value = v }
        node.map[key.value] = v
      else
        node.items[#node.items + 1] = value()
      end
      local c = ws()
      if c == close then i = i + 1 return node end
      if c ~= "," then fail(("expected ',' or '%s'"):format(close)) end
      local comma = line
      i = i + 1
      if ws() == close then line = comma; fail(("a ',' before '%s'"):format(close)) end
    end
  end
  function value()
    local c, at, node = ws(), line, nil
    if c == "{" then
      node = container("object", "}")
    elseif c == "[" then
      node = container("array", "]")
    elseif c == '"' then
      node = string_at()
    else
      local num = text:match("^%-?0", i) or text:match("^%-?[1-9]%d*", i)
      if num then
        num = num .. (text:match("^%.%d+", i + #num) or "")
        num = num .. (text:match("^[eE][-+]?%d+", i + #num) or "")
        node = { kind = "number", value = tonumber(num), raw = num }
      else
        for word, v in pairs({ ["true"] = true, ["false"] = false, null = "null" }) do
          if text:sub(i, i + #word - 1) == word then
            node = v == "null" and { kind = "null", raw = word } or { kind = "boolean", value = v, raw = word }
          end
        end
        if not node then fail(c == "" and "the text ends where a value should be" or ("unexpected '%s'"):format(c)) end
      end
      i = i + #node.raw
    end
    node.line = at
    return node
  end
  local ok, root = pcall(function()
    local v = value()
    if ws() ~= "" then fail("more text after the JSON value") end
    return v
  end)
  if ok then return root end
  if type(root) == "table" and root.json_line then return nil, root.json_line, root.message end
  error(root, 0)
end

---The text of a node, 2 spaces an indentation level.
function M.json_write(node, indent)
  indent = indent or ""
  local inner, parts = indent .. "  ", {}
  if node.kind == "object" then
    for _, p in ipairs(node.pairs) do parts[#parts + 1] = inner .. p.raw .. ": " .. M.json_write(p.value, inner) end
    return #parts == 0 and "{}" or "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
  elseif node.kind == "array" then
    for _, v in ipairs(node.items) do parts[#parts + 1] = inner .. M.json_write(v, inner) end
    return #parts == 0 and "[]" or "[\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "]"
  end
  return node.raw
end

-- The line of `key` in an object node (of the last one, if it is there twice).
local function key_line(obj, key)
  for n = #obj.pairs, 1, -1 do
    if obj.pairs[n].key == key then return obj.pairs[n].line end
  end
  return obj.line
end

local function add_pair(obj, key, value)
  obj.pairs[#obj.pairs + 1] = { key = key, raw = '"' .. key .. '"', value = value }
  obj.map[key] = value
end

M.SETTINGS = ".claude/settings.json"

---Whether a hook entry (a node) runs `qw hook`: a command `qw hook`, `qw hook ...`,
---`.../qw hook` or `.../qw hook ...`, or the exec form { command = ".../qw", args = { "hook", ... } }.
function M.runs_qw_hook(hook)
  local cmd = hook.kind == "object" and hook.map.command
  if not (cmd and cmd.kind == "string") then return false end
  local c = cmd.value:match("^%s*(.-)%s*$")
  if c == "qw hook" or c:sub(1, 8) == "qw hook " or c:sub(-8) == "/qw hook" or c:find("^%S*/qw hook ") then return true end
  local args = hook.map.args
  return (c == "qw" or c:sub(-3) == "/qw") and args ~= nil and args.kind == "array" and args.items[1] ~= nil
    and args.items[1].value == "hook"
end

-- Whether one of the groups (an array node) of an event has a hook that runs `qw hook`.
local function has_qw_hook(groups)
  for _, g in ipairs(groups.items) do
    local hooks = g.kind == "object" and g.map.hooks
    for _, h in ipairs(hooks and hooks.kind == "array" and hooks.items or {}) do
      if M.runs_qw_hook(h) then return true end
    end
  end
  return false
end

---Merges the hook registrations of `template` (JSON text) into the settings text `current`
---(nil: there is no file). Returns { text, added = { event names } } (text nil when nothing
---changes), or { line, message } when `current` cannot be merged (it is left as it is).
function M.merge_settings(current, template)
  local tmpl = assert(M.json_parse(template), "the hook template is not valid JSON")
  local added = {}
  if current == nil then
    for _, p in ipairs(tmpl.map.hooks.pairs) do added[#added + 1] = p.key end
    return { text = template, added = added }
  end
  local root, line, message = M.json_parse(current)
  if not root then return { line = line, message = "not valid JSON: " .. message } end
  if root.kind ~= "object" then return { line = root.line, message = "the settings are not a JSON object" } end
  local hooks = root.map.hooks
  if hooks == nil then
    hooks = { kind = "object", pairs = {}, map = {} }
    add_pair(root, "hooks", hooks)
  elseif hooks.kind ~= "object" then
    return { line = key_line(root, "hooks"), message = "'hooks' is not an object" }
  end
  for _, p in ipairs(tmpl.map.hooks.pairs) do
    local groups = hooks.map[p.key]
    if groups == nil then
      add_pair(hooks, p.key, p.value)
      added[#added + 1] = p.key
    elseif groups.kind ~= "array" then
      return { line = key_line(hooks, p.key), message = ("the value of '%s' is not an array"):format(p.key) }
    elseif not has_qw_hook(groups) then
      for _, g in ipairs(p.value.items) do groups.items[#groups.items + 1] = g end
      added[#added + 1] = p.key
    end
  end
  return { text = #added > 0 and M.json_write(root) .. "\n" or nil, added = added }
end

-- The first of PATH.bak, PATH.bak.1, PATH.bak.2, ... that is not there.
local function backup_name(path)
  local name, n = path .. ".bak", 0
  while read_file(name) do
    n = n + 1
    name = ("%s.bak.%d"):format(path, n)
  end
  return name
end

-- The settings step of an install: one report entry.
local function install_settings(opts)
  local target = M.SETTINGS
  local template_path = source_dir() .. "/settings.template.json"
  local template = read_file(template_path)
  if not template then
    return { target = target, action = "invalid", problem = ("%s: no hook template (%s is missing)"):format(target, template_path) }
  end
  local current = read_file(target)
  local r = M.merge_settings(current, template)
  if r.message then
    return { target = target, action = "invalid", problem = ("%s:%d: %s; qw init did not change it"):format(target, r.line, r.message) }
  end
  if not r.text then return { target = target, action = "unchanged" } end
  local events = ("qw hook on %d event%s"):format(#r.added, #r.added == 1 and "" or "s")
  if opts.dry_run then
    return { target = target, action = current and "would merge" or "would write", why = current and ("would add " .. events) or nil }
  end
  local why
  if current then
    local backup = backup_name(target)
    write_atomic(backup, current)
    why = ("added %s; the old file is %s"):format(events, backup)
  end
  write_atomic(target, r.text)
  return { target = target, action = current and "merged" or "wrote", why = why }
end

---Installs; returns { { target, action = "wrote"|"updated"|"merged"|"unchanged"|"kept"|"invalid"|"would ...",
---why, problem } }.
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
      write_atomic(f.target, f.text)
    end
    if action ~= "kept" and not action:match("^would") then new_manifest[f.target] = hash(f.text) end
    report[#report + 1] = { target = f.target, action = action, why = why }
  end
  if not opts.dry_run then
    local keys = {}
    for k in pairs(new_manifest) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = ("  %s: %s"):format(qw.json.encode(k), qw.json.encode(new_manifest[k])) end
    write_atomic(MANIFEST, "{\n" .. table.concat(parts, ",\n") .. "\n}\n")
  end
  report[#report + 1] = install_settings(opts)
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

-- The hook events of the CLI (2.1.332): an entry under another name is ignored.
M.HOOK_EVENTS = {
  "PreToolUse", "PostToolUse", "PostToolUseFailure", "PostToolBatch", "Notification", "UserPromptSubmit",
  "UserPromptExpansion", "SessionStart", "SessionEnd", "Stop", "StopFailure", "SubagentStart", "SubagentStop",
  "PreCompact", "PostCompact", "PreModelSwitch", "PostModelSwitch", "PermissionRequest", "PermissionDenied", "Setup",
  "TeammateIdle", "TaskCreated", "TaskCompleted", "Elicitation", "ElicitationResult", "ConfigChange", "WorktreeCreate",
  "WorktreeRemove", "InstructionsLoaded", "CwdChanged", "FileChanged", "DirectoryAdded", "MessageDisplay",
  "PreSkillShellCommand",
}

-- Events on which one malformed group or hook makes the CLI ignore the whole settings file
-- (its other hooks and its other settings too); on every other event it ignores only that
-- event's value, that group or that hook. Measured with the CLI 2.1.332.
M.STRICT_EVENTS = { PreToolUse = true, PermissionRequest = true, PreSkillShellCommand = true }

-- The keys of a hook of each type and what each must hold, from the CLI's settings schema
-- (`HOOK_REQUIRED`: the keys it must have).
local STR, BOOL, POS = "a string", "true or false", "a positive number"
local STRS, OBJ, ANY = "an array of strings", "an object", "anything"
local FAILURE = "'continue' or 'block'"
M.HOOK_TYPES = {
  command = { command = STR, args = STRS, shell = "'bash' or 'powershell'", timeout = POS, async = BOOL, asyncRewake = BOOL,
              once = BOOL, statusMessage = STR, ["if"] = STR, onFailure = FAILURE, holdsTools = BOOL,
              rewakeMessage = STR, rewakeSummary = STR, cloud = ANY },
  prompt = { prompt = STR, ["if"] = STR, timeout = POS, model = STR, continueOnBlock = BOOL, statusMessage = STR, once = BOOL },
  agent = { prompt = STR, ["if"] = STR, timeout = POS, model = STR, statusMessage = STR, once = BOOL },
  http = { url = STR, ["if"] = STR, timeout = POS, onFailure = FAILURE, headers = OBJ, allowedEnvVars = STRS,
           statusMessage = STR, once = BOOL, cloud = ANY },
  mcp_tool = { server = STR, tool = STR, input = OBJ, ["if"] = STR, timeout = POS, onFailure = ANY, statusMessage = STR, once = BOOL },
}
M.HOOK_REQUIRED = { command = { "command" }, prompt = { "prompt" }, agent = { "prompt" }, http = { "url" },
                    mcp_tool = { "server", "tool" } }
local TYPE_NAMES = "command, prompt, agent, http, mcp_tool"

local function fits(want, node)
  if want == ANY then return true end
  if want == STR then return node.kind == "string" end
  if want == BOOL then return node.kind == "boolean" end
  if want == POS then return node.kind == "number" and node.value > 0 end
  if want == OBJ then return node.kind == "object" end
  if want == STRS then
    if node.kind ~= "array" then return false end
    for _, item in ipairs(node.items) do if item.kind ~= "string" then return false end end
    return true
  end
  local a, b = want:match("^'(%w+)' or '(%w+)'$")  -- one of two words
  return node.kind == "string" and (node.value == a or node.value == b)
end

---What is wrong with the hooks of the settings file `path` (if it is there), as file:line,
---each saying what the CLI does with it.
function M.check_settings(path)
  local text = read_file(path)
  if not text then return {} end
  local found = {}
  local function add(line, msg) found[#found + 1] = { line = line, n = #found, text = ("%s:%d: %s"):format(path, line, msg) } end
  local root, line, message = M.json_parse(text)
  if not root then
    add(line, "not valid JSON: " .. message .. " (the CLI ignores this whole file)")
  elseif root.kind ~= "object" then
    add(root.line, "the settings are not a JSON object (the CLI ignores this whole file)")
  elseif root.map.hooks and root.map.hooks.kind ~= "object" then
    add(key_line(root, "hooks"), "'hooks' is not an object (the CLI ignores every hook in this file)")
  elseif root.map.hooks then
    local known = {}
    for _, e in ipairs(M.HOOK_EVENTS) do known[e] = true end
    for _, ev in ipairs(root.map.hooks.pairs) do
      local event = ev.key
      local function ignores(what)
        if M.STRICT_EVENTS[event] then return ("(on %s the CLI ignores this whole file)"):format(event) end
        return "(the CLI ignores " .. what .. ")"
      end
      if not known[event] then
        add(ev.line, ("unknown hook event '%s' (the CLI ignores this entry)"):format(event))
      elseif ev.value.kind ~= "array" then
        add(ev.line, ("the value of '%s' is not an array %s"):format(event, ignores("every hook of " .. event)))
      else
        for _, group in ipairs(ev.value.items) do
          if group.kind ~= "object" then
            add(group.line, "a hook group that is not an object " .. ignores("this group"))
          else
            for _, p in ipairs(group.pairs) do
              if p.key ~= "matcher" and p.key ~= "hooks" then
                add(p.line, ("unknown key '%s' in a hook group (the CLI ignores the key)"):format(p.key))
              end
            end
            local matcher, hooks = group.map.matcher, group.map.hooks
            if matcher and matcher.kind ~= "string" then
              add(key_line(group, "matcher"), "'matcher' is not a string " .. ignores("this group"))
            end
            if hooks == nil or hooks.kind ~= "array" then
              add(hooks and key_line(group, "hooks") or group.line, "a hook group without a 'hooks' array " .. ignores("this group"))
            end
            for _, hook in ipairs(hooks and hooks.kind == "array" and hooks.items or {}) do
              local kind = hook.kind == "object" and hook.map.type
              local schema = kind and kind.kind == "string" and M.HOOK_TYPES[kind.value]
              if hook.kind ~= "object" then
                add(hook.line, "a hook that is not an object " .. ignores("this entry"))
              elseif not kind then
                add(hook.line, ("a hook without a 'type' (one of %s) %s"):format(TYPE_NAMES, ignores("this entry")))
              elseif not schema then
                add(key_line(hook, "type"), ("unknown hook type %s (known: %s) %s"):format(kind.raw, TYPE_NAMES, ignores("this entry")))
              else
                for _, p in ipairs(hook.pairs) do
                  local want = schema[p.key]
                  if p.key ~= "type" and not want then
                    add(p.line, ("unknown key '%s' in a '%s' hook (the CLI ignores the key)"):format(p.key, kind.value))
                  elseif want and not fits(want, p.value) then
                    add(p.line, ("'%s' is not %s %s"):format(p.key, want, ignores("this entry")))
                  end
                end
                for _, key in ipairs(M.HOOK_REQUIRED[kind.value]) do
                  if hook.map[key] == nil then
                    add(hook.line, ("a '%s' hook without '%s' %s"):format(kind.value, key, ignores("this entry")))
                  end
                end
              end
            end
          end
        end
      end
    end
  end
  table.sort(found, function(a, b) return a.line < b.line or (a.line == b.line and a.n < b.n) end)
  local problems = {}
  for _, f in ipairs(found) do problems[#problems + 1] = f.text end
  return problems
end

---`qw init [--force] [--dry-run] [--check]`; returns the exit code.
function M.report(opts)
  if opts.check then
    local problems = {}
    for _, p in ipairs(qw.agents.check{ user = false }) do problems[#problems + 1] = p end
    for _, p in ipairs(M.check_commands()) do problems[#problems + 1] = p end
    for _, file in ipairs({ M.SETTINGS, ".claude/settings.local.json" }) do
      for _, p in ipairs(M.check_settings(file)) do problems[#problems + 1] = p end
    end
    for _, p in ipairs(problems) do print(p) end
    print(#problems == 0 and "agents, commands and settings: no problems" or (#problems .. " problem(s)"))
    return #problems == 0 and 0 or 1
  end
  local report = M.install(opts)
  local counts = {}
  for _, r in ipairs(report) do
    counts[r.action] = (counts[r.action] or 0) + 1
    if r.problem then
      print(r.problem)
    elseif r.action ~= "unchanged" then
      print(("%-20s %s%s"):format(r.action, r.target, r.why and ("  (" .. r.why .. ")") or ""))
    end
  end
  local parts = {}
  for _, a in ipairs({ "wrote", "updated", "merged", "overwrote", "would write", "would update", "would merge",
                       "would overwrite", "kept", "unchanged", "invalid" }) do
    if counts[a] then parts[#parts + 1] = counts[a] .. " " .. a end
  end
  print(table.concat(parts, ", ") .. (opts.dry_run and " (dry run: nothing written)" or ""))
  return counts.invalid and 1 or 0
end

return M
