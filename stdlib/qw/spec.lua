--- Specs: the documents of a feature (requirements, design, tasks) and the plan of its tasks.
---
--- `qw.spec.parse(name_or_path)` reads a tasks.md as people really write it (see the task
--- grammar below) and keeps every task's source line; `qw.spec.lint` says, as file:line,
--- what is wrong in it; `qw.spec.plan` puts the tasks into waves that can run at once and
--- says why each is where it is. Folders: `.claude/specs/NAME/` (requirements.md, design.md,
--- tasks.md), spec-kit's `specs/NNN-NAME/` (spec.md, plan.md, tasks.md) and Kiro's
--- `.kiro/specs/NAME/`.
local core = ...
local M = {}

local function fail(fmt, ...) error(fmt:format(...), 3) end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

M.read_file = read_file

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

---------------------------------------------------------------------------------------------
-- Finding specs

-- The spec folders of a project, each { name, dir, kind, requirements, design, tasks }.
function M.list(root)
  root = root or "."
  local out = {}
  local function add(name, dir, kind, req, design)
    out[#out + 1] = { name = name, dir = dir, kind = kind, requirements = dir .. "/" .. req,
                      design = dir .. "/" .. design, tasks = dir .. "/tasks.md" }
  end
  local dirs = core._subdirs
  for _, n in ipairs(dirs(root .. "/.claude/specs")) do add(n, root .. "/.claude/specs/" .. n, "claude", "requirements.md", "design.md") end
  for _, n in ipairs(dirs(root .. "/.kiro/specs")) do add(n, root .. "/.kiro/specs/" .. n, "kiro", "requirements.md", "design.md") end
  for _, n in ipairs(dirs(root .. "/specs")) do
    -- spec-kit: specs/001-name
    local short = n:match("^%d+%-(.+)$") or n
    out[#out + 1] = { name = short, dir = root .. "/specs/" .. n, kind = "spec-kit", requirements = root .. "/specs/" .. n .. "/spec.md",
                      design = root .. "/specs/" .. n .. "/plan.md", tasks = root .. "/specs/" .. n .. "/tasks.md", folder = n }
  end
  return out
end

-- The spec of that name (or folder name), or nil.
function M.find(name, root)
  for _, s in ipairs(M.list(root)) do
    if s.name == name or s.folder == name then return s end
  end
end

-- A spec by name, or a path to a tasks.md: { tasks = path, requirements, design, name }.
local function locate(name_or_path)
  if type(name_or_path) ~= "string" or name_or_path == "" then fail("qw.spec: a spec name or a path to a tasks.md is needed") end
  if name_or_path:match("%.md$") or name_or_path:find("/", 1, true) then
    local path = name_or_path
    if not path:match("%.md$") then path = path .. "/tasks.md" end
    local dir = path:match("^(.*)/[^/]*$") or "."
    local spec = { name = dir:match("([^/]+)$"), dir = dir, tasks = path }
    spec.requirements = exists(dir .. "/requirements.md") and dir .. "/requirements.md" or dir .. "/spec.md"
    spec.design = exists(dir .. "/design.md") and dir .. "/design.md" or dir .. "/plan.md"
    return spec
  end
  local spec = M.find(name_or_path)
  if not spec then fail("qw.spec: no spec named '%s' (qw spec list shows them)", name_or_path) end
  return spec
end
M.locate = locate

---------------------------------------------------------------------------------------------
-- The task grammar
--
-- Checkbox lines `- [ ]` / `* [ ]` (state " ", x, X, -, ~ or any other character, kept raw;
-- a `*` right after `]` marks an optional task); ids `1`, `1.2`, `1.2.`, `**1.2**`, `1\.`,
-- `T001`, `T031-MIN`; ids in a heading (`#### Task 1.1: ...`) with the checkbox on a line of
-- its own; `### 1. Title` headings as parents; parent and child from the numbers, not the
-- indentation; `[P]`/`(P)` (parallel), `[US1]` (story) and `[P0]` (priority) markers before or
-- after the title; metadata under a task (`_Requirements: 1.1, 2.3_` with or without the
-- closing `_`, `_Leverage:_`, `_Depends:_`, `_Boundary:_`, `_Prompt:` over several lines,
-- `Files:`, `Purpose:`, `**Validates: Requirements 1.1**`, and localised labels); spec-kit's
-- `T008 blocks T009, T015` and `(depends on T012)`; phase sections; a `## Task Dependency
-- Graph` JSON block of waves. Other fenced code blocks are skipped.

-- Metadata labels (lower case, any language where the word is unambiguous) -> field.
M.LABELS = {
  requirements = "requirements", requirement = "requirements", reqs = "requirements", validates = "requirements",
  ["requisitos"] = "requirements", ["anforderungen"] = "requirements", ["exigences"] = "requirements",
  ["要件"] = "requirements", ["需求"] = "requirements", ["требования"] = "requirements",
  depends = "depends", ["depends on"] = "depends", dependencies = "depends", ["dependencias"] = "depends",
  ["abhängigkeiten"] = "depends", ["dépendances"] = "depends", ["依存"] = "depends", ["依赖"] = "depends",
  files = "files", file = "files", ["archivos"] = "files", ["dateien"] = "files", ["fichiers"] = "files",
  ["ファイル"] = "files", ["文件"] = "files",
  leverage = "leverage", ["aprovechar"] = "leverage", ["活用"] = "leverage",
  boundary = "boundary", purpose = "purpose", ["propósito"] = "purpose", ["zweck"] = "purpose", ["目的"] = "purpose",
  prompt = "prompt", validation = "validation", check = "validation",
  design = "design", ["diseño"] = "design", ["entwurf"] = "design", ["設計"] = "design",
}

local ID = "[TtRr]?%d+[%.%d]*[%w%-]*"

-- The id at the start of a title, and the rest: `**1.2**`, `1.2.`, `1\.`, `T031-MIN:`.
local function take_id(text)
  local s = text
  local bold = s:match("^%*%*(.-)%*%*")
  if bold then
    local id = bold:gsub("\\", ""):gsub("[%.:]$", "")
    if id:match("^" .. ID .. "$") then return id, trim(s:sub(#bold + 5):gsub("^[%.:%-]%s*", "")) end
  end
  local id, rest = s:match("^([Tt]%d+[%w%-]*)[%.:]?%s+(.*)$")
  if not id then id, rest = s:match("^([Tt]%d+[%w%-]*)[%.:]?$"), "" end
  if id then return id:upper(), rest end
  id, rest = s:match("^(%d+[%.%d\\]*)%s+(.*)$")
  if not id then id, rest = s:match("^(%d+[%.%d\\]*)$"), "" end
  if id then
    id = id:gsub("\\", ""):gsub("%.+$", "")
    return id, trim((rest:gsub("^[:%-]%s*", "")))
  end
  return nil, text
end

-- Markers anywhere in a title: [P] or (P), [US1], [P0]; the title without them.
local function take_markers(title, task)
  local function strip(pattern, f)
    title = title:gsub(pattern, function(...) f(...) return " " end)
  end
  strip("%[P%]", function() task.parallel = true end)
  strip("%(P%)", function() task.parallel = true end)
  strip("%[(US%d+)%]", function(s) task.story = s end)
  strip("%[(P%d)%]", function(p) task.priority = p end)
  title = title:gsub("%(depends on ([^%)]*)%)", function(list)
    for id in list:gmatch(ID) do task.depends[#task.depends + 1] = id:upper() end
    return " "
  end)
  return trim((title:gsub("%s%s+", " ")))
end

-- A list of references: "1.1, 2.3", "1.1-1.7", "All", "N/A", "REQ-4", "Requirement 2".
local function refs(text)
  local out = {}
  text = trim(text:gsub("_+$", ""):gsub("%*%*", ""))
  for part in text:gmatch("[^,;]+") do
    part = trim(part)
    if part ~= "" then
      local lo, hi = part:match("^(%d+%.%d+)%s*[%-–]%s*(%d+%.%d+)$")
      if lo then
        local p1, a = lo:match("^(%d+)%.(%d+)$")
        local p2, b = hi:match("^(%d+)%.(%d+)$")
        if p1 == p2 and tonumber(a) <= tonumber(b) then
          for i = tonumber(a), tonumber(b) do out[#out + 1] = p1 .. "." .. i end
        else
          out[#out + 1] = part
        end
      else
        out[#out + 1] = (part:gsub("^[Rr]equirements?%s+", ""))
      end
    end
  end
  return out
end

-- Ids in text, with ranges `T005-T011` expanded.
local function id_list(text)
  local out = {}
  for tok in text:gmatch("[^,%s]+") do
    local a, b = tok:match("^([Tt]%d+)%-([Tt]%d+)$")
    if a then
      local pa, na = a:upper():match("^(T)(%d+)$")
      local _, nb = b:upper():match("^(T)(%d+)$")
      for i = tonumber(na), tonumber(nb) do out[#out + 1] = pa .. string.format("%0" .. #na .. "d", i) end
    elseif tok:match("^" .. ID .. "$") then
      out[#out + 1] = tok:match("^[Tt]") and tok:upper() or (tok:gsub("%.$", ""))
    end
  end
  return out
end

-- A metadata line: label, value, and whether an underscore opened it (and did not close it).
local function metadata(line)
  local s = trim(line):gsub("^[-*+]%s+", "")
  local underscored = s:sub(1, 1) == "_"
  local body = s:gsub("^_", ""):gsub("^%*%*", "")
  local label, value = body:match("^([^:：]+)[:：]%s*(.*)$")
  if not label then return nil end
  label = trim(label:gsub("%*%*", "")):lower()
  local field = M.LABELS[label]
  if not field and label:match("^validates") then field = "requirements" end
  if not field then return nil end
  value = value:gsub("%*%*$", "")
  local closed = not underscored or value:match("_%s*$") ~= nil
  value = trim(value:gsub("_%s*$", ""))
  return field, value, underscored and not closed
end

---Parses a tasks.md: { path, tasks = { ... }, by_id = { [id] = task }, warnings = { "file:line: ..." } }.
---Each task: { id, title, state, optional, parallel, story, priority, parent, children, depends,
---requirements, files, leverage, boundary, purpose, prompt, validation, phase, line }.
function M.parse(name_or_path)
  local spec = locate(name_or_path)
  local path = spec.tasks
  local text = read_file(path)
  if not text then fail("qw.spec.parse: cannot read %s", path) end
  local out = { path = path, spec = spec, tasks = {}, by_id = {}, warnings = {}, blocks = {} }
  local function warn(line, fmt, ...) out.warnings[#out.warnings + 1] = ("%s:%d: " .. fmt):format(path, line, ...) end
  local nul = text:find("\0", 1, true)
  if nul then
    warn(select(2, text:sub(1, nul):gsub("\n", "")) + 1, "the file holds NUL bytes; they are read as spaces")
    text = text:gsub("%z", " ")
  end
  if not utf8.len(text) then
    local _, bad = utf8.len(text)
    local line = select(2, text:sub(1, bad):gsub("\n", "")) + 1
    warn(line, "the file is not valid UTF-8 (from byte %d); it is read as it is", bad)
  end
  local current, pending_heading, phase, meta_field
  local in_fence, fence, graph_section, graph_json, graph_line = false, nil, false, nil, nil
  local n = 0
  local function add(task)
    task.depends = task.depends or {}
    task.requirements, task.files, task.leverage, task.children = {}, {}, {}, {}
    task.phase = phase
    out.tasks[#out.tasks + 1] = task
    if task.id then
      if out.by_id[task.id] then
        task.duplicate_of = out.by_id[task.id].line
      else
        out.by_id[task.id] = task
      end
    end
    current, meta_field = task, nil
    return task
  end
  for line in (text .. (text:sub(-1) == "\n" and "" or "\n")):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", "")
    local f = line:match("^%s*(```+)") or line:match("^%s*(~~~+)")
    if f then
      if not in_fence then
        in_fence, fence = true, f
        if graph_section then graph_json, graph_line = {}, n + 1 end
      elseif f:sub(1, 1) == fence:sub(1, 1) and #f >= #fence then
        in_fence = false
        if graph_json then out.graph = { text = table.concat(graph_json, "\n"), line = graph_line }; graph_json = nil end
      end
    elseif in_fence then
      if graph_json then graph_json[#graph_json + 1] = line end
    else
      local hashes, heading = line:match("^(#+)%s+(.-)%s*#*%s*$")
      local indent, state, opt, rest = line:match("^(%s*)[-*+]%s+%[(.)%](%*?)%s*(.*)$")
      if hashes then
        graph_section = heading:lower():find("dependency graph", 1, true) ~= nil
        pending_heading, meta_field = nil, nil
        local ph = heading:match("^[Pp]hase%s+[%w%.]+") and heading
        if ph then phase = trim(ph); current = nil end
        local id, title = heading:match("^[Tt]ask%s+(" .. ID .. ")[:%.]?%s*(.*)$")
        if id then
          id = id:gsub("%.$", "")
          local t = add({ id = id:match("^[Tt]") and id:upper() or id, line = n, heading = true })
          t.title = take_markers(title, t)
          pending_heading = t
        elseif not ph then
          local pid, ptitle = heading:match("^(%d+)%.?%s+(.+)$")
          if pid and #hashes >= 2 then
            local t = add({ id = pid, line = n, heading = true, parent_heading = true })
            t.title = take_markers(ptitle, t)
          elseif #hashes <= 2 then
            current = nil
          end
        end
      elseif state then
        local id, title = take_id(rest)
        if not id and pending_heading and pending_heading.state == nil then
          -- the checkbox of a `#### Task 1.1: ...` heading
          pending_heading.state, pending_heading.optional = state, opt == "*"
          pending_heading.state_line = n
          if title ~= "" and (pending_heading.title or "") == "" then pending_heading.title = take_markers(title, pending_heading) end
          current = pending_heading
        else
          local t = add({ id = id, state = state, optional = opt == "*", line = n, indent = #indent })
          t.title = take_markers(title, t)
          pending_heading = nil
          if not id then warn(n, "a task with no id: '%s'", t.title) end
        end
      elseif current and trim(line) ~= "" then
        local field, value, open = metadata(line)
        if field then
          meta_field = open and field or nil
          local t = current
          if field == "requirements" then
            for _, r in ipairs(refs(value)) do t.requirements[#t.requirements + 1] = r end
            t.requirements_line = t.requirements_line or n
          elseif field == "depends" then
            for _, d in ipairs(id_list(value)) do t.depends[#t.depends + 1] = d end
            t.depends_line = n
          elseif field == "design" then
            t.design = t.design or {}
            for _, r in ipairs(refs(value)) do t.design[#t.design + 1] = r end
          elseif field == "files" or field == "leverage" then
            for p in value:gmatch("[^,]+") do
              p = trim(p:gsub("`", ""))
              if p ~= "" then table.insert(t[field], p) end
            end
          else
            t[field] = value ~= "" and value or t[field]
          end
        elseif meta_field == "prompt" then
          -- _Prompt: runs over several lines until its closing underscore
          local v = trim(line)
          local closed = v:match("_%s*$") ~= nil
          current.prompt = (current.prompt and current.prompt .. "\n" or "") .. trim(v:gsub("_%s*$", ""))
          if closed then meta_field = nil end
        else
          -- spec-kit prose: "T008 blocks T009, T015", "T005-T011 blocks T012-T018"
          local a, b = line:match("([Tt]%d+[%-%w]*)%s+blocks%s+(.+)$")
          if a then
            out.blocks[#out.blocks + 1] = { before = id_list(a), after = id_list(b), line = n }
          end
        end
      else
        local a, b = line:match("([Tt]%d+[%-%w]*)%s+blocks%s+(.+)$")
        if a then out.blocks[#out.blocks + 1] = { before = id_list(a), after = id_list(b), line = n } end
      end
    end
  end
  -- spec-kit's blocks prose: the later tasks depend on the earlier
  for _, b in ipairs(out.blocks) do
    for _, after in ipairs(b.after) do
      local t = out.by_id[after]
      if t then
        for _, before in ipairs(b.before) do t.depends[#t.depends + 1] = before end
      else
        warn(b.line, "'%s blocks %s': no task %s", table.concat(b.before, ","), table.concat(b.after, ","), after)
      end
    end
  end
  -- a dependency graph's waves: each wave after the one before
  if out.graph then
    local ok, g = pcall(qw.json.decode, out.graph.text)
    local waves = ok and type(g) == "table" and (g.waves or g) or nil
    if type(waves) ~= "table" then
      warn(out.graph.line, "the dependency graph is not JSON with waves: %s", ok and "no 'waves' list" or tostring(g))
    else
      local prev = {}
      for _, w in ipairs(waves) do
        local ids = type(w) == "table" and (w.tasks or w) or {}
        local these = {}
        for _, id in ipairs(ids) do
          id = tostring(id)
          local t = out.by_id[id]
          if t then
            for _, p in ipairs(prev) do t.depends[#t.depends + 1] = p end
            t.graph_wave = true
          else
            warn(out.graph.line, "the dependency graph names no task '%s'", id)
          end
          these[#these + 1] = id
        end
        prev = these
      end
    end
  end
  -- parents from the numbers: 1.2.3 -> 1.2 -> 1
  for _, t in ipairs(out.tasks) do
    if t.id and t.id:find(".", 1, true) then
      local p = t.id:match("^(.*)%.[^%.]+$")
      while p and not out.by_id[p] do p = p:match("^(.*)%.[^%.]+$") end
      if p then
        t.parent = p
        local parent = out.by_id[p]
        parent.children[#parent.children + 1] = t.id
      end
    end
    if t.state == nil then t.state = t.parent_heading and nil or " " end
  end
  -- a parent with no checkbox is done when its children are
  for _, t in ipairs(out.tasks) do
    if t.state == nil and #t.children > 0 then
      local all = true
      for _, c in ipairs(t.children) do
        local ct = out.by_id[c]
        if not (ct.state == "x" or ct.state == "X") then all = false end
      end
      t.derived_state = all and "x" or " "
    end
  end
  return out
end

local function done(t) return t.state == "x" or t.state == "X" or t.derived_state == "x" end
M.done = done

---Sets a task's checkbox state (" ", "-", "x", ...) in its tasks.md: only that character
---changes, the file is replaced atomically, and concurrent writers are serialised. Returns
---the state it replaced.
function M.set_state(name_or_path, id, state)
  if type(state) ~= "string" or #state ~= 1 then fail("qw.spec.set_state: the state is one character such as ' ', '-' or 'x'") end
  local p = M.parse(name_or_path)
  local t = p.by_id[tostring(id)]
  if not t then fail("qw.spec.set_state: %s has no task %s", p.path, tostring(id)) end
  if t.parent_heading or (t.heading and not t.state_line) then
    fail("qw.spec.set_state: %s:%d: task %s has no checkbox", p.path, t.line, t.id)
  end
  local ok, old = pcall(core._set_checkbox, p.path, t.state_line or t.line, t.id, state)
  if not ok then error(old, 2) end
  return old
end

---------------------------------------------------------------------------------------------
-- Requirements and design sections, for references

-- The headed sections of a markdown document: { { level, title, number, id, line, text,
-- criteria } }, each `text` whole with its subsections.
function M.sections(path)
  local text = path and read_file(path)
  if not text then return nil end
  local out, cur, in_fence = {}, nil, false
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:match("^%s*```") or line:match("^%s*~~~") then in_fence = not in_fence end
    local hashes, title = line:match("^(#+)%s+(.-)%s*#*%s*$")
    if hashes and not in_fence then
      cur = { level = #hashes, title = title, line = n, lines = { line }, criteria = 0 }
      cur.number = title:match("^[Rr]equirement%s+(%d+)") or title:match("^(%d+[%.%d]*)%.?%s")
      if cur.number then cur.number = cur.number:gsub("%.$", "") end
      cur.id = title:match("(REQ%-%d+)") or title:match("(FR%-%d+)") or title:match("(NFR%-%d+)")
      out[#out + 1] = cur
    elseif cur then
      cur.lines[#cur.lines + 1] = line
      if line:match("^%s*%d+%.%s") then cur.criteria = cur.criteria + 1 end
    end
  end
  -- a section is whole with its subsections: up to the next heading of its level or above
  for i, sec in ipairs(out) do
    local parts, criteria = {}, 0
    local j = i
    repeat
      parts[#parts + 1] = table.concat(out[j].lines, "\n")
      criteria = criteria + out[j].criteria
      j = j + 1
    until j > #out or out[j].level <= sec.level
    sec.text, sec.criteria, sec.own_criteria = table.concat(parts, "\n"), criteria, sec.criteria
    sec.index, sec.last = i, j - 1
  end
  return out
end

-- The section a requirement reference names, or nil: "2", "2.3" (criterion 3 of
-- requirement 2), "REQ-4", or a title.
function M.resolve(sections, ref)
  if not sections then return nil end
  local r = trim(ref)
  local req, crit = r:match("^(%d+)%.(%d+)$")
  local num = r:match("^(%d+)$")
  local id = r:match("^(%u+%-%d+)$")
  for _, s in ipairs(sections) do
    if id and s.id == id then return s end
    if id and s.number and ("REQ-" .. s.number) == id then return s end
    if num and s.number == num then return s end
    if req and s.number == r then return s end
    if req and s.number == req then
      if tonumber(crit) <= math.max(s.criteria, 1) or s.criteria == 0 then return s end
      return nil, ("requirement %s has %d acceptance criteria"):format(req, s.criteria)
    end
  end
  if not num and not req and not id then
    local low = r:lower()
    for _, s in ipairs(sections) do
      if s.title:lower() == low or s.title:lower():find(low, 1, true) then return s end
    end
  end
  return nil
end

---------------------------------------------------------------------------------------------
-- Context per task

-- The project folder of a spec (where .claude/steering lives).
local function project_root(spec)
  local dir = spec.dir or "."
  return dir:match("^(.*)/%.claude/specs/[^/]+$") or dir:match("^(.*)/%.kiro/specs/[^/]+$")
      or dir:match("^(.*)/specs/[^/]+$") or "."
end

-- The steering documents: { path, sections } for each that exists.
local function steering(root)
  local out = {}
  for _, rel in ipairs({ ".claude/steering/product.md", ".claude/steering/tech.md", ".claude/steering/structure.md",
                         ".kiro/steering/product.md", ".kiro/steering/tech.md", ".kiro/steering/structure.md",
                         "memory/constitution.md" }) do
    local path = (root == "." and "" or root .. "/") .. rel
    local secs = M.sections(path)
    if secs then out[#out + 1] = { path = path, sections = secs, bytes = #read_file(path) } end
  end
  return out
end

local SUMMARY = { "overview", "summary", "purpose", "vision", "principles", "introduction" }
local function is_summary(title)
  local low = title:lower()
  for _, w in ipairs(SUMMARY) do if low:find(w, 1, true) then return true end end
  return false
end

-- A document's summary: the text before its second heading, and sections named like one.
local function summary_of(secs)
  local out = {}
  if secs[1] then
    out[#out + 1] = { title = secs[1].title, text = table.concat(secs[1].lines, "\n") }
  end
  for i, sec in ipairs(secs) do
    if i > 1 and is_summary(sec.title) then out[#out + 1] = { title = sec.title, text = sec.text } end
  end
  return out
end

-- Whether a section's own lines (not its subsections') name a file.
local function names_file(sec, file)
  local base = file:match("([^/]+)$")
  local own = table.concat(sec.lines, "\n")
  return own:find(file, 1, true) ~= nil or (base and #base > 3 and own:find(base, 1, true) ~= nil)
end

-- About four bytes a token for English prose and code: the approximation --stats uses.
M.BYTES_PER_TOKEN = 4
local function tokens(bytes) return math.ceil(bytes / M.BYTES_PER_TOKEN) end

---The prompt an agent gets for one task, and what went into it:
---`text, { bytes, full_bytes, tokens, full_tokens, sections = {kept titles}, missing = {refs},
---referenced, kept_referenced }`. Referenced sections are always whole; a task that references
---nothing gets the design's overview. `opts.results` = { [task id] = summary } adds what its
---dependencies produced.
function M.context(name_or_path, id, opts)
  opts = opts or {}
  local p = type(name_or_path) == "table" and name_or_path or M.parse(name_or_path)
  local t = p.by_id[tostring(id)]
  if not t then fail("qw.spec.context: %s has no task %s", p.path, tostring(id)) end
  local spec = p.spec
  local reqs = M.sections(spec.requirements) or {}
  local design = M.sections(spec.design) or {}
  local steer = steering(project_root(spec))
  local parts, kept, missing, seen = {}, {}, {}, {}
  local referenced, kept_referenced = 0, 0
  local function add(s) parts[#parts + 1] = s end
  local function keep(doc, sec, why)
    seen[doc] = seen[doc] or {}
    -- a section kept already, or inside one kept already, is not repeated
    for _, v in ipairs(seen[doc]) do
      if v.index <= sec.index and v.last >= sec.index then return false end
    end
    seen[doc][#seen[doc] + 1] = sec
    kept[#kept + 1] = ("%s: %s"):format(doc:match("([^/]+)$"), sec.title)
    add((sec.text:gsub("%s+$", "")))
    return true
  end
  -- the task
  add(("# Task %s: %s"):format(t.id, t.title or ""))
  local meta = {}
  if t.parent then meta[#meta + 1] = ("Part of %s: %s"):format(t.parent, p.by_id[t.parent].title or "") end
  if t.phase then meta[#meta + 1] = "Phase: " .. t.phase end
  if #t.files > 0 then meta[#meta + 1] = "Files to touch: " .. table.concat(t.files, ", ") end
  if #t.leverage > 0 then meta[#meta + 1] = "Build on: " .. table.concat(t.leverage, ", ") end
  for _, k in ipairs({ "purpose", "boundary", "validation" }) do
    if t[k] then meta[#meta + 1] = k:sub(1, 1):upper() .. k:sub(2) .. ": " .. t[k] end
  end
  if #t.requirements > 0 then meta[#meta + 1] = "Requirements: " .. table.concat(t.requirements, ", ") end
  if #t.depends > 0 then meta[#meta + 1] = "After: " .. table.concat(t.depends, ", ") end
  if #meta > 0 then add(table.concat(meta, "\n")) end
  if t.prompt then add(t.prompt) end
  -- the requirements it references, whole
  local req_parts = #parts
  for _, r in ipairs(t.requirements) do
    local low = r:lower()
    if low == "all" then
      for _, sec in ipairs(reqs) do if sec.number or sec.id then referenced = referenced + 1; keep(spec.requirements, sec); kept_referenced = kept_referenced + 1 end end
    elseif low ~= "n/a" and low ~= "none" and low ~= "-" then
      referenced = referenced + 1
      local sec = M.resolve(reqs, r)
      if sec then
        keep(spec.requirements, sec)
        kept_referenced = kept_referenced + 1
      else
        missing[#missing + 1] = r
      end
    end
  end
  if #parts > req_parts then table.insert(parts, req_parts + 1, "## Requirements (" .. spec.requirements .. ")") end
  -- the design sections it references or that name its files
  local design_parts = #parts
  for _, r in ipairs(t.design or {}) do
    referenced = referenced + 1
    local sec = M.resolve(design, r)
    if sec then keep(spec.design, sec); kept_referenced = kept_referenced + 1 else missing[#missing + 1] = "design " .. r end
  end
  local files = {}
  for _, f in ipairs(t.files) do files[#files + 1] = f end
  for _, f in ipairs(t.leverage) do files[#files + 1] = f end
  for _, f in ipairs(files) do
    for i, sec in ipairs(design) do
      if i > 1 and names_file(sec, f) then keep(spec.design, sec) end
    end
  end
  if #parts == design_parts then
    -- nothing named: the design's overview, not everything
    for i, sec in ipairs(design) do
      if i > 1 and is_summary(sec.title) then keep(spec.design, sec) break end
    end
  end
  if #parts > design_parts then table.insert(parts, design_parts + 1, "## Design (" .. spec.design .. ")") end
  -- the steering documents' summaries
  local steer_parts = #parts
  for _, doc in ipairs(steer) do
    for _, s in ipairs(summary_of(doc.sections)) do
      add((s.text:gsub("%s+$", "")))
      kept[#kept + 1] = ("%s: %s"):format(doc.path:match("([^/]+)$"), s.title)
    end
  end
  if #parts > steer_parts then table.insert(parts, steer_parts + 1, "## Steering") end
  -- what its dependencies produced
  local results = opts.results or {}
  local dep_parts = #parts
  for _, d in ipairs(t.depends) do
    if results[d] then add(("### %s\n%s"):format(d, results[d])) end
  end
  if #parts > dep_parts then table.insert(parts, dep_parts + 1, "## What the tasks before it produced") end
  local text = table.concat(parts, "\n\n") .. "\n"
  local full = 0
  for _, path in ipairs({ spec.requirements, spec.design }) do
    local body = read_file(path)
    if body then full = full + #body end
  end
  for _, doc in ipairs(steer) do full = full + doc.bytes end
  return text, { bytes = #text, full_bytes = full, tokens = tokens(#text), full_tokens = tokens(full), sections = kept,
                 missing = missing, referenced = referenced, kept_referenced = kept_referenced }
end

---------------------------------------------------------------------------------------------
-- Lint

---What is wrong in a spec's tasks, as "file:line: message" (sorted by line).
function M.lint(name_or_path)
  local p = M.parse(name_or_path)
  local msgs = {}
  for _, w in ipairs(p.warnings) do msgs[#msgs + 1] = w end
  local function at(line, fmt, ...) msgs[#msgs + 1] = ("%s:%d: " .. fmt):format(p.path, line, ...) end
  local reqs = M.sections(p.spec.requirements)
  for _, t in ipairs(p.tasks) do
    if t.duplicate_of then at(t.line, "duplicate task id %s (first at line %d)", t.id, t.duplicate_of) end
    for _, d in ipairs(t.depends) do
      if not p.by_id[d] then at(t.depends_line or t.line, "task %s depends on %s, which is not a task here", t.id or "?", d) end
    end
    for _, r in ipairs(t.requirements) do
      local low = r:lower()
      if low ~= "all" and low ~= "n/a" and low ~= "none" and low ~= "-" then
        if not reqs then
          at(t.requirements_line or t.line, "task %s references requirement %s, but there is no %s", t.id or "?", r, p.spec.requirements)
          break
        end
        local s, why = M.resolve(reqs, r)
        if not s then
          at(t.requirements_line or t.line, "task %s references requirement %s, which %s", t.id or "?", r,
             why and ("does not exist (" .. why .. ")") or ("is not in " .. p.spec.requirements))
        end
      end
    end
    if (t.state == "x" or t.state == "X") and #t.children > 0 then
      for _, c in ipairs(t.children) do
        if not done(p.by_id[c]) then
          at(t.line, "task %s is marked done but its subtask %s (line %d) is not", t.id, c, p.by_id[c].line)
          break
        end
      end
    end
  end
  -- cycles (explicit dependencies)
  local color = {}
  local function visit(id, stack)
    color[id] = 1
    stack[#stack + 1] = id
    for _, d in ipairs(p.by_id[id].depends) do
      if p.by_id[d] then
        if color[d] == 1 then
          local i = 1
          while stack[i] ~= d do i = i + 1 end
          local cyc = { table.unpack(stack, i) }
          cyc[#cyc + 1] = d
          at(p.by_id[id].depends_line or p.by_id[id].line, "dependency cycle: %s", table.concat(cyc, " -> "))
        elseif not color[d] then
          visit(d, stack)
        end
      end
    end
    stack[#stack] = nil
    color[id] = 2
  end
  for _, t in ipairs(p.tasks) do
    if t.id and not color[t.id] and p.by_id[t.id] == t then visit(t.id, {}) end
  end
  local function lineof(m) return tonumber(m:match(":(%d+): ")) or 0 end
  table.sort(msgs, function(a, b) if lineof(a) ~= lineof(b) then return lineof(a) < lineof(b) end return a < b end)
  return msgs, p
end

---------------------------------------------------------------------------------------------
-- Planning

---Waves of tasks that can run at once: an array of arrays of task ids, with `why` ({ [id] =
---{reasons} }), `path`, and `stuck` (the ids a cycle kept out) as fields.
---From explicit dependencies (Depends, blocks prose, a graph), parents (a parent waits for its
---subtasks and is not run itself), phases (one after another), document order within a phase
---unless marked [P] (when the file states no dependencies at all), and files: two tasks that name the same file in
---Files or Leverage never share a wave. Done tasks are left out (`all = true` keeps them).
function M.plan(name_or_path, opts)
  opts = opts or {}
  local p = type(name_or_path) == "table" and name_or_path or M.parse(name_or_path)
  local deps, why = {}, {}
  local explicit = false
  for _, t in ipairs(p.tasks) do
    if t.id and #t.depends > 0 then explicit = true end
  end
  local runnable = {}
  for _, t in ipairs(p.tasks) do
    if t.id and p.by_id[t.id] == t and #t.children == 0 then runnable[#runnable + 1] = t end
  end
  local function need(t, d, reason)
    deps[t.id] = deps[t.id] or {}
    if d ~= t.id and not deps[t.id][d] then
      deps[t.id][d] = true
      why[t.id] = why[t.id] or {}
      why[t.id][#why[t.id] + 1] = reason
    end
  end
  -- what a dependency on a parent means: on all its runnable descendants
  local function leaves(id, acc)
    acc = acc or {}
    local t = p.by_id[id]
    if not t then return acc end
    if #t.children == 0 then acc[#acc + 1] = id end
    for _, c in ipairs(t.children) do leaves(c, acc) end
    return acc
  end
  for _, t in ipairs(runnable) do
    why[t.id] = why[t.id] or {}
    -- its own dependencies and its ancestors'
    local a = t
    while a do
      for _, d in ipairs(a.depends) do
        for _, leaf in ipairs(leaves(d)) do
          need(t, leaf, a == t and ("after " .. d .. " (depends)") or ("after " .. d .. " (its parent " .. a.id .. " depends on it)"))
        end
      end
      a = a.parent and p.by_id[a.parent]
    end
  end
  if not explicit then
    -- document order within a phase: a task waits for the one before it, unless both are [P]
    local prev_serial, since = nil, {}
    local cur_phase
    for _, t in ipairs(runnable) do
      if t.phase ~= cur_phase then cur_phase, prev_serial, since = t.phase, nil, {} end
      if t.parallel then
        if prev_serial then need(t, prev_serial, "after " .. prev_serial .. " (document order)") end
        since[#since + 1] = t.id
      else
        for _, s in ipairs(since) do need(t, s, "after " .. s .. " (document order, after the [P] tasks)") end
        if #since == 0 and prev_serial then need(t, prev_serial, "after " .. prev_serial .. " (document order)") end
        prev_serial, since = t.id, {}
      end
    end
  end
  do
    -- phases run one after another
    local last_of = {}
    local order = {}
    for _, t in ipairs(runnable) do
      if t.phase and not last_of[t.phase] then order[#order + 1] = t.phase end
      if t.phase then last_of[t.phase] = last_of[t.phase] or {}; table.insert(last_of[t.phase], t.id) end
    end
    for i = 2, #order do
      for _, t in ipairs(runnable) do
        if t.phase == order[i] then
          for _, d in ipairs(last_of[order[i - 1]]) do need(t, d, "after phase '" .. order[i - 1] .. "'") end
        end
      end
    end
  end
  -- Kahn's levels, with done tasks as already there and file overlaps pushed back
  local level, placed = {}, {}
  local todo = {}
  for _, t in ipairs(runnable) do
    if done(t) and not opts.all then placed[t.id] = 0 else todo[#todo + 1] = t end
  end
  local waves = {}
  local remaining = #todo
  local guard = 0
  while remaining > 0 do
    guard = guard + 1
    if guard > #todo + 1 then break end
    local wave, files_in_wave = {}, {}
    for _, t in ipairs(todo) do
      if not placed[t.id] then
        local ready = true
        for d in pairs(deps[t.id] or {}) do
          if p.by_id[d] and (placed[d] == nil or placed[d] == #waves + 1) then ready = false end
        end
        if ready then
          local clash
          for _, f in ipairs(t.files) do if files_in_wave[f] then clash = { f, files_in_wave[f] } break end end
          if not clash then for _, f in ipairs(t.leverage) do if files_in_wave[f] then clash = { f, files_in_wave[f] } break end end end
          if clash then
            why[t.id][#why[t.id] + 1] = ("not with %s: both name %s"):format(clash[2], clash[1])
          else
            wave[#wave + 1] = t.id
            placed[t.id] = #waves + 1
            for _, f in ipairs(t.files) do files_in_wave[f] = t.id end
            for _, f in ipairs(t.leverage) do files_in_wave[f] = files_in_wave[f] or t.id end
          end
        end
      end
    end
    if #wave == 0 then break end
    waves[#waves + 1] = wave
    remaining = remaining - #wave
  end
  local out = waves
  out.why, out.path = why, p.path
  if remaining > 0 then
    out.stuck = {}
    for _, t in ipairs(todo) do if not placed[t.id] then out.stuck[#out.stuck + 1] = t.id end end
  end
  for _, w in ipairs(waves) do
    for _, id in ipairs(w) do
      if #why[id] == 0 then why[id][1] = "nothing before it" end
    end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- Implementation: each task in a worktree of its own, merged back one at a time

-- What an implementation agent is told besides its context.
M.IMPLEMENT_INSTRUCTIONS = [[
You work in a git worktree of your own, on a branch made for this task. Make the change the
task asks for, in this folder only. Run the project's tests. Commit your work with git (one
or more commits); qw merges the branch when you are done. End with `STATUS: done`, or
`STATUS: blocked: <why>` when it cannot be done.]]

-- The last lines of an agent's answer: what the tasks after it are told it produced.
local function summary(text)
  text = trim(text or "")
  if #text > 600 then text = "..." .. text:sub(-600) end
  return text
end

---Implements a spec's open tasks, wave by wave (see `plan`): each task's agent runs in a git
---worktree of its own (`.qw/worktrees/NAME/ID`, branch `qw/NAME/ID` from `into`), up to
---`max_agents` at once, with the task's context; a task is verified (the agent's result is
---ok, the worktree has a commit or a change, `check` passes there), then merged into `into`
---one at a time in document order, with `check` run after each merge. Checkboxes go to `-`
---when a task starts and `x` after its merge. A conflict or a failing check leaves the task
---`-`, its worktree and branch kept for a person. Tasks already `x` are not run again, so a
---second call after a kill goes on where the first stopped.
---@param opts table { into, check, agent, repo, timeout, permission_mode, allowed_tools, model, on_event }
---@return table { ok, merged = {ids}, failed = { {id, error, files} }, kept = {worktree paths}, waves }
function M.implement(name, opts)
  opts = opts or {}
  local git = qw.git
  local repo = opts.repo or "."
  local into = opts.into or git.run(repo, "rev-parse", "--abbrev-ref", "HEAD")
  local report = { ok = true, merged = {}, failed = {}, kept = {}, waves = 0 }
  local results = {}
  local function event(kind, id, detail)
    if opts.on_event then opts.on_event(kind, id, detail) end
    qw.log.info(("spec %s: %s %s%s"):format(name, kind, id, detail and (": " .. detail) or ""))
  end
  local blocked = {}
  -- however this ends (done, failed, cancelled), the worktrees of this spec that hold nothing
  -- are removed; those with work are kept for the next run or a person
  local cleanup <close> = setmetatable({}, { __close = function()
    pcall(function()
      local prefix = ".qw/worktrees/" .. name .. "/"
      for _, w in ipairs(git.worktrees{ repo = repo }) do
        if w.path:find(prefix, 1, true) and not w.merged and w.commits == 0 and not w.changes then git.remove(w, { repo = repo }) end
      end
    end)
  end })
  while true do
    local p = M.parse(name)
    local plan = M.plan(p)
    -- the first wave of tasks that are neither done nor failed in this call
    local wave
    for _, w in ipairs(plan) do
      local open = {}
      for _, id in ipairs(w) do if not blocked[id] then open[#open + 1] = id end end
      if #open > 0 then wave = open break end
      -- a wave whose every task failed blocks the waves after it only through dependencies
    end
    if not wave then break end
    -- a task whose dependency failed in this call cannot start
    local runnable = {}
    for _, id in ipairs(wave) do
      local dep_failed
      for _, d in ipairs(p.by_id[id].depends) do if blocked[d] then dep_failed = d end end
      if dep_failed then
        blocked[id] = true
        report.failed[#report.failed + 1] = { id = id, error = "not started: " .. dep_failed .. " did not merge" }
      else
        runnable[#runnable + 1] = id
      end
    end
    if #runnable == 0 then goto continue end
    report.waves = report.waves + 1
    do
      -- worktrees one after another (git locks its admin files), agents in parallel
      local trees = {}
      for _, id in ipairs(runnable) do
        M.set_state(p.path, id, "-")
        trees[id] = git.worktree{ repo = repo, path = ".qw/worktrees/" .. p.spec.name .. "/" .. id,
                                  branch = "qw/" .. p.spec.name .. "/" .. id, base = into }
        event(trees[id].created and "started" or "resumed", id, trees[id].path)
      end
      local jobs = {}
      for i, id in ipairs(runnable) do
        jobs[i] = function()
          local text = M.context(p, id, { results = results })
          local t = p.by_id[id]
          local agent = opts.agent or (qw.router and qw.router.route({ id = id, title = t.title, files = t.files })) or "spec-task-executor"
          local r = qw.agent.run{ agent = agent, prompt = text .. "\n" .. M.IMPLEMENT_INSTRUCTIONS, cwd = trees[id].path,
                                  permission_mode = opts.permission_mode or "acceptEdits",
                                  allowed_tools = opts.allowed_tools or { "Bash", "Read", "Write", "Edit", "Glob", "Grep" },
                                  model = opts.model, timeout = opts.timeout, task = id, workflow = "spec:" .. p.spec.name,
                                  session = "resume", name = "task " .. id,
                                  -- for the hooks: the task_context policy gives this task's context
                                  env = { QW_SPEC = p.spec.name, QW_SPEC_TASK = id } }
          if not r.ok then return { ok = false, error = "the agent: " .. tostring(r.error) } end
          -- verified, not trusted: a commit or a change, and the check passes in the worktree
          local wt = trees[id].path
          local changes = git.run(wt, "status", "--porcelain")
          if changes ~= "" then
            git.run(wt, "add", "-A")
            git.run(wt, "commit", "-q", "-m", ("Task %s: %s (committed by qw)"):format(id, t.title or ""))
          end
          local commits = tonumber(git.run(wt, "rev-list", "--count", into .. ".." .. trees[id].branch)) or 0
          if commits == 0 then return { ok = false, error = "the agent reported done but made no change" } end
          if opts.check then
            local c = qw.exec(opts.check, { cwd = wt, name = "check of task " .. id })
            if not c.ok then return { ok = false, error = "its check failed in the worktree: " .. tostring(c.error) } end
          end
          -- the task's own check: `_Validation: \`command\`_`
          local own = t.validation and t.validation:match("`([^`]+)`")
          if own then
            local c = qw.exec(own, { cwd = wt, name = "validation of task " .. id })
            if not c.ok then return { ok = false, error = ("its validation `%s` failed: %s"):format(own, tostring(c.error)) } end
          end
          return { ok = true, text = r.text }
        end
      end
      local outcomes = qw.batch(jobs)
      -- the merge queue: one at a time, in document order
      for i, id in ipairs(runnable) do
        local o = outcomes[i]
        if o.ok then
          local m = git.merge(trees[id].branch, { repo = repo, into = into, check = opts.check,
                                                  message = ("Merge task %s of %s"):format(id, p.spec.name) })
          if m.ok then
            M.set_state(p.path, id, "x")
            results[id] = summary(o.text)
            report.merged[#report.merged + 1] = id
            local w = nil
            for _, x in ipairs(git.worktrees{ repo = repo }) do if x.path == trees[id].path then w = x end end
            if w then git.remove(w, { repo = repo }) end
            event("merged", id)
          else
            o = { ok = false, error = m.error, files = m.files }
          end
        end
        if not o.ok then
          blocked[id] = true
          report.ok = false
          report.failed[#report.failed + 1] = { id = id, error = o.error, files = o.files }
          report.kept[#report.kept + 1] = trees[id].path
          event("failed", id, o.error)
        end
      end
    end
    ::continue::
  end
  return report
end

---------------------------------------------------------------------------------------------
-- The phases, as one workflow per spec

M.PHASES = { "steering", "requirements", "requirements-validation", "requirements-approval", "design",
             "design-validation", "design-approval", "tasks", "tasks-validation", "tasks-approval",
             "implementation", "testing", "review" }

-- Who does each phase (policy: replace in .qw/policy.lua).
M.PHASE_AGENTS = {
  steering = "steering-context-manager", requirements = "product-manager",
  ["requirements-validation"] = "spec-requirements-validator", design = "architect",
  ["design-validation"] = "spec-design-validator", tasks = "architect", ["tasks-validation"] = "spec-task-validator",
  testing = "qa-engineer", review = "spec-implementation-reviewer",
}

-- What each agent phase is asked (policy too). `s` is the spec, `o` the run's options.
M.PHASE_PROMPTS = {
  steering = function(s) return ("Write the project's steering documents .claude/steering/product.md, tech.md and structure.md from what the codebase shows, starting from the templates qw installed. Keep each opening section short and exact: every task's prompt includes it.") end,
  requirements = function(s, o) return ("Write %s for the spec '%s' (the template: %s): numbered requirements (### Requirement N: Title), each with a user story and numbered EARS acceptance criteria. The feature: %s"):format(s.requirements, s.name, M.stdlib_dir() .. "/templates/spec/requirements.md", o.description or "see the spec's introduction") end,
  ["requirements-validation"] = function(s) return ("Check %s: every requirement has a user story and testable, numbered EARS criteria; nothing contradicts the steering documents. Do not edit it. End with STATUS: done when it can be approved, else STATUS: blocked: <what to fix>."):format(s.requirements) end,
  design = function(s) return ("Write %s for the spec '%s' from %s (the template: " .. M.stdlib_dir() .. "/templates/spec/design.md): an ## Overview first, one ### section per component with its file in the title, error handling and the testing strategy."):format(s.design, s.name, s.requirements) end,
  ["design-validation"] = function(s) return ("Check %s against %s: every requirement is served, the components name their files. Do not edit it. End with STATUS: done or STATUS: blocked: <what to fix>."):format(s.design, s.requirements) end,
  tasks = function(s) return ("Write %s for the spec '%s' from %s and %s (the template: " .. M.stdlib_dir() .. "/templates/spec/tasks.md): numbered checkbox tasks, each with Files:, _Requirements:_ and _Depends:_ where needed. Then run `qw spec lint %s` and fix what it reports."):format(s.tasks, s.name, s.requirements, s.design, s.name) end,
  ["tasks-validation"] = function(s) return ("Check %s: `qw spec lint %s` is clean, every requirement has a task, the dependencies are real. Do not edit it. End with STATUS: done or STATUS: blocked: <what to fix>."):format(s.tasks, s.name) end,
  testing = function(s) return ("Run the project's tests on the integration branch for the spec '%s' and report. Fix nothing. End with STATUS: done when they pass, else STATUS: blocked: <failures>."):format(s.name) end,
  review = function(s) return ("Review the implementation of the spec '%s' against %s and %s. End with VERDICT: approve or VERDICT: changes requested, and STATUS: done."):format(s.name, s.requirements, s.design) end,
}

local function said_blocked(text)
  return tostring(text or ""):find("STATUS: blocked", 1, true) ~= nil or tostring(text or ""):find("VERDICT: changes requested", 1, true) ~= nil
end

-- Waits for an approval of `phase` ("ask": a record made by `qw spec approve`; "file": the
-- file NAME/PHASE.approved), holding no slot; "auto" records one itself.
local function await_approval(s, doc, mode, poll)
  if mode == "auto" then
    M.approve(s.name, doc, { by = "auto" })
    return true
  end
  local announced = false
  while true do
    if mode == "file" then
      local f = s.dir .. "/" .. doc .. ".approved"
      if exists(f) then
        local by = trim(read_file(f) or "")
        M.approve(s.name, doc, { by = by ~= "" and by or "file" })
      end
    end
    if M.approval(s.name, doc).state == "approved" then return true end
    if not announced then
      qw.log.info(("spec %s: waiting for approval of %s (qw spec approve %s %s%s)"):format(s.name, doc, s.name, doc,
                  mode == "file" and (", or a file " .. s.dir .. "/" .. doc .. ".approved") or ""))
      announced = true
    end
    qw.sleep(poll or 1)
  end
end

---Runs a spec's phases as one resumable workflow (`spec:NAME`): steering when missing,
---requirements, their validation and approval, design (the same), tasks (the same),
---implementation (`implement`), testing, review. A phase that succeeded is kept on the
---next run unless a document it reads changed; a kill of qw resumes where it stopped.
---@param opts table { from, until, approve = "auto"|"ask"|"file", description, notes = { [phase] = text },
---  check, into, agent (for implementation), poll }
---@return table the workflow's report, with `implementation` (implement's report)
function M.run(name, opts)
  opts = opts or {}
  local mode = opts.approve or "ask"
  if mode ~= "auto" and mode ~= "ask" and mode ~= "file" then fail("qw.spec.run: approve is auto, ask or file (got '%s')", tostring(mode)) end
  local s = M.find(name)
  if not s then
    -- a spec that does not exist yet gets its folder; its agents write the documents
    -- (starting from the templates, which their prompts name)
    if type(name) ~= "string" or not name:match("^[%w][%w_.%-]*$") then
      fail("qw.spec.run: a spec name is letters, digits, '-', '_' and '.' (got '%s')", tostring(name))
    end
    M.mkdirs(".claude/specs/" .. name)
    s = M.find(name)
  end
  local first, last = 1, #M.PHASES
  for i, ph in ipairs(M.PHASES) do
    if ph == opts.from then first = i end
    if ph == opts["until"] then last = i end
  end
  for _, k in ipairs({ "from", "until" }) do
    if opts[k] then
      local known = false
      for _, ph in ipairs(M.PHASES) do if ph == opts[k] then known = true end end
      if not known then fail("qw.spec.run: no phase '%s' (%s)", opts[k], table.concat(M.PHASES, ", ")) end
    end
  end
  -- documents as absolute paths: task inputs and outputs are read relative to the script
  local cwd = core._cwd()
  local function abs(path) return path:sub(1, 1) == "/" and path or (cwd .. "/" .. path:gsub("^%./", "")) end
  local docs = { requirements = abs(s.requirements), design = abs(s.design), tasks = abs(s.tasks) }
  -- tasks.md with its checkbox states blanked: what the tasks' validation and approval read,
  -- so that the marks qw sets while tasks run are not an edit
  local blanked = cwd .. "/.qw/drafts/" .. s.name .. "/tasks.states-blank.md"
  local function refresh_blanked()
    local text = read_file(docs.tasks)
    if text and M.blank_states(text) ~= read_file(blanked) then
      M.mkdirs(".qw/drafts/" .. s.name)
      local f = assert(io.open(blanked .. ".new", "wb")); f:write(M.blank_states(text)); f:close()
      assert(os.rename(blanked .. ".new", blanked))
    end
  end
  refresh_blanked()
  local wf = qw.workflow("spec:" .. s.name)
  -- each phase that runs says so in the spec's phases (qw spec status shows the last)
  local function phase_task(ph, what, o)
    if type(what) ~= "function" then return wf:task(ph, what, o) end
    return wf:task(ph, function(...)
      core._spec_phase(s.name, ph, "started", "qw spec run")
      local ok, r = pcall(what, ...)
      core._spec_phase(s.name, ph, ok and "complete" or "failed", "qw spec run")
      if not ok then error(r, 0) end
      return r
    end, o)
  end
  local prev
  local impl_report
  local function note(ph) return opts.notes and opts.notes[ph] and ("\n\n" .. opts.notes[ph]) or "" end
  for i = first, last do
    local ph = M.PHASES[i]
    local deps = prev and { prev } or nil
    local doc = ph:match("^(%a+)%-") or ph
    if ph == "steering" then
      if not exists(project_root(s) .. "/.claude/steering/product.md") then
        phase_task(ph, { agent = M.PHASE_AGENTS[ph], prompt = M.PHASE_PROMPTS[ph](s, opts) .. note(ph), permission_mode = "acceptEdits" },
                { deps = deps })
        prev = ph
      end
    elseif ph == "requirements" or ph == "design" or ph == "tasks" then
      local inputs = {}
      if ph == "design" then inputs = { docs.requirements } elseif ph == "tasks" then inputs = { docs.requirements, docs.design } end
      -- The CLI refuses edits under .claude/ in every mode short of bypassPermissions (it
      -- calls them sensitive files), so the agent writes a draft under .qw/drafts and qw
      -- moves it into place.
      local draft = cwd .. "/.qw/drafts/" .. s.name .. "/" .. ph .. ".md"
      phase_task(ph, function()
        M.mkdirs(".qw/drafts/" .. s.name)
        local current = read_file(docs[ph])
        if current then
          local f = assert(io.open(draft, "wb")); f:write(current); f:close()
        else
          os.remove(draft)
        end
        local prompt = M.PHASE_PROMPTS[ph](s, opts):gsub(s[ph]:gsub("%p", "%%%0"), draft, 1)
        local r = qw.agent.run{ agent = M.PHASE_AGENTS[ph], workflow = "spec:" .. s.name, task = ph, session = "resume",
                                prompt = prompt .. ("\n\nWrite the document to %s (qw puts it in place as %s)."):format(draft, s[ph]) .. note(ph),
                                permission_mode = "acceptEdits", allowed_tools = { "Read", "Write", "Edit", "Glob", "Grep", "Bash(qw:*)" } }
        if not r.ok then error(("%s: the agent: %s"):format(ph, tostring(r.error)), 0) end
        if said_blocked(r.text) then error(("%s: %s"):format(ph, summary(r.text)), 0) end
        local text = read_file(draft)
        if not text or trim(text) == "" then error(("%s: the agent wrote nothing to %s"):format(ph, draft), 0) end
        assert(os.rename(draft, docs[ph]))
        if ph == "tasks" then refresh_blanked() end
        return r
      end, { deps = deps, inputs = (i > first) and inputs or nil, outputs = ph == "tasks" and { docs[ph], blanked } or { docs[ph] } })
      prev = ph
    elseif ph:match("%-validation$") then
      local check = function()
        local r = qw.agent.run{ agent = M.PHASE_AGENTS[ph], prompt = M.PHASE_PROMPTS[ph](s, opts) .. note(ph), workflow = "spec:" .. s.name,
                                task = ph, allowed_tools = { "Read", "Glob", "Grep", "Bash(qw:*)" } }
        if not r.ok then error(("%s: the agent: %s"):format(ph, tostring(r.error)), 0) end
        if said_blocked(r.text) then error(("%s: %s"):format(ph, summary(r.text)), 0) end
        return r
      end
      phase_task(ph, check, { deps = deps, inputs = { doc == "tasks" and blanked or docs[doc] } })
      prev = ph
    elseif ph:match("%-approval$") then
      phase_task(ph, function() return await_approval(s, doc, mode, opts.poll) end,
              { deps = deps, inputs = { doc == "tasks" and blanked or docs[doc] } })
      prev = ph
    elseif ph == "implementation" then
      phase_task(ph, function()
        impl_report = M.implement(s.name, { into = opts.into, check = opts.check, agent = opts.agent })
        if not impl_report.ok then
          local parts = {}
          for _, f in ipairs(impl_report.failed) do parts[#parts + 1] = f.id .. ": " .. tostring(f.error) end
          error("implementation: " .. table.concat(parts, "; "), 0)
        end
        return impl_report
      end, { deps = deps })
      prev = ph
    elseif ph == "testing" then
      phase_task(ph, function()
        if opts.check then
          local c = qw.exec(opts.check, { name = "the project's tests" })
          if not c.ok then error("testing: " .. tostring(c.error), 0) end
          return c
        end
        local r = qw.agent.run{ agent = M.PHASE_AGENTS[ph], prompt = M.PHASE_PROMPTS[ph](s, opts) .. note(ph), workflow = "spec:" .. s.name, task = ph }
        if not r.ok or said_blocked(r.text) then error("testing: " .. tostring(r.error or summary(r.text)), 0) end
        return r
      end, { deps = deps })
      prev = ph
    elseif ph == "review" then
      phase_task(ph, function()
        local r = qw.agent.run{ agent = M.PHASE_AGENTS[ph], prompt = M.PHASE_PROMPTS[ph](s, opts) .. note(ph), workflow = "spec:" .. s.name,
                                task = ph, allowed_tools = { "Read", "Glob", "Grep", "Bash(git diff:*)", "Bash(git log:*)", "Bash(qw:*)" } }
        if not r.ok or said_blocked(r.text) then error("review: " .. tostring(r.error or summary(r.text)), 0) end
        return r
      end, { deps = deps })
      prev = ph
    end
  end
  -- which phases will run and which are kept from an earlier run (and why)
  local _, planned = wf:plan()
  local report = wf:run()
  report.implementation = impl_report
  report.kept, report.reasons = {}, {}
  for _, t in ipairs(planned) do
    if not t.run then report.kept[#report.kept + 1] = t.id end
    report.reasons[t.id] = t.reason
  end
  return report
end

---------------------------------------------------------------------------------------------
-- New specs, from templates

-- The stdlib folder (its templates/ are the defaults).
function M.stdlib_dir()
  local init = package.searchpath("qw.init", package.path)
  return init and init:match("^(.*)/qw/init%.lua$") or "stdlib"
end

---The text of a template (`spec/requirements.md`, `steering/tech.md`, ...): the project's
---`.qw/templates/...` when it has one, else stdlib's.
function M.template(rel)
  return read_file(".qw/templates/" .. rel) or read_file(M.stdlib_dir() .. "/templates/" .. rel)
end

local function mkdirs(path)
  local built = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    built = built .. "/" .. part
    core._mkdir(built)
  end
end
M.mkdirs = mkdirs

---Makes `.claude/specs/NAME/` with requirements.md, design.md and tasks.md from the
---templates; refuses when it exists. Returns the folder.
function M.new(name, description)
  if type(name) ~= "string" or not name:match("^[%w][%w_.%-]*$") then
    fail("qw.spec.new: a spec name is letters, digits, '-', '_' and '.' (got '%s')", tostring(name))
  end
  local dir = ".claude/specs/" .. name
  if exists(dir .. "/requirements.md") or exists(dir .. "/tasks.md") then fail("qw.spec.new: %s exists already", dir) end
  mkdirs(dir)
  for _, doc in ipairs({ "requirements", "design", "tasks" }) do
    local text = M.template("spec/" .. doc .. ".md") or ""
    text = text:gsub("{{name}}", name):gsub("{{description}}", description or "<what the feature is and why>")
    local f = assert(io.open(dir .. "/" .. doc .. ".md", "wb"))
    f:write(text)
    f:close()
  end
  return dir
end

-- The phases whose document a person approves.
M.APPROVED = { "requirements", "design", "tasks" }

local function who()
  return os.getenv("QW_USER") or os.getenv("USER") or os.getenv("LOGNAME") or "unknown"
end

-- The hash an approval keeps: of the document, with the checkbox states of a tasks.md left
-- out (qw sets them as tasks run; that is not an edit to approve again).
local function blank_states(text)
  return (text:gsub("\n(%s*[-*+]%s+)%[.%]", "\n%1[ ]"):gsub("^(%s*[-*+]%s+)%[.%]", "%1[ ]"))
end

M.blank_states = blank_states

local function approval_hash(phase, text)
  if phase == "tasks" then text = blank_states(text) end
  return tostring(core._hash(text))
end

---Records that `by` (default: $QW_USER, else $USER) approves the phase's document as it is
---now. Returns the record { phase, document, hash, by }.
function M.approve(name, phase, opts)
  opts = opts or {}
  local spec = locate(name)
  local known = false
  for _, p in ipairs(M.APPROVED) do if p == phase then known = true end end
  if not known then fail("qw.spec.approve: phase '%s' has no document to approve (%s)", tostring(phase), table.concat(M.APPROVED, ", ")) end
  local text = read_file(spec[phase])
  if not text then fail("qw.spec.approve: %s does not exist yet", spec[phase]) end
  local rec = { phase = phase, document = spec[phase], hash = approval_hash(phase, text), by = opts.by or who() }
  core._approve(spec.name, phase, rec.document, rec.hash, rec.by)
  return rec
end

---Whether the phase's document is approved as it is now: { state = "approved" | "changed"
---(approved, then edited: it needs approval again) | "none", by, at }.
function M.approval(name, phase)
  local spec = locate(name)
  local a = core._approval(spec.name, phase)
  if not a then return { state = "none" } end
  local text = read_file(spec[phase])
  local same = text and approval_hash(phase, text) == a.hash
  return { state = same and "approved" or "changed", by = a.by, at = a.at }
end

---Where a spec stands: { name, documents = { [doc] = path or false }, counts = { done, active,
---open, optional }, next = {ids of the first wave}, problems = n, phases = { {phase, state,
---source, at} } (oldest first), phase (the last), suggestions = { {id, command, state, error} } }.
function M.status(name)
  local spec = locate(name)
  local out = { name = spec.name, documents = {}, counts = { done = 0, active = 0, open = 0, other = 0 } }
  out.approvals = {}
  for _, doc in ipairs({ "requirements", "design", "tasks" }) do
    out.documents[doc] = exists(spec[doc]) and spec[doc] or false
    out.approvals[doc] = out.documents[doc] and M.approval(name, doc).state or "none"
  end
  if out.documents.tasks then
    local p = M.parse(name)
    for _, t in ipairs(p.tasks) do
      if t.id and #t.children == 0 then
        if done(t) then out.counts.done = out.counts.done + 1
        elseif t.state == "-" then out.counts.active = out.counts.active + 1
        elseif t.state == " " then out.counts.open = out.counts.open + 1
        else out.counts.other = out.counts.other + 1 end
      end
    end
    local plan = M.plan(p)
    out.next = plan[1] or {}
    out.waves = #plan
    out.problems = #M.lint(name)
  end
  -- the phase changes the hooks and qw spec noticed, and what is queued for this spec
  -- (from the store when there is one: asking makes none)
  out.phases, out.suggestions = {}, {}
  if exists(core._state_path()) then
    out.phases = core._spec_phases(spec.name)
    for _, sug in ipairs(qw.suggestions.list{ states = { "pending", "running", "failed" } }) do
      if sug.spec == spec.name then out.suggestions[#out.suggestions + 1] = { id = sug.id, command = sug.command, state = sug.state, error = sug.error } end
    end
  end
  out.phase = out.phases[#out.phases]
  return out
end

-- The phases as the dashboard draws them; a step such as requirements-approval belongs to
-- the phase before its dash.
M.MAIN_PHASES = { "steering", "requirements", "design", "tasks", "implementation", "testing", "review" }

---The phase changes recorded for a spec, oldest first ({} without a store: asking makes none).
function M.phases(name)
  if not exists(core._state_path()) then return {} end
  return core._spec_phases(name)
end

---What the dashboard shows of a spec: ``M.status`` with the phases in order (each with its
---last recorded state), the task tree of tasks.md with each task's depth, and each task's
---worktree, branch and merge state (`merged`, `unmerged`, `kept` or nil).
function M.view(name)
  local st = M.status(name)
  local spec = locate(name)
  local out = { name = st.name, kind = spec.kind, dir = spec.dir, documents = st.documents, approvals = st.approvals,
                counts = st.counts, suggestions = st.suggestions, phase = st.phase, phases = {}, tasks = {}, warnings = {} }
  local last = {}
  for _, ph in ipairs(st.phases) do
    local main = ph.phase:match("^([^-]+)") or ph.phase
    last[main] = { phase = main, step = ph.phase, state = ph.state, at = ph.at, source = ph.source }
  end
  for i, p in ipairs(M.MAIN_PHASES) do out.phases[i] = last[p] or { phase = p } end
  if not st.documents.tasks then return out end
  local p = M.parse(name)
  out.warnings = p.warnings
  -- worktrees and branches of this spec's tasks, as qw.spec.implement names them
  local root = project_root(spec)
  local trees, merged, branches = {}, {}, {}
  local git = qw.git
  local okw, list = pcall(git.worktrees, { repo = root })
  if okw then for _, w in ipairs(list) do if w.branch then trees[w.branch] = w end end end
  local prefix = "qw/" .. spec.name .. "/"
  local refs = qw.exec({ "git", "-C", root, "for-each-ref", "--format=%(refname:short)", "refs/heads/" .. prefix }, { name = "git for-each-ref" })
  if refs.ok then for b in refs.stdout:gmatch("[^\n]+") do branches[b] = true end end
  local m = qw.exec({ "git", "-C", root, "branch", "--format=%(refname:short)", "--merged", "HEAD", "--list", prefix .. "*" }, { name = "git branch --merged" })
  if m.ok then for b in m.stdout:gmatch("[^\n]+") do merged[b] = true end end
  for i, t in ipairs(p.tasks) do
    local depth, a = 0, t
    while a.parent and p.by_id[a.parent] and depth < 32 do depth = depth + 1; a = p.by_id[a.parent] end
    local row = { id = t.id, title = t.title, state = t.state, derived_state = t.derived_state, parent = t.parent,
                  depth = depth, line = t.line, depends = #t.depends > 0 and t.depends or nil,
                  parallel = t.parallel or nil, optional = t.optional or nil }
    if t.id then
      local branch = prefix .. t.id
      local w = trees[branch]
      if w then
        row.worktree, row.branch = w.path, branch
        row.merge = w.merged and "merged" or (t.state == "-" and "kept") or "unmerged"
      elseif branches[branch] then
        row.branch = branch
        row.merge = merged[branch] and "merged" or "unmerged"
      end
    end
    out.tasks[i] = row
  end
  return out
end

---------------------------------------------------------------------------------------------
-- The command line: qw spec list|tasks|lint|plan

local function print_json(v) io.write(qw.json.encode(v), "\n") end

local function task_json(t)
  return { id = t.id, title = t.title, state = t.state, derived_state = t.derived_state, optional = t.optional or nil,
           parallel = t.parallel or nil, story = t.story, priority = t.priority, parent = t.parent,
           children = #t.children > 0 and t.children or nil, depends = #t.depends > 0 and t.depends or nil,
           requirements = #t.requirements > 0 and t.requirements or nil, files = #t.files > 0 and t.files or nil,
           leverage = #t.leverage > 0 and t.leverage or nil, boundary = t.boundary, purpose = t.purpose,
           prompt = t.prompt, validation = t.validation, phase = t.phase, line = t.line }
end

---`qw spec ACTION [NAME] [--json]`; returns the exit code.
function M.report(o)
  local action, name, json = o.action, o.name, o.json
  if action == "list" then
    local specs = M.list()
    if json then
      print_json(specs)
    elseif #specs == 0 then
      print("no specs (.claude/specs/NAME, specs/NNN-NAME or .kiro/specs/NAME)")
    else
      for _, s in ipairs(specs) do
        print(("%-24s %-9s %s"):format(s.name, s.kind, s.dir))
      end
    end
    return 0
  end
  if not name then
    io.stderr:write(("qw spec %s: which spec? (qw spec list shows them)\n"):format(tostring(action)))
    return 2
  end
  local ok, res = pcall(function()
    if action == "tasks" then
      local p = M.parse(name)
      for _, w in ipairs(p.warnings) do io.stderr:write(w, "\n") end
      if json then
        local list = {}
        for i, t in ipairs(p.tasks) do list[i] = task_json(t) end
        print_json({ path = p.path, tasks = list, warnings = p.warnings })
      else
        for _, t in ipairs(p.tasks) do
          local depth = 0
          local a = t
          while a.parent do depth = depth + 1; a = p.by_id[a.parent] end
          print(("%s[%s] %-8s %s%s%s"):format(string.rep("  ", depth), t.state or t.derived_state or " ", t.id or "-", t.title or "",
                t.parallel and " [P]" or "", #t.depends > 0 and ("  (after " .. table.concat(t.depends, ", ") .. ")") or ""))
        end
      end
      return 0
    elseif action == "lint" then
      local msgs = M.lint(name)
      if json then print_json(msgs) else for _, m in ipairs(msgs) do print(m) end end
      return #msgs == 0 and 0 or 1
    elseif action == "plan" then
      local plan = M.plan(name)
      if json then
        local waves = {}
        for i, w in ipairs(plan) do waves[i] = w end
        print_json({ path = plan.path, waves = waves, why = plan.why, stuck = plan.stuck })
      else
        for i, w in ipairs(plan) do
          print(("wave %d: %s"):format(i, table.concat(w, ", ")))
          for _, id in ipairs(w) do print(("  %-8s %s"):format(id, table.concat(plan.why[id], "; "))) end
        end
        if plan.stuck then print("not placed (a cycle, see qw spec lint): " .. table.concat(plan.stuck, ", ")) end
      end
      return plan.stuck and 1 or 0
    end
    if action == "new" then
      local dir = M.new(name, o.task)
      print("wrote " .. dir .. "/requirements.md, design.md, tasks.md (from the templates)")
      return 0
    end
    if action == "status" then
      local st = M.status(name)
      if json then print_json(st) return 0 end
      print(("spec %s"):format(st.name))
      for _, doc in ipairs({ "requirements", "design", "tasks" }) do
        local a = st.approvals[doc]
        print(("  %-13s %s%s"):format(doc, st.documents[doc] or "missing",
              not st.documents[doc] and "" or a == "approved" and "  (approved)"
              or a == "changed" and "  (changed since it was approved: needs approval again)" or "  (not approved)"))
      end
      if st.documents.tasks then
        local c = st.counts
        print(("  tasks         %d done, %d in progress, %d open%s; %d wave%s to go"):format(c.done, c.active, c.open,
              c.other > 0 and (", " .. c.other .. " marked otherwise") or "", st.waves, st.waves == 1 and "" or "s"))
        print(("  next          %s"):format(#st.next > 0 and table.concat(st.next, ", ") or "nothing: all done"))
        print(("  lint          %s"):format(st.problems == 0 and "no problems" or (st.problems .. " problem(s): qw spec lint " .. st.name)))
      end
      if st.phase then
        print(("  phase         %s %s (%s, %s)"):format(st.phase.phase, st.phase.state, st.phase.source or "-", os.date("%Y-%m-%d %H:%M:%S", math.floor(st.phase.at))))
      end
      for _, sug in ipairs(st.suggestions) do
        print(("  queued        #%d %s (%s%s)"):format(sug.id, sug.command, sug.state, sug.error and (": " .. sug.error) or ""))
      end
      return 0
    end
    if action == "run" then
      local r = M.run(name, { from = o.from, ["until"] = o["until"], approve = o.approve, check = o.check,
                              description = o.task })
      local state = {}
      for _, id in ipairs(r.succeeded or {}) do state[id] = "ok" end
      for _, id in ipairs(r.kept or {}) do state[id] = "kept" end
      for _, id in ipairs(r.failed or {}) do state[id] = "failed" end
      for _, id in ipairs(r.skipped or {}) do state[id] = "skipped" end
      for _, ph in ipairs(M.PHASES) do
        if state[ph] then
          local res = r.results[ph]
          print(("%-24s %s%s"):format(ph, state[ph], state[ph] == "failed" and res and res.error and (": " .. tostring(res.error)) or ""))
        end
      end
      if r.implementation then
        local im = r.implementation
        print(("implementation: %d merged%s"):format(#im.merged, #im.kept > 0 and (", kept for a person: " .. table.concat(im.kept, ", ")) or ""))
      end
      return r.ok and 0 or 1
    end
    if action == "approve" then
      if not o.task then
        io.stderr:write("qw spec approve: which phase? (qw spec approve NAME requirements|design|tasks)\n")
        return 2
      end
      local rec = M.approve(name, o.task, { by = o.by })
      print(("approved %s of %s (%s) by %s"):format(rec.phase, name, rec.document, rec.by))
      core._spec_phase(M.locate(name).name, o.task, "approved", "qw spec approve")
      -- what follows an approved document is queued for qw consume (the hooks' phase policy)
      local id, why = qw.hooks.advance(M.locate(name).name, o.task, "qw spec approve")
      if id then
        local q = qw.suggestions.list{ states = { "pending", "running" } }
        for _, sug in ipairs(q) do if sug.id == id then print(("queued #%d %s"):format(id, sug.command)) end end
      elseif why and not why:match("^nothing follows") then
        print("not queued: " .. why)
      end
      return 0
    end
    if action == "mark" then
      local id, state = o.task, o.state
      if not id or not state then
        io.stderr:write("qw spec mark: qw spec mark NAME TASK STATE (STATE: x done, - in progress, space open)\n")
        return 2
      end
      if state == "open" or state == "" then state = " " end
      local old = M.set_state(name, id, state)
      print(("task %s: [%s] -> [%s]"):format(id, old, state))
      return 0
    end
    if action == "context" then
      if not o.task then
        io.stderr:write("qw spec context: which task? (qw spec context NAME TASK)\n")
        return 2
      end
      local text, st = M.context(name, o.task)
      if json then
        print_json({ text = text, stats = st })
      elseif o.stats then
        local saved = st.full_bytes > 0 and 100 * (1 - st.bytes / st.full_bytes) or 0
        print(("task %s: %d bytes, about %d tokens; all of steering, requirements and design: %d bytes, about %d tokens (%.0f%% smaller)")
              :format(o.task, st.bytes, st.tokens, st.full_bytes, st.full_tokens, saved))
        print(("references: %d, kept whole: %d%s"):format(st.referenced, st.kept_referenced,
              #st.missing > 0 and (", not found: " .. table.concat(st.missing, ", ")) or ""))
        for _, sec in ipairs(st.sections) do print("  kept " .. sec) end
      else
        io.write(text)
      end
      return 0
    end
    io.stderr:write(("qw spec: unknown action '%s' (list, new, status, approve, run, tasks, lint, plan, context, mark)\n"):format(tostring(action)))
    return 2
  end)
  if not ok then
    local msg = tostring(res):gsub("^[^:]+:%d+: ", ""):gsub("^qw%.spec[%.%w]*: ", "")
    io.stderr:write("qw spec: ", msg, "\n")
    return 1
  end
  return res
end

return M
