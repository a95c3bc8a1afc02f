--- Durable state (see lua-api.md, "Durable state"): values are nil, booleans, numbers,
--- strings and tables of these, stored as JSON in the project's SQLite store and shared by
--- every qw process that uses it.
---
--- Writes are optimistic: `update` and `transaction` note the versions of what they read and
--- commit only if nobody changed those keys meanwhile; otherwise they run their function
--- again with fresh values. So those functions may run more than once: keep them free of
--- side effects other than the `tx` calls.
local core = ...
local M = {}

local DELETED = setmetatable({}, { __name = "qw.state.deleted" })
local MAX_TRIES = 10000

local function check_key(fn, key)
  if type(key) ~= "string" or key == "" then
    error(("qw.state.%s: the key must be a non-empty string (got %s)"):format(fn, key == "" and "an empty string" or type(key)), 3)
  end
end

---The value stored under `key`, or nil.
function M.get(key)
  check_key("get", key)
  return (core._state_get(key))
end

---Stores `value` under `key` (nil deletes it).
function M.set(key, value)
  check_key("set", key)
  if value == nil then
    core._state_commit({}, { key }, {})
  else
    core._state_commit({ [key] = value }, {}, {})
  end
end

---Removes `key`.
function M.delete(key)
  check_key("delete", key)
  core._state_commit({}, { key }, {})
end

---The keys that start with `prefix` (all keys without one), sorted.
function M.keys(prefix)
  if prefix ~= nil and type(prefix) ~= "string" then
    error(("qw.state.keys: the prefix must be a string (got %s)"):format(type(prefix)), 2)
  end
  return core._state_keys(prefix or "")
end

---Atomically replaces the value of `key` with `fn(old)` (nil deletes); returns the new value.
---Safe against writers in other processes: `fn` runs again when one got there first.
function M.update(key, fn)
  check_key("update", key)
  if type(fn) ~= "function" then
    error(("qw.state.update: the second argument must be a function (got %s)"):format(type(fn)), 2)
  end
  for _ = 1, MAX_TRIES do
    local old, version = core._state_get(key)
    local new = fn(old)
    local ok
    if new == nil then
      ok = core._state_commit({}, { key }, { [key] = version })
    else
      ok = core._state_commit({ [key] = new }, {}, { [key] = version })
    end
    if ok then return new end
  end
  error(("qw.state.update: '%s' kept changing under %d attempts"):format(key, MAX_TRIES), 2)
end

---Runs `fn(tx)` with tx.get/tx.set/tx.delete/tx.update; commits all of its writes at once,
---or none when `fn` raises. Returns what `fn` returns.
function M.transaction(fn)
  if type(fn) ~= "function" then
    error(("qw.state.transaction: expects a function(tx) (got %s)"):format(type(fn)), 2)
  end
  for _ = 1, MAX_TRIES do
    local versions, writes = {}, {}
    local tx = {}
    function tx.get(key)
      check_key("get", key)
      local w = writes[key]
      if w ~= nil then
        if w == DELETED then return nil end
        return w
      end
      local v, version = core._state_get(key)
      if versions[key] == nil then versions[key] = version end
      return v
    end
    function tx.set(key, value)
      check_key("set", key)
      if versions[key] == nil and writes[key] == nil then versions[key] = select(2, core._state_get(key)) end
      writes[key] = value == nil and DELETED or value
    end
    function tx.delete(key) tx.set(key, nil) end
    function tx.update(key, f)
      local new = f(tx.get(key))
      tx.set(key, new)
      return new
    end
    local results = table.pack(fn(tx)) -- an error here leaves the store untouched
    local sets, deletes = {}, {}
    for k, v in pairs(writes) do
      if v == DELETED then deletes[#deletes + 1] = k else sets[k] = v end
    end
    if core._state_commit(sets, deletes, versions) then return table.unpack(results, 1, results.n) end
  end
  error(("qw.state.transaction: the keys kept changing under %d attempts"):format(MAX_TRIES), 2)
end

return M
