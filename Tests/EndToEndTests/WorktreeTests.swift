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
}
