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
    sa.sa_handler = on_terminate;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* ---- Processes ------------------------------------------------------------------------- */

#define QW_MAXGROUPS 16384
/* Slots are claimed and released with atomics: spawner threads track the groups they start
   and signal handlers read the table at any moment. */
static pid_t qw_groups[QW_MAXGROUPS];
static int qw_groups_hint;

void qw_track_group(pid_t pgid) {
    int hint = __atomic_load_n(&qw_groups_hint, __ATOMIC_RELAXED);
    for (int n = 0; n < QW_MAXGROUPS; n++) {
        int i = (hint + n) % QW_MAXGROUPS;
        pid_t empty = 0;
        if (__atomic_compare_exchange_n(&qw_groups[i], &empty, pgid, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            __atomic_store_n(&qw_groups_hint, i + 1, __ATOMIC_RELAXED);
            return;
        }
    }
}

void qw_untrack_group(pid_t pgid) {
    for (int i = 0; i < QW_MAXGROUPS; i++) {
        pid_t expected = pgid;
        if (__atomic_compare_exchange_n(&qw_groups[i], &expected, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            __atomic_store_n(&qw_groups_hint, i, __ATOMIC_RELAXED);
            return;
        }
    }
}

/* Async-signal-safe: only kill, nanosleep and plain memory access. */
void qw_kill_all_groups(int grace_ms) {
    int any = 0;
    for (int i = 0; i < QW_MAXGROUPS; i++) {
        pid_t g = __atomic_load_n(&qw_groups[i], __ATOMIC_SEQ_CST);
        if (g > 0 && kill(-g, SIGTERM) == 0) { kill(-g, SIGCONT); any = 1; }
    }
    if (!any) return;
    for (int waited = 0; waited < grace_ms; waited += 10) {
        int alive = 0;
        for (int i = 0; i < QW_MAXGROUPS && !alive; i++) {
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
    for (int i = 0; i < QW_MAXGROUPS; i++) {
        pid_t g = __atomic_exchange_n(&qw_groups[i], 0, __ATOMIC_SEQ_CST);
        if (g > 0) kill(-g, SIGKILL);
    }
}

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

/* vfork + execve rather than posix_spawn: glibc's child asks about and resets all 64 signal
   dispositions (over a hundred system calls) while the parent waits; this child knows the
   few that qw changed. The calling thread blocks every signal around vfork, so no handler
   can run in the child on the shared memory before the dispositions are reset. */
int qw_spawn(const char *file, char *const argv[], char *const envp[], const char *cwd,
             int in_fd, int out_fd, int err_fd, long cpu_seconds, pid_t *pid_out) {
    int devnull = qw_devnull();
    if (devnull < 0) return errno;
    int fds[3] = {in_fd >= 0 ? in_fd : devnull, out_fd >= 0 ? out_fd : devnull, err_fd >= 0 ? err_fd : devnull};
    char *const *env = envp ? envp : environ;
    int search = strchr(file, '/') == NULL;
    volatile int child_errno = 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = vfork();
    if (pid == 0) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (size_t i = 0; i < sizeof qw_own_signals / sizeof qw_own_signals[0]; i++)
            sigaction(qw_own_signals[i], &dfl, NULL);
        setpgid(0, 0);
        for (int i = 0; i < 3; i++) {
            /* a source fd below 3 could be overwritten by an earlier dup2: move it up */
            if (fds[i] < 3 && fds[i] != i) {
                int moved = fcntl(fds[i], F_DUPFD, 3);
                if (moved < 0) { child_errno = errno; _exit(127); }
                for (int j = i; j < 3; j++) if (fds[j] == fds[i]) fds[j] = moved;
            }
        }
        for (int i = 0; i < 3; i++) {
            if (dup2(fds[i], i) < 0) { child_errno = errno; _exit(127); }
            if (fds[i] == i) fcntl(i, F_SETFD, 0);
        }
        if (cwd && chdir(cwd) != 0) { child_errno = errno; _exit(127); }
        if (cpu_seconds > 0) { /* SIGXCPU at the limit, SIGKILL a second later */
            struct rlimit rl = {(rlim_t)cpu_seconds, (rlim_t)cpu_seconds + 1};
            if (setrlimit(RLIMIT_CPU, &rl) != 0) { child_errno = errno; _exit(127); }
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (search) execvpe(file, argv, env);
        else execve(file, argv, env);
        child_errno = errno;
        _exit(127);
    }
    int vfork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) return vfork_errno;
    if (child_errno) {
        waitpid(pid, NULL, 0);
        return child_errno;
    }
    *pid_out = pid;
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

/* ---- Spawner threads ----------------------------------------------------------------------
   posix_spawn suspends the calling thread until the child has called execve, a few hundred
   microseconds in which one thread can start nothing else. Worker threads take that wait off
   the event loop and let two execs proceed at once on two cores. */

#include <pthread.h>
#include <sys/eventfd.h>

/* One queue of requests served by the worker threads; each event loop (an "owner") has its
   own list of finished requests and its own eventfd, so several loops in one process (tests)
   never take each other's results. */
struct qw_spawn_owner {
    pthread_mutex_t lock;
    qw_spawn_req *done;
    int efd;
};

static pthread_mutex_t qw_sp_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qw_sp_cond = PTHREAD_COND_INITIALIZER;
static qw_spawn_req *qw_sp_queue_head, *qw_sp_queue_tail;
static int qw_sp_threads;

static void *qw_spawner_main(void *arg) {
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals belong to the event loop's thread */
    for (;;) {
        pthread_mutex_lock(&qw_sp_lock);
        while (!qw_sp_queue_head) pthread_cond_wait(&qw_sp_cond, &qw_sp_lock);
        qw_spawn_req *r = qw_sp_queue_head;
        qw_sp_queue_head = r->next;
        if (!qw_sp_queue_head) qw_sp_queue_tail = NULL;
        pthread_mutex_unlock(&qw_sp_lock);

        r->error = qw_spawn(r->file, r->argv, r->envp, r->cwd, r->in_fd, r->out_fd, r->err_fd, r->cpu_seconds, &r->pid);
        if (!r->error) qw_track_group(r->pid);

        /* wake the owner while holding its lock, so that once it has taken this request
           (under the same lock) nothing here touches the owner again */
        qw_spawn_owner *o = r->owner;
        pthread_mutex_lock(&o->lock);
        r->next = o->done;
        o->done = r;
        uint64_t one = 1;
        ssize_t w = write(o->efd, &one, sizeof one);
        (void)w;
        pthread_mutex_unlock(&o->lock);
    }
    return NULL;
}

qw_spawn_owner *qw_spawner_owner_new(int threads) {
    pthread_mutex_lock(&qw_sp_lock);
    for (; qw_sp_threads < threads; qw_sp_threads++) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, 64 * 1024);
        int rc = pthread_create(&t, &a, qw_spawner_main, NULL);
        pthread_attr_destroy(&a);
        if (rc != 0) break;
        pthread_detach(t);
    }
    int ok = qw_sp_threads > 0;
    pthread_mutex_unlock(&qw_sp_lock);
    if (!ok) return NULL;
    qw_spawn_owner *o = calloc(1, sizeof *o);
    pthread_mutex_init(&o->lock, NULL);
    o->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (o->efd < 0) { free(o); return NULL; }
    return o;
}

int qw_spawner_owner_fd(qw_spawn_owner *o) { return o->efd; }

void qw_spawner_owner_free(qw_spawn_owner *o) {
    pthread_mutex_lock(&o->lock); /* a worker that delivered to it has let go */
    pthread_mutex_unlock(&o->lock);
    close(o->efd);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

void qw_spawner_submit(qw_spawn_owner *o, qw_spawn_req *r) {
    r->next = NULL;
    r->owner = o;
    pthread_mutex_lock(&qw_sp_lock);
    if (qw_sp_queue_tail) qw_sp_queue_tail->next = r; else qw_sp_queue_head = r;
    qw_sp_queue_tail = r;
    pthread_cond_signal(&qw_sp_cond);
    pthread_mutex_unlock(&qw_sp_lock);
}

qw_spawn_req *qw_spawner_take_done(qw_spawn_owner *o) {
    uint64_t n;
    ssize_t rd = read(o->efd, &n, sizeof n);
    (void)rd;
    pthread_mutex_lock(&o->lock);
    qw_spawn_req *list = o->done;
    o->done = NULL;
    pthread_mutex_unlock(&o->lock);
    return list;
}

static char **qw_copy_strings(char *const src[]) {
    if (!src) return NULL;
    size_t n = 0;
    while (src[n]) n++;
    char **out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++) out[i] = strdup(src[i]);
    return out;
}

qw_spawn_req *qw_spawn_req_new(const char *file, char *const argv[], char *const envp[], const char *cwd,
                               int in_fd, int out_fd, int err_fd, long cpu_seconds, uint64_t token) {
    qw_spawn_req *r = calloc(1, sizeof *r);
    r->file = strdup(file);
    r->argv = qw_copy_strings(argv);
    r->envp = qw_copy_strings(envp);
    r->cwd = cwd ? strdup(cwd) : NULL;
    r->in_fd = in_fd;
    r->out_fd = out_fd;
    r->err_fd = err_fd;
    r->cpu_seconds = cpu_seconds;
    r->token = token;
    return r;
}

static void qw_free_strings(char **v) {
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

void qw_spawn_req_free(qw_spawn_req *r) {
    free(r->file);
    qw_free_strings(r->argv);
    qw_free_strings(r->envp);
    free(r->cwd);
    free(r);
}
