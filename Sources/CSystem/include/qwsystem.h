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
   side of qw, in C because signal handlers and a child that shares qw's memory until its
   exec are C's to write. */

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
/** Have `path` removed when qw exits or is ended by a signal it handles (`on` = 1), or no
    longer (`on` = 0). At most 8 paths of under 512 bytes; -1 when it cannot be recorded. */
int qw_remove_at_exit(const char *path, int on);

/* ---- Processes ------------------------------------------------------------------------- */
int qw_pidfd_open(pid_t pid);
/** Remember a child's process group so every exit path can terminate it; returns the slot
    to give qw_untrack_group, or -1 when the table is full. */
int qw_track_group(pid_t pgid);
void qw_untrack_group(int slot, pid_t pgid);
/** Terminate every tracked group: SIGTERM, up to `grace_ms` for them to go, then SIGKILL. */
void qw_kill_all_groups(int grace_ms);
char **qw_environ(void);

/* ---- Spawning ------------------------------------------------------------------------- */
/** Raises qw's soft open-file limit to the hard one; children still start with the limit
    qw was given. Also notes the descriptors qw was started with that are not close-on-exec:
    from then on children get those and 0-2 only (a file a script opened is not leaked into
    every command it runs, where it would hold the file open for writing and make its exec
    fail with ETXTBSY). */
void qw_raise_fd_limit(void);
/** One spawn: what to start, and what became of it. It owns copies of its strings and the
    child's three fds (closed once started). */
typedef struct qw_spawn_req qw_spawn_req;
/** A request to start `file` (a path, or a name looked up in PATH) with `argv`, `envp`
    (NULL: qw's environment), `cwd` (NULL: qw's), the fds as stdin/stdout/stderr (< 0:
    /dev/null) and, when `cpu_seconds` > 0, RLIMIT_CPU. `fallback`, when not NULL, is looked up
    in PATH if `file` gives ENOENT (a remembered path gone stale). `use_vfork`: spawn with
    vfork + execve rather than clone(CLONE_VM). NULL when memory runs out (the fds are then
    still the caller's). */
qw_spawn_req *qw_spawn_req_new(const char *file, const char *fallback, char *const argv[], char *const envp[],
                               const char *cwd, int in_fd, int out_fd, int err_fd, long cpu_seconds, int use_vfork);
/** Starts the child in a new process group (tracked, see qw_track_group), with qw's signal
    dispositions reset and an empty signal mask. Returns 0 or an errno. With clone the exec is
    still under way on return: its failure shows in qw_spawn_req_error once done. */
int qw_spawn_req_start(qw_spawn_req *r);
/** Whether the child has exec'd or exited: only then may the request be freed. */
int qw_spawn_req_done(const qw_spawn_req *r);
/** Why the exec failed (an errno), once done; else 0. */
int qw_spawn_req_error(const qw_spawn_req *r);
/** Whether `file` gave ENOENT and `fallback` was used, once done. */
int qw_spawn_req_used_fallback(const qw_spawn_req *r);
pid_t qw_spawn_req_pid(const qw_spawn_req *r);
/** -1 when pidfds are unavailable (Linux before 5.3). */
int qw_spawn_req_pidfd(const qw_spawn_req *r);
/** For qw_untrack_group. */
int qw_spawn_req_slot(const qw_spawn_req *r);
/** Frees a request that is done (or was never started). */
void qw_spawn_req_free(qw_spawn_req *r);

/* ---- Content hashes ------------------------------------------------------------------ */
/** A streaming 128-bit content hash (not cryptographic): whether a file changed. */
typedef struct qw_hash_state {
    uint64_t v[4];
    uint64_t length;
    unsigned char buf[32];
    size_t pending;
} qw_hash_state;
void qw_hash_init(qw_hash_state *s);
void qw_hash_update(qw_hash_state *s, const void *data, size_t n);
void qw_hash_final(const qw_hash_state *s, uint64_t out[2]);
/** The hash of a file's content; 0 or an errno. */
int qw_hash_file(const char *path, uint64_t out[2]);

/** Starts a program in a new session on a new pseudo-terminal (rows x cols); returns the
    master side. For driving interactive programs (the REPL) in tests. */
int qw_spawn_pty(const char *file, char *const argv[], char *const envp[], const char *cwd,
                 unsigned short rows, unsigned short cols, int *master_out, pid_t *pid_out);


#endif
