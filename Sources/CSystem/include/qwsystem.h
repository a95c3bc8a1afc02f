#ifndef QW_SYSTEM_H
#define QW_SYSTEM_H
#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>
#include <sys/epoll.h>

enum { QW_EPOLLIN = EPOLLIN, QW_EPOLLOUT = EPOLLOUT, QW_EPOLLHUP = EPOLLHUP, QW_EPOLLERR = EPOLLERR };

/** pipe2 with O_CLOEXEC; the read end (and write end) made non-blocking when asked. */
int qw_pipe(int fds[2], int nonblock_read, int nonblock_write);

/* Process spawning, child process groups, signals and the wake pipe: the operating-system
   side of qw, in C because signal handlers and posix_spawn attributes are C's to use. */

/* ---- Interruption ---------------------------------------------------------------------- */
/** Install handlers: SIGINT (interrupt), SIGTERM/SIGHUP/SIGQUIT
    (kill every child group, then die of the signal), SIGPIPE ignored. */
void qw_install_signal_handlers(void);
/** The read end of the pipe the handlers write to, to wake an event loop. */
int qw_wake_fd(void);
/** Drain the wake pipe. */
void qw_drain_wake(void);
/** 0: nothing; 1: interrupted (SIGINT). Reading clears it. */
int qw_take_interrupt(void);
/** Called (from a signal handler) when an interrupt or time limit arrives. */
typedef void (*qw_interrupt_fn)(int reason);
void qw_set_interrupt_callback(qw_interrupt_fn fn);
/** Record an interrupt as a signal handler does: flag, callback, wake the loop. */
void qw_request_stop(int reason);

/* ---- Processes ------------------------------------------------------------------------- */
/** Starts a program (looked up in PATH when `file` has no slash) in a new process group,
    with qw's signal dispositions reset and an empty signal mask; fds < 0 mean /dev/null.
    `cpu_seconds` > 0 sets RLIMIT_CPU in the child. Returns 0 or an errno (from the exec
    when the program could not start). */
int qw_spawn(const char *file, char *const argv[], char *const envp[], const char *cwd,
             int in_fd, int out_fd, int err_fd, long cpu_seconds, pid_t *pid_out);
int qw_pidfd_open(pid_t pid);
/** Remember a child's process group so every exit path can terminate it. */
void qw_track_group(pid_t pgid);
void qw_untrack_group(pid_t pgid);
/** Terminate every tracked group: SIGTERM, up to `grace_ms` for them to go, then SIGKILL. */
void qw_kill_all_groups(int grace_ms);
char **qw_environ(void);

/* ---- Spawner threads ------------------------------------------------------------------- */
/** An event loop's end of the spawner: its finished requests and the eventfd that says so. */
typedef struct qw_spawn_owner qw_spawn_owner;

/** A spawn handed to a worker thread. The request owns copies of its strings. */
typedef struct qw_spawn_req {
    char *file;
    char **argv;
    char **envp; /* NULL: inherit */
    char *cwd;
    int in_fd, out_fd, err_fd;
    long cpu_seconds;
    uint64_t token;
    pid_t pid;   /* out */
    int error;   /* out: 0 or an errno */
    struct qw_spawn_req *next;
    qw_spawn_owner *owner;
} qw_spawn_req;
/** Starts up to `threads` worker threads (shared by the process) and a new owner; NULL
    when no thread can be started. */
qw_spawn_owner *qw_spawner_owner_new(int threads);
/** The eventfd that is readable when some of the owner's spawns are done. */
int qw_spawner_owner_fd(qw_spawn_owner *o);
/** Frees an owner with no spawn in flight. */
void qw_spawner_owner_free(qw_spawn_owner *o);
void qw_spawner_submit(qw_spawn_owner *o, qw_spawn_req *r);
/** Takes every finished request of the owner (a list through `next`), clearing its eventfd. */
qw_spawn_req *qw_spawner_take_done(qw_spawn_owner *o);
qw_spawn_req *qw_spawn_req_new(const char *file, char *const argv[], char *const envp[], const char *cwd,
                               int in_fd, int out_fd, int err_fd, long cpu_seconds, uint64_t token);
void qw_spawn_req_free(qw_spawn_req *r);
/** Starts a program in a new session on a new pseudo-terminal (rows x cols); returns the
    master side. For driving interactive programs (the REPL) in tests. */
int qw_spawn_pty(const char *file, char *const argv[], char *const envp[], const char *cwd,
                 unsigned short rows, unsigned short cols, int *master_out, pid_t *pid_out);


#endif
