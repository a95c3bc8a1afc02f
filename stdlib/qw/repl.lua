--- The REPL's policy: how a line's results are shown, and what `:help` says.
local inspect = require("qw.inspect")

local M = {}

---Options for printing results; change them in the REPL (`require("qw.repl").print_opts.depth = 6`).
M.print_opts = { depth = 4, items = 50, width = 100 }

---Runs a compiled line and prints what it returned, tab-separated, as `lua` does.
function M.run(chunk)
  local r = table.pack(chunk())
  if r.n == 0 then return end
  local parts = {}
  for i = 1, r.n do parts[i] = inspect(r[i], M.print_opts) end
  print(table.concat(parts, "\t"))
end

M.help = [[
Quantumwala REPL: Lua 5.4 with the qw library.
  1 + 2                     expressions are printed (tables pretty-printed)
  qw.exec{"ls", "-l"}       run a command and see its result table
  qw.batch({...}, {max_concurrent = 4})   run commands and functions in parallel
  qw.inspect(v)             the printer, as a function
Commands:
  :help                     this text
  :load FILE                run a Lua file here (its globals stay)
  :reload                   re-read stdlib and project modules (package.loaded) without restarting
  :quit                     leave (or Ctrl-D)
Keys: Tab completes names and fields (qw.ex<Tab>), Ctrl-C cancels the running line and its
processes, Up/Down walk the history (kept across sessions).]]

return M
