--- Git worktrees for parallel work: one folder and one branch per task, made from a base
--- branch, reused when a run resumes, and removed only when nothing in them would be lost.
---
--- `qw.git.worktree{ path, branch, base, repo }` makes (or finds) one; `qw.git.worktrees()`
--- lists them with what they hold; `qw.git.merge(branch, { into, check })` merges one back; `qw.git.gc{ dry_run }` removes those whose branch is
--- merged into its base, or that have no commits and no changes, and never one with work
--- that is not merged. The base of each branch is kept in git's own config
--- (`branch.NAME.qwBase`), so any qw process, and a person, sees it.
local M = {}

local function fail(fmt, ...) error(fmt:format(...), 3) end

-- Runs git in `repo`; the result of qw.exec.
local function git(repo, ...)
  return qw.exec({ "git", "-C", repo or ".", ... }, { name = "git " .. (select(1, ...) or "") })
end

local function git_ok(repo, ...)
  local r = git(repo, ...)
  if not r.ok then
    local args = table.concat({ ... }, " ")
    error(("git %s: %s"):format(args, (r.stderr ~= "" and r.stderr or r.stdout):gsub("%s+$", "")), 3)
  end
  return (r.stdout:gsub("%s+$", ""))
end
M.run = git_ok

-- The top folder of the repository `repo` is in.
local function toplevel(repo)
  return git_ok(repo, "rev-parse", "--show-toplevel")
end

---Makes the worktree `path` on a new branch `branch` from `base` (default: the current
---branch), or returns the one that is there already (a resumed run). Returns
---{ path, branch, base, created }.
function M.worktree(o)
  if type(o) ~= "table" or type(o.path) ~= "string" or type(o.branch) ~= "string" then
    fail("qw.git.worktree: expects { path = FOLDER, branch = NAME [, base = BRANCH, repo = FOLDER] }")
  end
  local repo = o.repo or "."
  local top = toplevel(repo)
  local path = o.path:sub(1, 1) == "/" and o.path or (top .. "/" .. o.path)
  local base = o.base or git_ok(repo, "rev-parse", "--abbrev-ref", "HEAD")
  for _, w in ipairs(M.worktrees{ repo = repo, all = true }) do
    if w.path == path then
      if w.branch ~= o.branch then
        fail("qw.git.worktree: %s is a worktree of branch %s, not %s", path, tostring(w.branch), o.branch)
      end
      return { path = path, branch = o.branch, base = w.base or base, created = false }
    end
  end
  local exists = git(repo, "rev-parse", "--verify", "--quiet", "refs/heads/" .. o.branch).ok
  if exists then
    git_ok(repo, "worktree", "add", path, o.branch)
  else
    local at = git_ok(repo, "rev-parse", base)
    git_ok(repo, "worktree", "add", "-b", o.branch, path, base)
    git_ok(repo, "config", "branch." .. o.branch .. ".qwBase", base)
    git_ok(repo, "config", "branch." .. o.branch .. ".qwBaseCommit", at)
  end
  return { path = path, branch = o.branch, base = base, created = true }
end

---The worktrees of the repository (but the main one), each { path, branch, head, base,
---locked, merged, commits, changes }: `commits` is how many commits the branch has that its
---base does not, `changes` whether its folder has uncommitted changes. Without `all`, only
---those on qw's branches (qw/...).
function M.worktrees(o)
  o = o or {}
  local repo = o.repo or "."
  local out, cur = {}, nil
  local text = git_ok(repo, "worktree", "list", "--porcelain")
  local first = true
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^worktree ") then
      cur = { path = line:sub(10) }
      if first then cur.main = true end
      first = false
      out[#out + 1] = cur
    elseif cur and line:match("^HEAD ") then cur.head = line:sub(6)
    elseif cur and line:match("^branch ") then cur.branch = line:sub(8):gsub("^refs/heads/", "")
    elseif cur and line:match("^locked") then cur.locked = true
    elseif cur and line:match("^prunable") then cur.prunable = true
    end
  end
  local list = {}
  for _, w in ipairs(out) do
    if not w.main and (o.all or (w.branch and w.branch:match("^qw/"))) then
      if w.branch then
        local r = git(repo, "config", "--get", "branch." .. w.branch .. ".qwBase")
        w.base = r.ok and r.stdout:gsub("%s+$", "") or nil
      end
      if w.base and not o.quick then
        local c = git(repo, "rev-list", "--count", w.base .. ".." .. w.branch)
        w.commits = c.ok and tonumber((c.stdout:gsub("%s+$", ""))) or nil
        local from = git(repo, "config", "--get", "branch." .. w.branch .. ".qwBaseCommit")
        from = from.ok and from.stdout:gsub("%s+$", "") or nil
        -- merged: its commits are in the base (a fast-forward leaves it none of its own)
        w.merged = w.head ~= from and git(repo, "merge-base", "--is-ancestor", w.branch, w.base).ok or false
      end
      if not o.quick and not w.prunable then
        local s = git(w.path, "status", "--porcelain")
        w.changes = s.ok and s.stdout ~= ""
      end
      list[#list + 1] = w
    end
  end
  return list
end

-- Why a worktree may go (or nil and why not).
local function removable(w)
  if w.prunable then return "its folder is gone" end
  if w.changes then return nil, "uncommitted changes" end
  if w.locked then return nil, "locked" end
  if w.merged then return ("merged into %s"):format(w.base) end
  if w.commits == 0 then return "no commits and no changes" end
  if w.commits == nil then return nil, "no known base branch" end
  return nil, ("%d commit%s not merged into %s"):format(w.commits, w.commits == 1 and "" or "s", w.base)
end
M.removable = removable

---Removes one worktree and its branch when nothing would be lost (see `removable`);
---`force` removes it anyway. Returns true, or false and why not.
function M.remove(w, o)
  o = o or {}
  local repo = o.repo or "."
  local why, keep = removable(w)
  if not why and not o.force then return false, keep end
  if w.prunable then
    git_ok(repo, "worktree", "prune")
  else
    if o.force then git_ok(repo, "worktree", "remove", "--force", w.path) else git_ok(repo, "worktree", "remove", w.path) end
  end
  if w.branch then
    -- -D: a branch with no commits of its own is not "merged" to git, and has nothing to lose
    git(repo, "branch", (w.merged or w.commits == 0) and "-D" or (o.force and "-D" or "-d"), w.branch)
    git(repo, "config", "--remove-section", "branch." .. w.branch)
  end
  return true, why
end

---Removes every qw worktree that can go: { removed = { {path, why} }, kept = { {path, why} } }.
function M.gc(o)
  o = o or {}
  local out = { removed = {}, kept = {} }
  for _, w in ipairs(M.worktrees{ repo = o.repo }) do
    local why, keep = removable(w)
    if why then
      if not o.dry_run then M.remove(w, { repo = o.repo }) end
      out.removed[#out.removed + 1] = { path = w.path, branch = w.branch, why = why }
    else
      out.kept[#out.kept + 1] = { path = w.path, branch = w.branch, why = keep }
    end
  end
  return out
end

-- The worktree that has `branch` checked out, made under .qw/worktrees/_integration when none has.
local function checkout_of(repo, branch)
  local top = toplevel(repo)
  for _, w in ipairs(M.worktrees{ repo = repo, all = true, quick = true }) do
    if w.branch == branch then return w.path end
  end
  local cur = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
  if cur.ok and cur.stdout:gsub("%s+$", "") == branch then return top end
  local path = top .. "/.qw/worktrees/_integration/" .. branch:gsub("/", "_")
  git_ok(repo, "worktree", "add", path, branch)
  return path
end

---Merges `branch` into `into` (default: the current branch), then runs `check` (a command,
---in the merged tree) when given. A conflict or a failing check leaves `into` as it was
---(the merge is aborted or undone) and the branch as it is, for a person. Merges are meant
---to be made one at a time (a merge queue), in dependency order.
---@return table { ok, commit, conflict = bool, files = {conflicting paths}, check = exec result, error }
function M.merge(branch, o)
  o = o or {}
  local repo = o.repo or "."
  if type(branch) ~= "string" or branch == "" then fail("qw.git.merge: a branch name is needed") end
  local into = o.into or git_ok(repo, "rev-parse", "--abbrev-ref", "HEAD")
  local wt = checkout_of(repo, into)
  -- local changes (a tasks.md whose checkboxes qw sets) may stay: git refuses a merge that
  -- would overwrite them, and an undone merge keeps them (reset --keep)
  local before = git_ok(wt, "rev-parse", "HEAD")
  local r = git(wt, "merge", "--no-ff", "--no-edit", "-m", o.message or ("Merge " .. branch), branch)
  if not r.ok then
    local files = {}
    local u = git(wt, "diff", "--name-only", "--diff-filter=U")
    for f in u.stdout:gmatch("[^\n]+") do files[#files + 1] = f end
    git(wt, "merge", "--abort")
    if #files == 0 then
      return { ok = false, error = ("git merge %s: %s"):format(branch, (r.stderr ~= "" and r.stderr or r.stdout):gsub("%s+$", "")) }
    end
    return { ok = false, conflict = true, files = files,
             error = ("%s conflicts with %s in %s"):format(branch, into, table.concat(files, ", ")) }
  end
  local commit = git_ok(wt, "rev-parse", "HEAD")
  if o.check then
    local c = qw.exec(o.check, { cwd = wt, name = "check after merging " .. branch })
    if not c.ok then
      git_ok(wt, "reset", "--keep", before)
      return { ok = false, check = c, error = ("the check failed after merging %s (%s); %s is back at %s")
               :format(branch, c.error or ("exit " .. tostring(c.code)), into, before:sub(1, 12)) }
    end
    return { ok = true, commit = commit, check = c }
  end
  return { ok = true, commit = commit }
end

---`qw worktrees [--gc [--dry-run]]`; returns the exit code.
function M.report(o)
  local ok, res = pcall(function()
    if o.gc then
      local r = M.gc{ dry_run = o.dry_run }
      for _, w in ipairs(r.removed) do print(("%s %s  (%s)"):format(o.dry_run and "would remove" or "removed", w.path, w.why)) end
      for _, w in ipairs(r.kept) do print(("kept %s  (%s)"):format(w.path, w.why)) end
      print(("%d %s, %d kept%s"):format(#r.removed, o.dry_run and "to remove" or "removed", #r.kept,
            o.dry_run and " (dry run: nothing removed)" or ""))
      return 0
    end
    local list = M.worktrees{}
    if #list == 0 then print("no qw worktrees") return 0 end
    for _, w in ipairs(list) do
      local why, keep = removable(w)
      print(("%s  %s  from %s: %s"):format(w.path, w.branch or "(detached)", w.base or "?", why and ("can go, " .. why) or keep))
    end
    return 0
  end)
  if not ok then
    io.stderr:write("qw worktrees: ", (tostring(res):gsub("^[^:]+:%d+: ", "")), "\n")
    return 1
  end
  return res
end

return M
