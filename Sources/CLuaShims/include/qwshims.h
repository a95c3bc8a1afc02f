#ifndef QW_SHIMS_H
#define QW_SHIMS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <lua5.4/lua.h>

/* ---- Calling Swift from Lua -------------------------------------------------------------
   Every Swift function bound into Lua is a C closure around qw_trampoline, with the Swift
   context pointer as its upvalue. Swift never raises or yields itself: it returns one of the
   codes below and the trampoline (C) calls lua_error or lua_yieldk on its behalf, so no
   longjmp ever crosses a Swift frame. */

/** The Swift entry point that the trampoline calls; returns results count or a QW_* code. */
typedef int (*qw_dispatch_fn)(lua_State *L, void *ctx);

/** Raise the value on top of the stack as it is. */
#define QW_RAISE (-1)
/** Raise the string on top of the stack, prefixed with the caller's `file:line:`. */
#define QW_RAISE_WHERE (-2)
/** Yield to the host scheduler; resume with (true, results...) or (false, error). */
#define QW_YIELD (-3)

void qw_set_dispatch(qw_dispatch_fn fn);
/** Chunks whose source starts with this path (stdlib's folder, with a trailing slash) are
    passed over when an error names its caller's `file:line`. */
void qw_set_stdlib_prefix(const char *prefix);
/** Push `file:line: ` of the nearest caller outside stdlib (or ""). */
void qw_push_where(lua_State *L);
/** Push a Lua function that calls the Swift dispatcher with `ctx`. */
void qw_push_swift_function(lua_State *L, void *ctx);
/** The value a host yield carries, so Lua code can tell it from a user's own yield. */
void *qw_host_yield_tag(void);

/* ---- Memory ---------------------------------------------------------------------------- */
/** A new state whose allocator refuses to grow Lua's heap past `limit` bytes (0: none)
    while Lua code runs; Swift code pushing its results is never refused. */
lua_State *qw_newstate(size_t limit);
/** Closes a state made by qw_newstate and frees what qw keeps beside it. */
void qw_closestate(lua_State *L);
size_t qw_mem_used(lua_State *L);
size_t qw_mem_limit(lua_State *L);
void qw_mem_set_limit(lua_State *L, size_t limit);
/** The slabs (64 KiB each) that hold the state's small blocks now. */
size_t qw_mem_slabs(lua_State *L);
/** Whether allocations may fail now (1 while Lua runs, 0 while Swift works). */
void qw_mem_set_strict(int strict);
int qw_mem_strict(void);

/* ---- Interruption ---------------------------------------------------------------------- */
/** The state (thread) that is running Lua now, for the stop hook set on an interrupt. */
void qw_set_running(lua_State *L);
lua_State *qw_get_running(void);
/** coroutine.yield and coroutine.isyieldable for scripts: the running task's own thread
    (see qw_set_running) counts as the main thread, from which a yield is an error. */
int qw_co_yield(lua_State *L);
int qw_co_isyieldable(lua_State *L);
/** make_wrap(resume) -> a coroutine.wrap whose functions resume through `resume`. */
int qw_co_make_wrap(lua_State *L);
/** Make interrupts (SIGINT) stop running Lua code with an error. */
void qw_lua_install_stop(void);
/** Stop Lua code running on `L`, or on threads created from it afterwards, with "time limit
    exceeded" once `seconds_from_now` have passed (0 removes the limit). */
void qw_set_deadline(lua_State *L, double seconds_from_now);

/* ---- Errors ---------------------------------------------------------------------------- */
/** A message handler that adds a stack traceback to the error message. */
int qw_traceback_handler(lua_State *L);
/** lua_pcall with qw_traceback_handler as message handler. */
int qw_pcall_traceback(lua_State *L, int nargs, int nresults);
/** Push the message string of the error object at idx (tostring, __tostring, or its type). */
void qw_push_error_message(lua_State *L, int idx);
/** For a coroutine that died with an error on its top: push onto L its message followed by
    the coroutine's stack traceback. */
void qw_push_thread_traceback(lua_State *L, lua_State *co, int level);
/** Closes the to-be-closed variables of a coroutine that ended with an error (which Lua
    leaves to coroutine.close); returns the status of the close. */
int qw_close_thread(lua_State *co, lua_State *from);

/* ---- Workflows ------------------------------------------------------------------------- */
/** A workflow's tasks as wf:task keeps them: ids and dependencies in C memory (see qwshims.c). */
typedef struct qw_wf_defs qw_wf_defs;
/** task_adder(options, specs, optss, check) -> task, defs: a workflow's wf:task, whose common
    case is one C call, and the table of its tasks' ids and dependencies. `task(wf, id, spec,
    opts)` adds the task (at place n: `specs[n] = spec`, `optss[n] = opts`, or false when opts
    is nil or holds only deps) when the id is a new non-empty string, the spec a function, a
    string or a plain command table, and opts nil or a plain table whose keys are all in
    `options` and whose deps is nil or a list of strings; otherwise it changes nothing and
    returns what `check(wf, id, spec, opts)` (Lua: checks, explains, adds) returns.
    `defs:count()`, `defs:id(n)`, `defs:place(id)`, and `defs:add(id, deps) -> n` for a task
    checked in Lua. */
int qw_wf_task_adder(lua_State *L);
/** The task table at `idx`, or NULL when that is none. */
qw_wf_defs *qw_wf_defs_at(lua_State *L, int idx);
uint32_t qw_wf_defs_count(const qw_wf_defs *d);
/** The id of task `i` (0-based; not NUL-terminated). */
const char *qw_wf_defs_id(const qw_wf_defs *d, uint32_t i, size_t *len);
/** Task `i`'s dependencies: a place (0-based) when >= 0; else the name of a task that was not
    defined yet when `i` was (qw_wf_defs_name). NULL when `*count` is 0. */
const int32_t *qw_wf_defs_deps(const qw_wf_defs *d, uint32_t i, uint32_t *count);
const char *qw_wf_defs_name(const qw_wf_defs *d, int32_t dep, size_t *len);
/** The place (0-based) of the task with this id, or -1. */
int64_t qw_wf_defs_find(const qw_wf_defs *d, const char *s, size_t len);

#endif
