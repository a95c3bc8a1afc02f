#include "qwshims.h"
#include "qwsystem.h"
#include <string.h>
#include <stdio.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <lua5.4/lauxlib.h>
#include <stdio.h>
#include <sys/wait.h>


/* ---- Trampoline ------------------------------------------------------------------------ */

static qw_dispatch_fn qw_dispatch;
static char qw_yield_tag_storage;
/* per thread: tests run several states on several threads at once */
static _Thread_local int qw_strict;

void qw_set_dispatch(qw_dispatch_fn fn) { qw_dispatch = fn; }
void *qw_host_yield_tag(void) { return &qw_yield_tag_storage; }
void qw_mem_set_strict(int strict) { qw_strict = strict; }
int qw_mem_strict(void) { return qw_strict; }

static char qw_stdlib_prefix[4096];

void qw_set_stdlib_prefix(const char *prefix) {
    snprintf(qw_stdlib_prefix, sizeof qw_stdlib_prefix, "@%s", prefix ? prefix : "");
}

static int qw_is_stdlib(const char *source) {
    if (strncmp(source, "@stdlib/qw/", 11) == 0) return 1;
    size_t n = strlen(qw_stdlib_prefix);
    return n > 1 && strncmp(source, qw_stdlib_prefix, n) == 0;
}

/* Like luaL_where(L, 1), but names the first caller outside stdlib: an error in arguments
   that a stdlib wrapper passed on belongs to the user's line, not to the wrapper. */
void qw_push_where(lua_State *L) {
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar)) break;
        if (ar.currentline > 0 && !qw_is_stdlib(ar.source)) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    lua_pushliteral(L, "");
}

static int qw_raise_where(lua_State *L) {
    if (lua_type(L, -1) == LUA_TSTRING) {
        qw_push_where(L);
        lua_rotate(L, -2, 1);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

/* Resumed after a host yield: the stack holds the function's arguments (ctx of them), then
   what the scheduler passed: true and the results, or false and an error. */
static int qw_resume_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    int base = (int)ctx;
    if (!lua_toboolean(L, base + 1)) {
        lua_settop(L, base + 2);
        return qw_raise_where(L);
    }
    return lua_gettop(L) - (base + 1);
}

static int qw_trampoline(lua_State *L) {
    void *ctx = lua_touserdata(L, lua_upvalueindex(1));
    int saved = qw_strict;
    qw_strict = 0;
    int n = qw_dispatch(L, ctx);
    qw_strict = saved;
    if (n >= 0) return n;
    switch (n) {
    case QW_RAISE: return lua_error(L);
    case QW_RAISE_WHERE: return qw_raise_where(L);
    default: {
        int base = lua_gettop(L);
        lua_pushlightuserdata(L, &qw_yield_tag_storage);
        return lua_yieldk(L, 1, (lua_KContext)base, qw_resume_k);
    }
    }
}

void qw_push_swift_function(lua_State *L, void *ctx) {
    lua_pushlightuserdata(L, ctx);
    lua_pushcclosure(L, qw_trampoline, 1);
}

/* ---- Allocator ------------------------------------------------------------------------- */

typedef struct { size_t used, limit; } qw_heap;

static void *qw_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    qw_heap *h = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        h->used -= old;
        return NULL;
    }
    if (nsize > old && qw_strict && h->limit && h->used - old + nsize > h->limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p) h->used = h->used - old + nsize;
    return p;
}

static int qw_panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "qw: unprotected Lua error: %s\n", msg ? msg : "(not a string)");
    qw_kill_all_groups(200);
    abort();
}

static void qw_warn(void *ud, const char *msg, int tocont) {
    static int continuing;
    (void)ud;
    if (!continuing && !tocont && msg[0] == '@') return; /* control messages */
    if (!continuing) fputs("Lua warning: ", stderr);
    fputs(msg, stderr);
    if (!tocont) fputc('\n', stderr);
    continuing = tocont;
}

lua_State *qw_newstate(size_t limit) {
    qw_heap *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->limit = limit;
    lua_State *L = lua_newstate(qw_alloc, h);
    if (!L) { free(h); return NULL; }
    /* Lua leaves the main thread's extra space (copied into every new thread) as it found it */
    memset(lua_getextraspace(L), 0, LUA_EXTRASPACE);
    lua_atpanic(L, qw_panic);
    lua_setwarnf(L, qw_warn, NULL);
    return L;
}

void qw_closestate(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    double *deadline = *(double **)lua_getextraspace(L);
    lua_close(L);
    free(deadline);
    free(ud);
}

static qw_heap *heap_of(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}
size_t qw_mem_used(lua_State *L) { return heap_of(L)->used; }
size_t qw_mem_limit(lua_State *L) { return heap_of(L)->limit; }
void qw_mem_set_limit(lua_State *L, size_t limit) { heap_of(L)->limit = limit; }

/* ---- Interruption ---------------------------------------------------------------------- */

static lua_State *volatile qw_running_L;
void qw_set_running(lua_State *L) { qw_running_L = L; }
lua_State *qw_get_running(void) { return qw_running_L; }

/* ---- Coroutines ------------------------------------------------------------------------
   A task's thread (the script's main chunk, a batch function) is a coroutine of the host,
   but to the script it is the main thread: yielding from it is the stock error, raised
   where pcall can catch it, and it is not yieldable. */

int qw_co_yield(lua_State *L) {
    if (L == qw_running_L) { /* no position, as the stock message has none */
        lua_pushliteral(L, "attempt to yield from outside a coroutine");
        return lua_error(L);
    }
    return lua_yield(L, lua_gettop(L));
}

/* coroutine.wrap over stdlib's coroutine.resume (upvalue 2), which passes host yields on;
   the rest is the stock wrap: an error closes the coroutine's to-be-closed variables (an
   error there wins) and a string error gets the caller's position. */
static int qw_wrap_done(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    if (lua_toboolean(L, 1)) return lua_gettop(L) - 1;
    lua_settop(L, 2);
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) {
#if LUA_VERSION_RELEASE_NUM >= 50406
        stat = lua_closethread(co, L);
#else
        stat = lua_resetthread(co);
#endif
        lua_xmove(co, L, 1);
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int qw_wrap_call(lua_State *L) {
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_rotate(L, 1, 2);
    lua_callk(L, n + 1, LUA_MULTRET, 0, qw_wrap_done);
    return qw_wrap_done(L, LUA_OK, 0);
}

static int qw_co_wrap(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, qw_wrap_call, 2);
    return 1;
}

int qw_co_make_wrap(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushcclosure(L, qw_co_wrap, 1);
    return 1;
}

int qw_co_isyieldable(lua_State *L) {
    lua_State *co = lua_isnone(L, 1) ? L : lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "thread");
    lua_pushboolean(L, co != qw_running_L && lua_isyieldable(co));
    return 1;
}

static volatile sig_atomic_t qw_lua_stop_reason;

static void qw_stop_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    int reason = qw_lua_stop_reason;
    if (!reason) return;
    qw_lua_stop_reason = 0;
    luaL_where(L, 0); /* the function that was running, not its caller */
    lua_pushstring(L, "interrupted");
    lua_concat(L, 2);
    lua_error(L);
}

/* Called from signal handlers: lua_sethook is async-signal-safe (lua.c does the same). */
static void qw_lua_stop(int reason) {
    lua_State *L = qw_running_L;
    if (!L) return;
    qw_lua_stop_reason = reason;
    lua_sethook(L, qw_stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void qw_lua_install_stop(void) { qw_set_interrupt_callback(qw_lua_stop); }

/* ---- Time limit ------------------------------------------------------------------------
   A count hook on the main thread, inherited by every thread created after it, compares the
   clock with a deadline kept behind the state's extra space: no signal, so several states
   in one process (tests) keep their own limits. */

static double qw_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void qw_deadline_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    double *deadline = *(double **)lua_getextraspace(L);
    if (deadline && *deadline > 0 && qw_now() >= *deadline) {
        luaL_where(L, 0);
        lua_pushstring(L, "time limit exceeded");
        lua_concat(L, 2);
        lua_error(L);
    }
}

void qw_set_deadline(lua_State *L, double seconds_from_now) {
    double **slot = (double **)lua_getextraspace(L);
    if (!*slot) *slot = calloc(1, sizeof(double));
    **slot = seconds_from_now > 0 ? qw_now() + seconds_from_now : 0;
    if (seconds_from_now > 0) lua_sethook(L, qw_deadline_hook, LUA_MASKCOUNT, 10000);
    else lua_sethook(L, NULL, 0, 0);
}

/* ---- Errors ---------------------------------------------------------------------------- */

/* Turn any error object into a message string without raising. */
static const char *qw_message_of(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
        return lua_pushstring(L, lua_tostring(L, idx));
    if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        lua_pushvalue(L, idx);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) return lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
}

int qw_traceback_handler(lua_State *L) {
    const char *msg = qw_message_of(L, 1);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int qw_pcall_traceback(lua_State *L, int nargs, int nresults) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, qw_traceback_handler);
    lua_rotate(L, base, 1);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_rotate(L, base, -1);
    lua_pop(L, 1);
    return status;
}

void qw_push_error_message(lua_State *L, int idx) { qw_message_of(L, idx); }

void qw_push_thread_traceback(lua_State *L, lua_State *co, int level) {
    const char *msg = qw_message_of(co, -1);
    lua_pop(co, 1);
    luaL_traceback(L, co, msg, level);
}

int qw_close_thread(lua_State *co, lua_State *from) {
#if LUA_VERSION_RELEASE_NUM >= 50406
    return lua_closethread(co, from);
#else
    (void)from;
    return lua_resetthread(co);
#endif
}

/* ---- Workflows: wf:task's common case ----------------------------------------------------- */

/* upvalues: 1 the options that need no check, 2 tasks (id -> place), 3 ids, 4 specs,
   5 optss, 6 depss, 7 the Lua function that checks and adds any task */
static int qw_wf_add_task(lua_State *L) {
    /* 1 wf, 2 id, 3 spec, 4 opts */
    size_t len;
    lua_settop(L, 4);
    int st = lua_type(L, 3), ot = lua_type(L, 4);
    if (lua_type(L, 1) != LUA_TTABLE) goto slow;
    if (lua_type(L, 2) != LUA_TSTRING || (lua_tolstring(L, 2, &len), len == 0)) goto slow;
    if (st == LUA_TTABLE) {
        /* a command table; an agent task (a prompt and no argv) is checked in Lua */
        if (lua_getmetatable(L, 3) || lua_rawgeti(L, 3, 1) == LUA_TNIL) goto slow;
        lua_pop(L, 1);
    } else if (st != LUA_TFUNCTION && st != LUA_TSTRING) goto slow;
    if (ot == LUA_TTABLE) {
        if (lua_getmetatable(L, 4)) goto slow;
        lua_pushnil(L);
        while (lua_next(L, 4)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING) goto slow;
            lua_pushvalue(L, -1);
            if (lua_rawget(L, lua_upvalueindex(1)) == LUA_TNIL) goto slow;
            lua_pop(L, 1);
        }
        lua_pushliteral(L, "deps");
        int dt = lua_rawget(L, 4);
        if (dt == LUA_TNIL) { lua_pop(L, 1); lua_pushboolean(L, 0); }
        else if (dt != LUA_TTABLE) goto slow;
    } else if (ot == LUA_TNIL) {
        lua_newtable(L);
        lua_replace(L, 4);
        lua_pushboolean(L, 0);
    } else goto slow;
    /* 5: deps, or false */
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) goto slow;   /* defined twice */
    lua_pop(L, 1);
    lua_Integer n = (lua_Integer)lua_rawlen(L, lua_upvalueindex(3)) + 1;
    lua_pushvalue(L, 2); lua_pushinteger(L, n); lua_rawset(L, lua_upvalueindex(2));
    lua_rawseti(L, lua_upvalueindex(6), n);                           /* pops deps */
    lua_pushvalue(L, 4); lua_rawseti(L, lua_upvalueindex(5), n);
    lua_pushvalue(L, 3); lua_rawseti(L, lua_upvalueindex(4), n);
    lua_pushvalue(L, 2); lua_rawseti(L, lua_upvalueindex(3), n);
    lua_settop(L, 1);
    return 1;
slow:
    /* nothing is changed yet: the Lua checks take the call as it came (opts = nil stays nil) */
    lua_settop(L, 4);
    if (ot == LUA_TNIL) { lua_pushnil(L); lua_replace(L, 4); }
    lua_pushvalue(L, lua_upvalueindex(7));
    lua_insert(L, 1);
    lua_call(L, 4, LUA_MULTRET);
    return lua_gettop(L);
}

int qw_wf_task_adder(lua_State *L) {
    for (int i = 1; i <= 6; i++) luaL_checktype(L, i, LUA_TTABLE);
    luaL_checktype(L, 7, LUA_TFUNCTION);
    lua_settop(L, 7);
    lua_pushcclosure(L, qw_wf_add_task, 7);
    return 1;
}
