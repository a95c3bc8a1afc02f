import Glibc
import QuantumwalaCore
import Testing

/// What descriptors a command gets: 0-2 and those qw itself was started with, never a file
/// the script has open (which would keep it open for writing in every command started
/// meanwhile, and make running it fail with "Text file busy").
@Suite(.serialized)
struct DescriptorTests {
    /// The user's case: a script writes a helper with io.open while a long command runs,
    /// then runs the helper. The long command must not hold the helper open.
    @Test func aHelperWrittenWhileACommandRunsCanBeRun() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/helper.lua", """
            local f = assert(io.open("helper.sh", "w"))
            local long = qw.spawn{ "sleep", "30" }             -- started while helper.sh is open
            f:write("#!/bin/sh\\necho helper ran\\n")
            f:close()
            assert(qw.exec{ "chmod", "+x", "helper.sh" }.ok)
            local r = qw.exec{ "./helper.sh" }
            long:kill()
            print(r.ok, r.stdout, r.error)
            """)
        let r = qw(["run", "helper.lua"], cwd: dir)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout == "true\thelper ran\n\tnil\n")
    }

    @Test func commandsGetTheDescriptorsQwWasStartedWithButNotTheScriptsFiles() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/fds.lua", """
            local f = assert(io.open("opened-by-the-script", "w"))
            local r = qw.exec{ "sh", "-c", "for f in /proc/$$/fd/*; do readlink $f; done" }
            f:close()
            io.write(r.stdout)
            """)
        // fd 7 is open (without close-on-exec) when qw starts, as a make jobserver's pipe would be
        let r = runProgram(["sh", "-c", "exec 7>\"$0/inherited\"; exec \"$1\" run fds.lua", dir, qwBinary],
                           env: qwTestEnv, cwd: dir)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.contains(dir + "/inherited"))
        #expect(!r.stdout.contains("opened-by-the-script"))
    }
}
