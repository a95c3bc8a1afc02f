import Glibc
import Testing

/// qw.git.worktree and `qw worktrees [--gc [--dry-run]]` on a real git repository: a
/// worktree per task, reused on resume; gc removes the merged and the empty ones with their
/// branches, and keeps unmerged commits and uncommitted changes.
struct WorktreeTests {
    func repo() -> String {
        let dir = makeTempDir()
        _ = qwShell("cd '\(dir)' && git init -q -b main && git config user.email t@example.com && git config user.name t"
                    + " && echo a > a && git add a && git commit -qm init")
        return dir
    }

    @Test func aWorktreePerTaskIsMadeOnceAndReused() throws {
        let dir = repo()
        defer { removeTree(dir) }
        let r = qw(["-e", """
            local a = qw.git.worktree{ path = ".qw/worktrees/demo/1.1", branch = "qw/demo/1.1" }
            local b = qw.git.worktree{ path = ".qw/worktrees/demo/1.1", branch = "qw/demo/1.1" }
            print(a.created, b.created, a.base, a.path == b.path)
            print(pcall(qw.git.worktree, { path = ".qw/worktrees/demo/1.1", branch = "qw/demo/other" }))
            """], cwd: dir)
        #expect(r.stdout.hasPrefix("true\tfalse\tmain\ttrue\nfalse\t"), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("is a worktree of branch qw/demo/1.1, not qw/demo/other"))
        #expect(qwShell("cd '\(dir)' && git config --get branch.qw/demo/1.1.qwBase") == "main\n")
    }

    @Test func gcRemovesOnlyWhatHoldsNothingUnmerged() throws {
        let dir = repo()
        defer { removeTree(dir) }
        #expect(qw(["-e", """
            for _, id in ipairs{ "merged", "empty", "unmerged", "dirty" } do
              qw.git.worktree{ path = ".qw/worktrees/demo/" .. id, branch = "qw/demo/" .. id }
            end
            """], cwd: dir).code == 0)
        let w = dir + "/.qw/worktrees/demo"
        _ = qwShell("cd '\(w)/merged' && echo m > m && git add m && git commit -qm m && cd '\(dir)' && git merge -q qw/demo/merged"
                    + " && cd '\(w)/unmerged' && echo u > u && git add u && git commit -qm u && echo d > '\(w)/dirty/d'")
        let list = qw(["worktrees"], cwd: dir)
        #expect(list.stdout == """
            \(w)/dirty  qw/demo/dirty  from main: uncommitted changes
            \(w)/empty  qw/demo/empty  from main: can go, no commits and no changes
            \(w)/merged  qw/demo/merged  from main: can go, merged into main
            \(w)/unmerged  qw/demo/unmerged  from main: 1 commit not merged into main

            """, "\(list.stdout)\(list.stderr)")
        let dry = qw(["worktrees", "--gc", "--dry-run"], cwd: dir)
        #expect(dry.stdout.hasSuffix("2 to remove, 2 kept (dry run: nothing removed)\n"), "\(dry.stdout)")
        #expect(qwShell("cd '\(dir)' && git worktree list | wc -l") == "5\n")
        let gc = qw(["worktrees", "--gc"], cwd: dir)
        #expect(gc.stdout.hasSuffix("2 removed, 2 kept\n"), "\(gc.stdout)")
        #expect(qwShell("cd '\(dir)' && git branch --format='%(refname:short)'") == "main\nqw/demo/dirty\nqw/demo/unmerged\n")
        #expect(access(w + "/merged", F_OK) != 0 && access(w + "/empty", F_OK) != 0)
        #expect(readText(w + "/dirty/d") == "d\n", "the uncommitted change is still there")
        #expect(qwShell("cd '\(dir)' && git log --oneline qw/demo/unmerged | head -1").hasSuffix(" u\n"))
    }

    /// Merging back one at a time: two tasks merge, a third that conflicts is reported with
    /// its file and leaves main as it was, a fourth whose check fails is undone.
    @Test func mergesOneAtATimeAndLeavesMainAsItWasOnAConflictOrAFailedCheck() throws {
        let dir = repo()
        defer { removeTree(dir) }
        _ = qwShell("cd '\(dir)' && echo base > x && git add x && git commit -qm x")
        #expect(qw(["-e", """
            for _, id in ipairs{ "a", "b", "c", "d" } do qw.git.worktree{ path = ".qw/worktrees/s/" .. id, branch = "qw/s/" .. id } end
            """], cwd: dir).code == 0)
        let w = dir + "/.qw/worktrees/s"
        _ = qwShell("cd '\(w)/a' && echo from-a > x && git commit -qam a && cd '\(w)/b' && echo b > y && git add y && git commit -qm b"
                    + " && cd '\(w)/c' && echo from-c > x && git commit -qam c && cd '\(w)/d' && touch broken && git add broken && git commit -qm d")
        let r = qw(["-e", """
            local check = { "sh", "-c", "test ! -e broken" }
            for _, id in ipairs{ "a", "b", "c", "d" } do
              local m = qw.git.merge("qw/s/" .. id, { into = "main", check = check })
              print(id, m.ok, m.conflict or false, table.concat(m.files or {}, ","), m.error or "")
            end
            """], cwd: dir)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 4, "\(r.stdout)\(r.stderr)")
        #expect(lines[0] == "a\ttrue\tfalse\t\t")
        #expect(lines[1] == "b\ttrue\tfalse\t\t")
        #expect(lines[2] == "c\tfalse\ttrue\tx\tqw/s/c conflicts with main in x")
        #expect(lines[3].hasPrefix("d\tfalse\tfalse\t\tthe check failed after merging qw/s/d (exited with code 1); main is back at "), "\(lines[3])")
        #expect(readText(dir + "/x") == "from-a\n" && readText(dir + "/y") == "b\n" && access(dir + "/broken", F_OK) != 0)
        #expect(qwShell("cd '\(dir)' && git status --porcelain --untracked-files=no").isEmpty, "main is clean")
        // the two merged worktrees can go; the conflicting and the failing ones hold work
        let gc = qw(["worktrees", "--gc"], cwd: dir)
        #expect(gc.stdout.hasSuffix("2 removed, 2 kept\n"), "\(gc.stdout)")
    }
}
