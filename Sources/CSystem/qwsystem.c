#include "qwsystem.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <termios.h>

extern char **environ;

/* ---- Interruption ---------------------------------------------------------------------- */

static volatile sig_atomic_t qw_interrupt_reason;
static int qw_wake_pipe[2] = {-1, -1};

int qw_wake_fd(void) { return qw_wake_pipe[0]; }

void qw_drain_wake(void) {
    char buf[64];
    while (qw_wake_pipe[0] >= 0 && read(qw_wake_pipe[0], buf, sizeof buf) > 0) {}
}

int qw_take_interrupt(void) {
    int r = qw_interrupt_reason;
    qw_interrupt_reason = 0;
    return r;
}
int qw_peek_interrupt(void) { return qw_interrupt_reason; }

static qw_interrupt_fn qw_interrupt_callback;
void qw_set_interrupt_callback(qw_interrupt_fn fn) { qw_interrupt_callback = fn; }

void qw_request_stop(int reason) {
    int saved = errno;
    qw_interrupt_reason = reason;
    if (qw_interrupt_callback) qw_interrupt_callback(reason);
    if (qw_wake_pipe[1] >= 0) {
        ssize_t w = write(qw_wake_pipe[1], "!", 1);
        (void)w;
    }
    errno = saved;
}

static void on_interrupt(int sig) { qw_request_stop(sig == SIGALRM ? 2 : 1); }

static void on_terminate(int sig) {
    qw_kill_all_groups(300);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void qw_atexit(void) { qw_kill_all_groups(300); }

void qw_install_signal_handlers(void) {
    if (qw_wake_pipe[0] < 0) {
        if (pipe2(qw_wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0) qw_wake_pipe[0] = qw_wake_pipe[1] = -1;
        atexit(qw_atexit);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = on_terminate;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

void qw_set_time_limit(double seconds) {
    struct itimerval it;
    memset(&it, 0, sizeof it);
    if (seconds > 0) {
        it.it_value.tv_sec = (time_t)seconds;
        it.it_value.tv_usec = (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6);
        if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0) it.it_value.tv_usec = 1;
    }
    setitimer(ITIMER_REAL, &it, NULL);
}

/* ---- Processes ------------------------------------------------------------------------- */

#define QW_MAXGROUPS 16384
static volatile pid_t qw_groups[QW_MAXGROUPS];
static int qw_groups_hint;

void qw_track_group(pid_t pgid) {
    for (int n = 0; n < QW_MAXGROUPS; n++) {
        int i = (qw_groups_hint + n) % QW_MAXGROUPS;
        if (qw_groups[i] == 0) {
            qw_groups[i] = pgid;
            qw_groups_hint = i + 1;
            return;
        }
    }
}

void qw_untrack_group(pid_t pgid) {
    for (int i = 0; i < QW_MAXGROUPS; i++)
        if (qw_groups[i] == pgid) { qw_groups[i] = 0; qw_groups_hint = i; return; }
}

/* Async-signal-safe: only kill, nanosleep and plain memory access. */
void qw_kill_all_groups(int grace_ms) {
    int any = 0;
    for (int i = 0; i < QW_MAXGROUPS; i++) {
        pid_t g = qw_groups[i];
        if (g > 0 && kill(-g, SIGTERM) == 0) { kill(-g, SIGCONT); any = 1; }
    }
    if (!any) return;
    for (int waited = 0; waited < grace_ms; waited += 10) {
        int alive = 0;
        for (int i = 0; i < QW_MAXGROUPS && !alive; i++) {
            pid_t g = qw_groups[i];
            /* a group of zombies still answers kill(0); our own children stay zombies until
               reaped, so reap what can be reaped before asking */
            if (g > 0) {
                while (waitpid(-g, NULL, WNOHANG) > 0) {}
                if (kill(-g, 0) == 0) alive = 1;
            }
        }
        if (!alive) break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < QW_MAXGROUPS; i++) {
        pid_t g = qw_groups[i];
        if (g > 0) { kill(-g, SIGKILL); qw_groups[i] = 0; }
    }
}

int qw_spawn(const char *file, char *const argv[], char *const envp[], const char *cwd,
             int in_fd, int out_fd, int err_fd, pid_t *pid_out) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc) { posix_spawn_file_actions_destroy(&fa); return rc; }

    int fds[3] = {in_fd, out_fd, err_fd};
    for (int i = 0; i < 3 && !rc; i++) {
        if (fds[i] >= 0) rc = posix_spawn_file_actions_adddup2(&fa, fds[i], i);
        else rc = posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
    }
    if (!rc && cwd) rc = posix_spawn_file_actions_addchdir_np(&fa, cwd);

    sigset_t mask, defaults;
    sigemptyset(&mask);
    sigfillset(&defaults);
    sigdelset(&defaults, SIGKILL);
    sigdelset(&defaults, SIGSTOP);
    if (!rc) rc = posix_spawnattr_setsigmask(&attr, &mask);
    if (!rc) rc = posix_spawnattr_setsigdefault(&attr, &defaults);
    if (!rc) rc = posix_spawnattr_setpgroup(&attr, 0);
    if (!rc) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                      POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_USEVFORK);
    if (!rc) {
        pid_t pid = 0;
        rc = posix_spawnp(&pid, file, &fa, &attr, argv, envp ? envp : environ);
        if (!rc) *pid_out = pid;
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

int qw_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
char **qw_environ(void) { return environ; }


int qw_pipe(int fds[2], int nonblock_read, int nonblock_write) {
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    if (nonblock_read) fcntl(fds[0], F_SETFL, O_NONBLOCK);
    if (nonblock_write) fcntl(fds[1], F_SETFL, O_NONBLOCK);
    return 0;
}

#include <stdlib.h>
int qw_spawn_pty(const char *file, char *const argv[], char *const envp[], const char *cwd,
                 unsigned short rows, unsigned short cols, int *master_out, pid_t *pid_out) {
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return errno;
    if (grantpt(master) != 0 || unlockpt(master) != 0) { int e = errno; close(master); return e; }
    char name[128];
    if (ptsname_r(master, name, sizeof name) != 0) { int e = errno; close(master); return e; }
    struct winsize ws = {rows, cols, 0, 0};
    ioctl(master, TIOCSWINSZ, &ws);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    /* a new session, then opening the terminal makes it the controlling one */
    posix_spawn_file_actions_addopen(&fa, 0, name, O_RDWR, 0);
    posix_spawn_file_actions_adddup2(&fa, 0, 1);
    posix_spawn_file_actions_adddup2(&fa, 0, 2);
    if (cwd) posix_spawn_file_actions_addchdir_np(&fa, cwd);
    sigset_t mask, defaults;
    sigemptyset(&mask);
    sigfillset(&defaults);
    sigdelset(&defaults, SIGKILL);
    sigdelset(&defaults, SIGSTOP);
    posix_spawnattr_setsigmask(&attr, &mask);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = 0;
    int rc = posix_spawnp(&pid, file, &fa, &attr, argv, envp ? envp : environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) { close(master); return rc; }
    *master_out = master;
    *pid_out = pid;
    return 0;
}
