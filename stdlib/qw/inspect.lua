--- Turns Lua values into readable text for the REPL: tables pretty-printed with sorted
--- keys, limited depth and item counts, cycles marked.
local M = {}

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not KEYWORDS[s]
end

local function quote(s, max)
  if #s > max then s = s:sub(1, max) .. "..." end
  return (("%q"):format(s):gsub("\\\n", "\\n"))
end

local TYPE_ORDER = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (TYPE_ORDER[ta] or 9) < (TYPE_ORDER[tb] or 9) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

---Renders `v` as text.
---@param v any
---@param opts table? { depth = 4, items = 50, width = 80, string_length = 200, indent = "  " }
---@return string
function M.inspect(v, opts)
  opts = opts or {}
  local max_depth = opts.depth or 4
  local max_items = opts.items or 50
  local width = opts.width or 80
  local max_str = opts.string_length or 200
  local indent = opts.indent or "  "
  local seen = {}

  local function render(x, depth)
    local t = type(x)
    if t == "string" then return quote(x, max_str) end
    if t == "number" then
      if math.type(x) == "float" and x == math.floor(x) and x > -1e15 and x < 1e15 then
        return ("%.1f"):format(x)
      end
      return tostring(x)
    end
    if t ~= "table" then
      if t == "nil" or t == "boolean" then return tostring(x) end
      local mt = getmetatable(x)
      if mt and mt.__tostring then return tostring(x) end
      return ("<%s>"):format(tostring(x))
    end
    if seen[x] then return "<cycle>" end
    local mt = getmetatable(x)
    if mt and rawget(mt, "__tostring") then return tostring(x) end
    if depth >= max_depth then return "{...}" end
    seen[x] = true
    local parts, n = {}, #x
    for i = 1, math.min(n, max_items) do parts[#parts + 1] = render(x[i], depth + 1) end
    local keys = {}
    for k in pairs(x) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, key_less)
    local shown = math.min(n, max_items)
    for _, k in ipairs(keys) do
      if shown >= max_items then break end
      shown = shown + 1
      local ks = is_identifier(k) and k or ("[" .. render(k, max_depth) .. "]")
      parts[#parts + 1] = ks .. " = " .. render(x[k], depth + 1)
    end
    local total = n + #keys
    if total > shown then parts[#parts + 1] = ("... (%d more)"):format(total - shown) end
    seen[x] = nil
    if #parts == 0 then return "{}" end
    local flat = "{ " .. table.concat(parts, ", ") .. " }"
    if #flat + depth * #indent <= width and not flat:find("\n") then return flat end
    local pad = indent:rep(depth + 1)
    return "{\n" .. pad .. table.concat(parts, ",\n" .. pad) .. "\n" .. indent:rep(depth) .. "}"
  end

  return render(v, 0)
end

return setmetatable(M, { __call = function(_, v, opts) return M.inspect(v, opts) end })
