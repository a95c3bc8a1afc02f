-- The project's hook policy: `qw hook` runs this file on every Claude Code hook event it is
-- registered for (.claude/settings.json). qw init wrote it; it is yours to change.

-- Headless runs (claude -p, and the agent runs qw starts) may write the spec and steering
-- documents under .claude/ and run qw: the CLI refuses those without an allow rule.
qw.hooks.enable("permissions")

-- Deny rm -r, and writes, outside the project and its worktrees:
-- qw.hooks.enable("guard_rm")
-- qw.hooks.enable("guard_writes")

-- A complete spec document waits for `qw spec approve NAME DOC`; "auto" approves it:
-- qw.hooks.approvals = "auto"

-- Rules of your own (return nil for no opinion):
-- qw.hooks.on("PreToolUse", function(ev)
--   if ev.tool_name == "Bash" and tostring(ev.tool_input.command):find("git push", 1, true) then
--     return { deny = "agents do not push; a person does" }
--   end
-- end)
