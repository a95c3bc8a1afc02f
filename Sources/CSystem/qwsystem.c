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
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <dirent.h>

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

static void on_interrupt(int sig) { (void)sig; qw_request_stop(1); }

/* Files that go with the process (its entry on the work board): removed on every exit path
   but SIGKILL. Read by signal handlers, so plain fixed buffers. */
#define QW_EXIT_FILES 8
static char qw_exit_files[QW_EXIT_FILES][512];

int qw_remove_at_exit(const char *path, int on) {
    for (int i = 0; i < QW_EXIT_FILES; i++) {
        if (on ? qw_exit_files[i][0] == 0 : strcmp(qw_exit_files[i], path) == 0) {
            if (on) {
                if (strlen(path) >= sizeof qw_exit_files[i]) return -1;
                memcpy(qw_exit_files[i] + 1, path + 1, strlen(path)); /* the first byte last: a handler sees it whole */
                __atomic_store_n(&qw_exit_files[i][0], path[0], __ATOMIC_RELEASE);
            } else {
                __atomic_store_n(&qw_exit_files[i][0], 0, __ATOMIC_RELEASE);
            }
            return 0;
        }
    }
    return -1;
}

static void qw_remove_exit_files(void) {
    for (int i = 0; i < QW_EXIT_FILES; i++)
        if (__atomic_load_n(&qw_exit_files[i][0], __ATOMIC_ACQUIRE)) unlink(qw_exit_files[i]);
}

static void on_terminate(int sig) {
    qw_remove_exit_files();
    qw_kill_all_groups(300);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void qw_atexit(void) {
    qw_remove_exit_files();
    qw_kill_all_groups(300);
}

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
    sa.sa_handler = on_terminate;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* ---- Processes ------------------------------------------------------------------------- */

#define QW_MAXGROUPS 16384
/* Slots are claimed and released with atomics: signal handlers read the table at any
   moment, and event loops on several threads (tests) track their groups in it. */
static pid_t qw_groups[QW_MAXGROUPS];
static int qw_groups_hint;
/* One past the highest slot ever tried: the scans stop there, so a run that started few
   processes does not read (and fault in) the whole 64 KB table when it exits. */
static int qw_groups_top;

int qw_track_group(pid_t pgid) {
    int hint = __atomic_load_n(&qw_groups_hint, __ATOMIC_RELAXED);
    for (int n = 0; n < QW_MAXGROUPS; n++) {
        int i = (hint + n) % QW_MAXGROUPS;
        /* raised before the slot is taken: a handler on another thread never misses it */
        int top = __atomic_load_n(&qw_groups_top, __ATOMIC_SEQ_CST);
        while (top < i + 1 && !__atomic_compare_exchange_n(&qw_groups_top, &top, i + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
        pid_t empty = 0;
        if (__atomic_compare_exchange_n(&qw_groups[i], &empty, pgid, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            __atomic_store_n(&qw_groups_hint, i + 1, __ATOMIC_RELAXED);
            return i;
        }
    }
    return -1;
}

void qw_untrack_group(int slot, pid_t pgid) {
    if (slot < 0 || slot >= QW_MAXGROUPS) return;
    pid_t expected = pgid;
    if (__atomic_compare_exchange_n(&qw_groups[slot], &expected, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        __atomic_store_n(&qw_groups_hint, slot, __ATOMIC_RELAXED);
}

/* Async-signal-safe: only kill, nanosleep and plain memory access. */
void qw_kill_all_groups(int grace_ms) {
    int any = 0;
    int top = __atomic_load_n(&qw_groups_top, __ATOMIC_SEQ_CST);
    for (int i = 0; i < top; i++) {
        pid_t g = __atomic_load_n(&qw_groups[i], __ATOMIC_SEQ_CST);
        if (g > 0 && kill(-g, SIGTERM) == 0) { kill(-g, SIGCONT); any = 1; }
    }
    if (!any) return;
    for (int waited = 0; waited < grace_ms; waited += 10) {
        int alive = 0;
        for (int i = 0; i < top && !alive; i++) {
            pid_t g = __atomic_load_n(&qw_groups[i], __ATOMIC_SEQ_CST);
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
    top = __atomic_load_n(&qw_groups_top, __ATOMIC_SEQ_CST);
    for (int i = 0; i < top; i++) {
        pid_t g = __atomic_exchange_n(&qw_groups[i], 0, __ATOMIC_SEQ_CST);
        if (g > 0) kill(-g, SIGKILL);
    }
}

/* ---- Spawning ------------------------------------------------------------------------------
   The child is started with clone(CLONE_VM) and no CLONE_VFORK: it shares qw's memory until
   its execve, on a small stack of its own, while the calling thread goes on at once. Nothing
   waits for the exec, so the event loop never stalls on it and no thread hand-off is needed
   (on 2 cores, a bare loop in C starting 2000 `true` 8 at a time took 0.52 s this way and
   0.62 s with vfork).

   Sharing memory with a running thread puts rules on the child (qw_child_main): it makes
   only raw system calls (no errno, which is the parent thread's; no locks, no malloc, no
   lazily bound symbols), reads its request and writes nothing but the request's `error`,
   `used_fallback` and the argv slots of the /bin/sh fallback. The kernel clears `ctid` (CLONE_CHILD_CLEARTID) when the child execs or
   exits: from then on the request is the parent's again. The parent blocks every signal
   around clone, so no handler runs in the child, which resets qw's dispositions and
   unblocks signals just before the exec.

   Elsewhere than x86-64 and arm64 (or built with QW_NO_CLONE_SPAWN), with QW_SPAWN=vfork, and
   where clone fails this way, spawns use vfork + execve, which suspends the caller until the
   exec. Both beat posix_spawn, whose glibc child asks about
   and resets all 64 signal dispositions (over a hundred system calls). */

#if (defined(__x86_64__) || defined(__aarch64__)) && !defined(QW_NO_CLONE_SPAWN)
#define QW_CLONE_SPAWN 1
#include <sched.h>
#include <linux/sched.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

static inline __attribute__((always_inline)) long qw_sys(long n, long a, long b, long c, long d) {
#if defined(__x86_64__)
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return ret;
#else
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
#endif
}
#endif

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define QW_CLOSE_RANGE_CLOEXEC (1U << 2) /* Linux 5.11; older kernels refuse it and nothing is closed */

/* The signals qw handles or ignores; a child gets them back at their defaults. */
static const int qw_own_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};

static int qw_devnull(void) {
    static int fd = -1;
    int cur = __atomic_load_n(&fd, __ATOMIC_ACQUIRE);
    if (cur >= 0) return cur;
    int nfd = open("/dev/null", O_RDWR | O_CLOEXEC);
    int expected = -1;
    if (!__atomic_compare_exchange_n(&fd, &expected, nfd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        close(nfd);
        return expected;
    }
    return nfd;
}

/* Descriptors qw was started with that its children should get too (a make jobserver's
   pipe, say): every other descriptor that is not close-on-exec (a Lua io.open file, for
   one) is closed in the child at its exec. */
#define QW_MAX_INHERITED 16
static int qw_inherited_fds[QW_MAX_INHERITED];
static int qw_inherited_count = -1; /* -1: not noted, so nothing is closed at exec */

static void qw_note_inherited_fds(void) {
    if (qw_inherited_count >= 0) return;
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || fd < 3 || fd == self) continue;
        int flags = fcntl((int)fd, F_GETFD);
        if (flags < 0 || (flags & FD_CLOEXEC)) continue;
        if (n == QW_MAX_INHERITED) { closedir(d); return; } /* too many to keep: close none */
        qw_inherited_fds[n++] = (int)fd;
    }
    closedir(d);
    qw_inherited_count = n;
}

/* The open-file limit qw found at start, given back to every child (as Go does): qw itself
   runs at the hard limit, so that many children at once (three fds each) do not run out. */
static unsigned long qw_nofile_orig[2];
static int qw_nofile_raised;

void qw_raise_fd_limit(void) {
    qw_note_inherited_fds();
    struct rlimit rl;
    if (qw_nofile_raised || getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
    struct rlimit up = {rl.rlim_max, rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &up) != 0) {
        up.rlim_cur = 1 << 20; /* an infinite hard limit: fs.nr_open is the ceiling */
        if (up.rlim_cur <= rl.rlim_cur || setrlimit(RLIMIT_NOFILE, &up) != 0) return;
    }
    qw_nofile_orig[0] = rl.rlim_cur;
    qw_nofile_orig[1] = rl.rlim_max;
    qw_nofile_raised = 1;
}

#define QW_CHILD_STACK (32 * 1024)

struct qw_spawn_req {
    char *file;        /* a path, or a name to look up in PATH */
    char *fallback;    /* looked up in PATH when `file` gives ENOENT; or NULL */
    char **argv;       /* argv[-1] is free for the /bin/sh fallback of a script without #! */
    char *argv0;       /* argv[0] while that fallback has put the script's path in its place */
    char **envp;
    char *env_path;    /* PATH when spawned */
    char *cwd;
    int fds[3];        /* the child's stdin, stdout, stderr (owned; closed once started); -1: /dev/null */
    int devnull;
    int fds_closed;    /* the parent's copies of fds are closed (fds itself is the child's to read) */
    int own_env;       /* envp holds copies (else environ's own strings) */
    long cpu_seconds;
    int use_vfork;
    void *stack;
    pid_t ctid;        /* non-zero while the child may still use the request */
    pid_t pid;
    int pidfd, slot;
    int error;         /* from the child: why its exec failed */
    int used_fallback; /* from the child */
};

static char **qw_copy_strings(char *const src[], int spare) {
    size_t n = 0;
    while (src[n]) n++;
    char **out = calloc(n + 1 + spare, sizeof *out);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!(out[spare + i] = strdup(src[i]))) {
            while (i > 0) free(out[spare + --i]);
            free(out);
            return NULL;
        }
    }
    return out + spare;
}

static void qw_free_strings(char **v, int spare) {
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v - spare);
}

qw_spawn_req *qw_spawn_req_new(const char *file, const char *fallback, char *const argv[], char *const envp[],
                               const char *cwd, int in_fd, int out_fd, int err_fd, long cpu_seconds, int use_vfork) {
    qw_spawn_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->file = strdup(file);
    r->fallback = fallback ? strdup(fallback) : NULL;
    r->argv = qw_copy_strings(argv, 1);
    /* the pointers of qw's environment, taken now: a later setenv may move the array */
    if (envp) {
        r->envp = qw_copy_strings(envp, 0);
        r->own_env = 1;
    } else {
        size_t n = 0;
        while (environ && environ[n]) n++;
        r->envp = calloc(n + 1, sizeof *r->envp);
        if (r->envp && n) memcpy(r->envp, environ, n * sizeof *r->envp);
    }
    const char *path = getenv("PATH");
    r->env_path = strdup(path ? path : "/usr/local/bin:/usr/bin:/bin");
    r->cwd = cwd ? strdup(cwd) : NULL;
    r->fds[0] = in_fd;
    r->fds[1] = out_fd;
    r->fds[2] = err_fd;
    r->cpu_seconds = cpu_seconds;
#ifdef QW_CLONE_SPAWN
    r->use_vfork = use_vfork;
#else
    (void)use_vfork;
    r->use_vfork = 1;
#endif
    r->pidfd = -1;
    r->slot = -1;
    if (!r->file || !r->argv || !r->envp || !r->env_path || (fallback && !r->fallback) || (cwd && !r->cwd)) {
        r->fds_closed = 1; /* they stay the caller's */
        qw_spawn_req_free(r);
        return NULL;
    }
    return r;
}

static void qw_close_child_fds(qw_spawn_req *r) {
    if (r->fds_closed) return;
    r->fds_closed = 1;
    for (int i = 0; i < 3; i++) if (r->fds[i] >= 0) close(r->fds[i]);
}

void qw_spawn_req_free(qw_spawn_req *r) {
    if (!r) return;
    qw_close_child_fds(r);
    if (r->argv0) r->argv[0] = r->argv0;
    free(r->file);
    free(r->fallback);
    qw_free_strings(r->argv, 1);
    if (r->own_env) qw_free_strings(r->envp, 0);
    else free(r->envp);
    free(r->env_path);
    free(r->cwd);
    free(r->stack);
    free(r);
}

pid_t qw_spawn_req_pid(const qw_spawn_req *r) { return r->pid; }
int qw_spawn_req_pidfd(const qw_spawn_req *r) { return r->pidfd; }
int qw_spawn_req_slot(const qw_spawn_req *r) { return r->slot; }
int qw_spawn_req_done(const qw_spawn_req *r) { return __atomic_load_n(&r->ctid, __ATOMIC_ACQUIRE) == 0; }
int qw_spawn_req_error(const qw_spawn_req *r) { return qw_spawn_req_done(r) ? r->error : 0; }
int qw_spawn_req_used_fallback(const qw_spawn_req *r) { return qw_spawn_req_done(r) ? r->used_fallback : 0; }

/* ---- In the child: finding and executing the program (both ways of spawning) ----
   With clone these run in the child and make raw system calls only; with vfork, libc's. */
#define QW_CHILD __attribute__((noinline, no_sanitize("address"), no_stack_protector))
#ifdef QW_CLONE_SPAWN
#define QW_EXECVE(r, path, argv) (r->use_vfork ? qw_libc_execve(path, argv, r->envp) : qw_sys(SYS_execve, (long)(path), (long)(argv), (long)r->envp, 0))
#else
#define QW_EXECVE(r, path, argv) qw_libc_execve(path, argv, r->envp)
#endif

static long qw_libc_execve(const char *path, char **argv, char **envp) {
    execve(path, argv, envp);
    return -errno;
}


QW_CHILD static void qw_child_sleep_ms(qw_spawn_req *r, long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
#ifdef QW_CLONE_SPAWN
    if (!r->use_vfork) { qw_sys(SYS_nanosleep, (long)&ts, 0, 0, 0); return; }
#endif
    (void)r;
    nanosleep(&ts, NULL);
}

/* ETXTBSY: the file is open for writing somewhere. Most often that is a child started by
   another thread while the file was being written (it holds a copy of the descriptor until
   its own exec), so the exec is tried again for a while: 1, 2, 4 ... 50 ms, about 1 s in all. */
#define QW_TXTBSY_TRIES 24

QW_CHILD static long qw_child_execve_once(qw_spawn_req *r, const char *path, char **argv) {
    long e = QW_EXECVE(r, path, argv);
    for (int i = 0; e == -ETXTBSY && i < QW_TXTBSY_TRIES; i++) {
        qw_child_sleep_ms(r, i < 6 ? 1L << i : 50);
        e = QW_EXECVE(r, path, argv);
    }
    return e;
}

QW_CHILD static long qw_child_execve(qw_spawn_req *r, const char *path) {
    long e = qw_child_execve_once(r, path, r->argv);
    if (e == -ENOEXEC) { /* a script without #!: as execvp does, run it with /bin/sh */
        /* argv[0] gives way to the path; qw_spawn_req_free puts it back (the exec may succeed) */
        if (!r->argv0) r->argv0 = r->argv[0];
        r->argv[-1] = "/bin/sh";
        r->argv[0] = (char *)path;
        e = qw_child_execve_once(r, "/bin/sh", r->argv - 1);
        r->argv[0] = r->argv0;
    }
    return e;
}

QW_CHILD static long qw_child_exec(qw_spawn_req *r, const char *file) {
    const char *c = file;
    while (*c && *c != '/') c++;
    if (*c == '/') return qw_child_execve(r, file);
    size_t flen = (size_t)(c - file);
    char buf[4096];
    int eacces = 0;
    for (const char *p = r->env_path;;) {
        const char *end = p;
        while (*end && *end != ':') end++;
        size_t dlen = (size_t)(end - p);
        volatile char *b = buf; /* volatile: no memcpy call in place of these loops */
        if (dlen + 1 + flen + 1 <= sizeof buf) {
            size_t k = 0;
            if (dlen == 0) b[k++] = '.';
            for (size_t i = 0; i < dlen; i++) b[k++] = p[i];
            b[k++] = '/';
            for (size_t i = 0; i < flen; i++) b[k++] = file[i];
            b[k] = 0;
            long e = qw_child_execve(r, buf);
            if (e == -EACCES) eacces = 1;
            else if (e != -ENOENT && e != -ENOTDIR && e != -ESTALE && e != -ENODEV && e != -ETIMEDOUT) return e;
        }
        if (!*end) break;
        p = end + 1;
    }
    return eacces ? -EACCES : -ENOENT;
}

#ifdef QW_CLONE_SPAWN
QW_CHILD static int qw_child_main(void *arg) {
    qw_spawn_req *r = arg;
    long e = 0;
    unsigned long dfl[4] = {0, 0, 0, 0}; /* struct sigaction of the kernel: SIG_DFL, no flags, empty mask */
    for (size_t i = 0; i < sizeof qw_own_signals / sizeof qw_own_signals[0]; i++)
        qw_sys(SYS_rt_sigaction, qw_own_signals[i], (long)dfl, 0, 8);
    qw_sys(SYS_setpgid, 0, 0, 0, 0);
    int fds[3];
    for (int i = 0; i < 3; i++) fds[i] = r->fds[i] >= 0 ? r->fds[i] : r->devnull;
    for (int i = 0; i < 3; i++) {
        /* a source fd below 3 could be overwritten by an earlier dup: move it up */
        if (fds[i] < 3 && fds[i] != i) {
            long moved = qw_sys(SYS_fcntl, fds[i], F_DUPFD_CLOEXEC, 3, 0);
            if (moved < 0) { e = moved; goto fail; }
            for (int j = 2; j >= i; j--) if (fds[j] == fds[i]) fds[j] = (int)moved;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (fds[i] == i) e = qw_sys(SYS_fcntl, i, F_SETFD, 0, 0);
        else e = qw_sys(SYS_dup3, fds[i], i, 0, 0);
        if (e < 0) goto fail;
    }
    if (qw_inherited_count >= 0 && qw_sys(SYS_close_range, 3, ~0UL, QW_CLOSE_RANGE_CLOEXEC, 0) == 0)
        for (int i = 0; i < qw_inherited_count; i++) qw_sys(SYS_fcntl, qw_inherited_fds[i], F_SETFD, 0, 0);
    if (r->cwd && (e = qw_sys(SYS_chdir, (long)r->cwd, 0, 0, 0)) < 0) goto fail;
    if (qw_nofile_raised && (e = qw_sys(SYS_setrlimit, RLIMIT_NOFILE, (long)qw_nofile_orig, 0, 0)) < 0) goto fail;
    if (r->cpu_seconds > 0) { /* SIGXCPU at the limit, SIGKILL a second later */
        unsigned long rl[2] = {(unsigned long)r->cpu_seconds, (unsigned long)r->cpu_seconds + 1};
        if ((e = qw_sys(SYS_setrlimit, RLIMIT_CPU, (long)rl, 0, 0)) < 0) goto fail;
    }
    unsigned long none = 0;
    qw_sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, 8);
    e = qw_child_exec(r, r->file);
    if (e == -ENOENT && r->fallback) {
        r->used_fallback = 1;
        e = qw_child_exec(r, r->fallback);
    }
fail:
    r->error = (int)-e;
    qw_sys(SYS_exit_group, 127, 0, 0, 0);
    return 127;
}
#endif

/* vfork + execve: the caller waits until the child has exec'd. */
static int qw_vfork_spawn(qw_spawn_req *r, const char *file, pid_t *pid_out) {
    int fds[3];
    for (int i = 0; i < 3; i++) fds[i] = r->fds[i] >= 0 ? r->fds[i] : r->devnull;
    volatile int child_errno = 0;
    pid_t pid = vfork();
    if (pid == 0) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (size_t i = 0; i < sizeof qw_own_signals / sizeof qw_own_signals[0]; i++)
            sigaction(qw_own_signals[i], &dfl, NULL);
        setpgid(0, 0);
        for (int i = 0; i < 3; i++) {
            if (fds[i] < 3 && fds[i] != i) {
                int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
                if (moved < 0) { child_errno = errno; _exit(127); }
                for (int j = 2; j >= i; j--) if (fds[j] == fds[i]) fds[j] = moved;
            }
        }
        for (int i = 0; i < 3; i++) {
            if (fds[i] == i ? fcntl(i, F_SETFD, 0) < 0 : dup2(fds[i], i) < 0) { child_errno = errno; _exit(127); }
        }
        if (qw_inherited_count >= 0 && syscall(SYS_close_range, 3, ~0U, QW_CLOSE_RANGE_CLOEXEC) == 0)
            for (int i = 0; i < qw_inherited_count; i++) fcntl(qw_inherited_fds[i], F_SETFD, 0);
        if (r->cwd && chdir(r->cwd) != 0) { child_errno = errno; _exit(127); }
        if (qw_nofile_raised) {
            struct rlimit nofile = {(rlim_t)qw_nofile_orig[0], (rlim_t)qw_nofile_orig[1]};
            if (setrlimit(RLIMIT_NOFILE, &nofile) != 0) { child_errno = errno; _exit(127); }
        }
        if (r->cpu_seconds > 0) {
            struct rlimit rl = {(rlim_t)r->cpu_seconds, (rlim_t)r->cpu_seconds + 1};
            if (setrlimit(RLIMIT_CPU, &rl) != 0) { child_errno = errno; _exit(127); }
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        child_errno = (int)-qw_child_exec(r, file);
        _exit(127);
    }
    int vfork_errno = errno;
    if (pid < 0) return vfork_errno;
    if (child_errno) {
        waitpid(pid, NULL, 0);
        return child_errno;
    }
    *pid_out = pid;
    return 0;
}

int qw_spawn_req_start(qw_spawn_req *r) {
    r->devnull = qw_devnull();
    if (r->devnull < 0) { int e = errno; qw_close_child_fds(r); return e; }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = -1;
    int err = 0, pidfd = -1;
#ifdef QW_CLONE_SPAWN
    if (!r->use_vfork) {
        r->stack = malloc(QW_CHILD_STACK);
        if (!r->stack) {
            err = ENOMEM;
        } else {
            void *top = (char *)r->stack + QW_CHILD_STACK;
            __atomic_store_n(&r->ctid, 1, __ATOMIC_RELEASE);
            pid = clone(qw_child_main, top, CLONE_VM | CLONE_PIDFD | CLONE_CHILD_CLEARTID | SIGCHLD, r, &pidfd, NULL, &r->ctid);
            if (pid < 0 && errno == EINVAL) { /* no CLONE_PIDFD (Linux before 5.2) */
                pidfd = -1;
                pid = clone(qw_child_main, top, CLONE_VM | CLONE_CHILD_CLEARTID | SIGCHLD, r, NULL, NULL, &r->ctid);
            }
            if (pid < 0) { /* a kernel or sandbox without this use of clone: vfork below */
                __atomic_store_n(&r->ctid, 0, __ATOMIC_RELEASE);
                r->use_vfork = 1;
            }
        }
    }
#endif
    if (r->use_vfork && !err) {
        err = qw_vfork_spawn(r, r->file, &pid);
        if (err == ENOENT && r->fallback) {
            r->used_fallback = 1;
            err = qw_vfork_spawn(r, r->fallback, &pid);
        }
    }
    if (!err) {
        /* The child sets its group too: whichever comes first, the group exists from here
           on. It is tracked before signals are let in, so a handler that ends every group
           (SIGTERM to qw) cannot miss it. */
        setpgid(pid, pid);
        r->pid = pid;
        r->slot = qw_track_group(pid);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    qw_close_child_fds(r);
    if (err) return err;
    r->pidfd = pidfd >= 0 ? pidfd : qw_pidfd_open(pid);
    return 0;
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

