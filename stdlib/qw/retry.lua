--- Retry policies. A policy is any callable `policy(result, attempt) -> delay_seconds | nil`:
--- nil (or false) means stop and keep the last result.
local M = {}

local function check_opts(name, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("qw.retry.%s: options must be a table (got %s)"):format(name, type(opts)), 3)
  end
  for k in pairs(opts) do
    if not allowed[k] then error(("qw.retry.%s: unknown option '%s'"):format(name, tostring(k)), 3) end
  end
  return opts
end

local function number_opt(name, opts, key, default, min)
  local v = opts[key]
  if v == nil then return default end
  if type(v) ~= "number" or v < min then
    error(("qw.retry.%s: %s must be a number >= %s (got %s)"):format(name, key, min, tostring(v)), 4)
  end
  return v
end

local function policy(fields, fn)
  return setmetatable(fields, { __call = function(_, r, attempt) return fn(r, attempt) end })
end

---Whether `p` can be called as a policy.
function M.is_policy(p)
  if type(p) == "function" then return true end
  local mt = getmetatable(p)
  return type(mt) == "table" and mt.__call ~= nil
end

---Never retries.
M.none = policy({ attempts = 1 }, function() return nil end)

---Retries with the same delay between attempts.
---@param opts table? { attempts = 3, delay = 1, retry_on = function(result) -> bool }
function M.fixed(opts)
  opts = check_opts("fixed", opts, { attempts = true, delay = true, retry_on = true })
  local attempts = math.floor(number_opt("fixed", opts, "attempts", 3, 1))
  local delay = number_opt("fixed", opts, "delay", 1, 0)
  local retry_on = opts.retry_on
  return policy({ attempts = attempts, delay = delay }, function(r, attempt)
    if attempt >= attempts then return nil end
    if retry_on and not retry_on(r) then return nil end
    return delay
  end)
end

---Retries with delays growing by `factor`, capped at `max_delay`, with +-`jitter` spread.
---@param opts table? { attempts = 5, initial = 1, factor = 2, max_delay = 60, jitter = 0.2, retry_on = fn }
function M.exponential(opts)
  opts = check_opts("exponential", opts,
    { attempts = true, initial = true, factor = true, max_delay = true, jitter = true, retry_on = true })
  local attempts = math.floor(number_opt("exponential", opts, "attempts", 5, 1))
  local initial = number_opt("exponential", opts, "initial", 1, 0)
  local factor = number_opt("exponential", opts, "factor", 2, 1)
  local max_delay = number_opt("exponential", opts, "max_delay", 60, 0)
  local jitter = number_opt("exponential", opts, "jitter", 0.2, 0)
  local retry_on = opts.retry_on
  return policy({ attempts = attempts, initial = initial, factor = factor, max_delay = max_delay, jitter = jitter },
    function(r, attempt)
      if attempt >= attempts then return nil end
      if retry_on and not retry_on(r) then return nil end
      local d = math.min(initial * factor ^ (attempt - 1), max_delay)
      if jitter > 0 then d = d * (1 + jitter * (2 * math.random() - 1)) end
      return math.max(d, 0)
    end)
end

---Calls `attempt_fn` until it succeeds or `policy` says stop; waits between attempts
---(yielding, so other work goes on). Sets `attempts` on a table result.
---@param finish function? applied to the final result
function M.run(policy, attempt_fn, finish)
  local attempt = 1
  while true do
    local r = attempt_fn()
    if type(r) == "table" then r.attempts = attempt end
    local ok = type(r) == "table" and r.ok
    if ok then return finish and finish(r) or r end
    local delay = policy(r, attempt)
    if not delay then return finish and finish(r) or r end
    if type(delay) ~= "number" or delay < 0 then
      error(("retry policy returned %s; expected a delay in seconds or nil"):format(tostring(delay)), 0)
    end
    qw.sleep(delay)
    attempt = attempt + 1
  end
end

return M
