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

/* ---- Allocator -------------------------------------------------------------------------
   A state's heap. Blocks of up to 256 bytes (strings, tables, closures, upvalues: nearly all
   of a script's objects) come from slabs of one size class each: 64 KiB, aligned to their
   size, so a block finds its slab from its address, and without a header, since Lua gives
   a block's size back when it resizes or frees it. The churn of a loop that makes and drops
   small tables and strings then costs a few instructions a block where malloc and free cost
   dozens, and a large request walks nothing (glibc consolidates its free small chunks then).
   A slab whose last block is freed goes back to malloc unless it is its class's only slab
   with room. Larger blocks are malloc's. The rule every block keeps: one whose size (as Lua
   knows it) is at most QW_SMALL_MAX is in a slab, of its size's class or a larger one. */

#define QW_SMALL_MAX 256
#define QW_CLASSES (QW_SMALL_MAX / 16)
#define QW_CLASS(size) (((size) - 1) / 16) /* sizes 1..256: classes of 16, 32, ... 256 bytes */
#define QW_SLAB_SIZE ((size_t)64 * 1024)

typedef struct qw_slab {
    struct qw_slab *prev, *next; /* in its class's list of slabs with room, when `listed` */
    void *free;                  /* freed blocks, linked through their first word */
    char *fresh, *end;           /* blocks never handed out */
    uint32_t used, size;         /* blocks handed out; the class's block size */
    int listed;
} qw_slab;

#define QW_SLAB_FIRST ((sizeof(qw_slab) + 15) & ~(size_t)15)

typedef struct {
    size_t used, limit, slabs;
    qw_slab *room[QW_CLASSES]; /* per class: the slabs with a free block */
} qw_heap;

static void qw_slab_list(qw_heap *h, qw_slab *s) {
    qw_slab **head = &h->room[QW_CLASS(s->size)];
    s->prev = NULL;
    s->next = *head;
    if (*head) (*head)->prev = s;
    *head = s;
    s->listed = 1;
}

static void qw_slab_unlist(qw_heap *h, qw_slab *s) {
    if (s->prev) s->prev->next = s->next;
    else h->room[QW_CLASS(s->size)] = s->next;
    if (s->next) s->next->prev = s->prev;
    s->listed = 0;
}

static void *qw_small_get(qw_heap *h, size_t cls) {
    qw_slab *s = h->room[cls];
    if (!s) {
        void *m;
        if (posix_memalign(&m, QW_SLAB_SIZE, QW_SLAB_SIZE) != 0) return NULL;
        s = m;
        s->free = NULL;
        s->fresh = (char *)m + QW_SLAB_FIRST;
        s->end = (char *)m + QW_SLAB_SIZE;
        s->used = 0;
        s->size = (uint32_t)(cls + 1) * 16;
        qw_slab_list(h, s);
        h->slabs++;
    }
    void *p = s->free;
    if (p) s->free = *(void **)p;
    else {
        p = s->fresh;
        s->fresh += s->size;
    }
    s->used++;
    if (!s->free && (size_t)(s->end - s->fresh) < s->size) qw_slab_unlist(h, s);
    return p;
}

static void qw_small_put(qw_heap *h, void *p) {
    qw_slab *s = (qw_slab *)((uintptr_t)p & ~(uintptr_t)(QW_SLAB_SIZE - 1));
    *(void **)p = s->free;
    s->free = p;
    if (!s->listed) qw_slab_list(h, s);
    if (--s->used == 0 && (s->prev || s->next)) {
        qw_slab_unlist(h, s);
        free(s);
        h->slabs--;
    }
}

static void *qw_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    qw_heap *h = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        if (old > QW_SMALL_MAX) free(ptr);
        else if (ptr) qw_small_put(h, ptr);
        h->used -= old;
        return NULL;
    }
    if (nsize > old && qw_strict && h->limit && h->used - old + nsize > h->limit)
        return NULL;
    void *p;
    if (old > QW_SMALL_MAX) {
        if (nsize > QW_SMALL_MAX) p = realloc(ptr, nsize);
        else if ((p = qw_small_get(h, QW_CLASS(nsize)))) {
            memcpy(p, ptr, nsize);
            free(ptr);
        }
    } else if (nsize > QW_SMALL_MAX) {
        if ((p = malloc(nsize)) && ptr) {
            memcpy(p, ptr, old);
            qw_small_put(h, ptr);
        }
    } else if (ptr && QW_CLASS(nsize) == QW_CLASS(old)) p = ptr;
    else if ((p = qw_small_get(h, QW_CLASS(nsize)))) {
        if (ptr) {
            memcpy(p, ptr, old < nsize ? old : nsize);
            qw_small_put(h, ptr);
        }
    } else if (ptr && nsize < old) p = ptr; /* a shrink does not fail: the block stays put */
    if (p) h->used = h->used - old + nsize;
    return p;
}

/* the slabs left once the state is closed: each class's last one */
static void qw_heap_free(qw_heap *h) {
    for (int c = 0; c < QW_CLASSES; c++)
        for (qw_slab *s = h->room[c], *n; s; s = n) {
            n = s->next;
            free(s);
        }
    free(h);
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
    if (!L) { qw_heap_free(h); return NULL; }
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
    qw_heap_free(ud);
}

static qw_heap *heap_of(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}
size_t qw_mem_used(lua_State *L) { return heap_of(L)->used; }
size_t qw_mem_limit(lua_State *L) { return heap_of(L)->limit; }
void qw_mem_set_limit(lua_State *L, size_t limit) { heap_of(L)->limit = limit; }
size_t qw_mem_slabs(lua_State *L) { return heap_of(L)->slabs; }

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

/* ---- Workflows: the task table and wf:task's common case -----------------------------------
   A workflow's ids and dependencies live here, in C memory, not in Lua tables: a Lua string
   and a table or two per task would be 100,000 more objects for the collector to walk on
   every cycle while a big workflow is defined (which then takes twice as long as with none
   kept). Dependencies on tasks already defined are kept as places; the others by name, until
   the engine resolves them (qw_wf_defs_find). Each change reserves all it needs first, so a
   failed allocation leaves the table as it was. The table's memory counts against the
   state's heap limit as Lua's own does, so a runaway loop of wf:task stops there too. */

#define QW_WF_DEFS "qw.wf_defs"

struct qw_wf_defs {
    char *bytes;            /* the ids, then names of dependencies not yet defined */
    size_t nbytes, capbytes;
    uint32_t *off, *len, *hash; /* per task: its id in `bytes`, the id's hash (one block) */
    uint32_t *dep_start;    /* per task, and one more: its dependencies in `deps` (same block) */
    uint32_t n, cap;
    int32_t *deps;          /* >= 0: a task's place (0-based); < 0: -1 - k, names[k] */
    size_t ndeps, capdeps;
    uint32_t *name_off, *name_len; /* one block */
    uint32_t nnames;
    size_t capnames;
    uint32_t *slots;        /* open addressing: place + 1, 0 empty; a power of two long */
    uint32_t nslots;
    qw_heap *heap;          /* the state's (NULL: not a qw_newstate state), where `held` counts */
    size_t held;            /* bytes of all the blocks above */
};

/* `p`, of `old` bytes (NULL, 0: a new block), reallocated to `size` bytes within the heap's
   limit, as qw_alloc does; NULL when out of memory, and then p is as it was */
static void *qw_wf_realloc(qw_wf_defs *d, void *p, size_t old, size_t size) {
    qw_heap *h = d->heap;
    if (h && size > old && qw_strict && h->limit && h->used - old + size > h->limit) return NULL;
    void *q = realloc(p, size);
    if (!q) return NULL;
    if (h) h->used = h->used - old + size;
    d->held = d->held - old + size;
    return q;
}

static void qw_wf_free(qw_wf_defs *d, void *p, size_t size) {
    if (!p) return;
    free(p);
    if (d->heap) d->heap->used -= size;
    d->held -= size;
}

static uint32_t qw_wf_hash(const char *s, size_t len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int64_t qw_wf_lookup(const qw_wf_defs *d, const char *s, size_t len, uint32_t h) {
    if (d->nslots == 0) return -1;
    for (uint32_t k = h & (d->nslots - 1);; k = (k + 1) & (d->nslots - 1)) {
        uint32_t p = d->slots[k];
        if (p == 0) return -1;
        p--;
        if (d->hash[p] == h && d->len[p] == len && memcmp(d->bytes + d->off[p], s, len) == 0) return p;
    }
}

int64_t qw_wf_defs_find(const qw_wf_defs *d, const char *s, size_t len) {
    return qw_wf_lookup(d, s, len, qw_wf_hash(s, len));
}

/* the capacity that holds `need`, doubling from `cap` (from 64 at first) */
static size_t qw_wf_grown(size_t cap, size_t need) {
    size_t c = cap ? cap : 64;
    while (c < need) c *= 2;
    return c;
}

/* `p` (capacity *cap elements of `size` bytes) reallocated to hold `need`; NULL when out of
   memory (then p and *cap are as they were) */
static void *qw_wf_regrow(qw_wf_defs *d, void *p, size_t *cap, size_t need, size_t size) {
    size_t c = qw_wf_grown(*cap, need);
    void *q = qw_wf_realloc(d, p, *cap * size, c * size);
    if (q) *cap = c;
    return q;
}

/* room for `need` bytes of ids and names; 0 when out of memory */
static int qw_wf_reserve_bytes(qw_wf_defs *d, size_t need) {
    if (need <= d->capbytes) return 1;
    char *q = qw_wf_regrow(d, d->bytes, &d->capbytes, need, 1);
    if (!q) return 0;
    d->bytes = q;
    return 1;
}

/* room for `need` dependencies; 0 when out of memory */
static int qw_wf_reserve_deps(qw_wf_defs *d, size_t need) {
    if (need <= d->capdeps) return 1;
    int32_t *q = qw_wf_regrow(d, d->deps, &d->capdeps, need, sizeof *d->deps);
    if (!q) return 0;
    d->deps = q;
    return 1;
}

/* room for `need` tasks in the per-task arrays, one block that is moved whole */
static int qw_wf_reserve_tasks(qw_wf_defs *d, size_t need) {
    if (need <= d->cap) return 1;
    size_t c = qw_wf_grown(d->cap, need);
    if (c > UINT32_MAX / 4 - 1) return 0;
    uint32_t *b = qw_wf_realloc(d, NULL, 0, (4 * c + 1) * sizeof *b);
    if (!b) return 0;
    if (d->cap) {
        memcpy(b, d->off, d->n * sizeof *b);
        memcpy(b + c, d->len, d->n * sizeof *b);
        memcpy(b + 2 * c, d->hash, d->n * sizeof *b);
        memcpy(b + 3 * c, d->dep_start, (d->n + 1) * sizeof *b);
        qw_wf_free(d, d->off, (4 * (size_t)d->cap + 1) * sizeof *b);
    }
    d->off = b;
    d->len = b + c;
    d->hash = b + 2 * c;
    d->dep_start = b + 3 * c;
    d->cap = (uint32_t)c;
    return 1;
}

/* room for `need` names of dependencies not yet defined (both arrays in one block, as above) */
static int qw_wf_reserve_names(qw_wf_defs *d, size_t need) {
    if (need <= d->capnames) return 1;
    size_t c = qw_wf_grown(d->capnames, need);
    if (c > UINT32_MAX) return 0;
    uint32_t *b = qw_wf_realloc(d, NULL, 0, 2 * c * sizeof *b);
    if (!b) return 0;
    if (d->capnames) {
        memcpy(b, d->name_off, d->nnames * sizeof *b);
        memcpy(b + c, d->name_len, d->nnames * sizeof *b);
        qw_wf_free(d, d->name_off, 2 * d->capnames * sizeof *b);
    }
    d->name_off = b;
    d->name_len = b + c;
    d->capnames = c;
    return 1;
}

/* the slots for one more task: rehashed at a load of one half */
static int qw_wf_reserve_slots(qw_wf_defs *d) {
    if ((size_t)(d->n + 1) * 2 <= d->nslots) return 1;
    if (d->nslots >= (1u << 31)) return 0;
    uint32_t m = d->nslots ? d->nslots * 2 : 256;
    uint32_t *s = qw_wf_realloc(d, NULL, 0, (size_t)m * sizeof *s);
    if (!s) return 0;
    memset(s, 0, (size_t)m * sizeof *s);
    for (uint32_t p = 0; p < d->n; p++) {
        uint32_t k = d->hash[p] & (m - 1);
        while (s[k]) k = (k + 1) & (m - 1);
        s[k] = p + 1;
    }
    qw_wf_free(d, d->slots, (size_t)d->nslots * sizeof *s);
    d->slots = s;
    d->nslots = m;
    return 1;
}

#define QW_WF_NOMEM (-1)   /* out of memory */
#define QW_WF_BAD_DEP (-2) /* a dependency is not a string */
#define QW_WF_TWICE (-3)   /* the id is taken */

/* Adds a task whose id (a string) is at `id` and whose dependencies are the list at `deps`
   (none when `deps` is 0): its place (0-based), or one of the codes above, and then nothing
   has changed. Dependencies are written past the ends of the arrays and count only once all
   of them are in. */
static int64_t qw_wf_add(lua_State *L, qw_wf_defs *d, int id, int deps) {
    size_t len;
    const char *s = lua_tolstring(L, id, &len);
    uint32_t h = qw_wf_hash(s, len);
    if (qw_wf_lookup(d, s, len, h) >= 0) return QW_WF_TWICE;
    size_t m = deps ? lua_rawlen(L, deps) : 0;
    if (len > UINT32_MAX || d->n >= INT32_MAX - 1 || m > INT32_MAX) return QW_WF_NOMEM;
    if (!qw_wf_reserve_tasks(d, (size_t)d->n + 1) || !qw_wf_reserve_slots(d) ||
        !qw_wf_reserve_deps(d, d->ndeps + m))
        return QW_WF_NOMEM;
    size_t nbytes = d->nbytes, nnames = d->nnames;
    for (size_t k = 0; k < m; k++) {
        size_t dl;
        if (lua_rawgeti(L, deps, (lua_Integer)k + 1) != LUA_TSTRING) { lua_pop(L, 1); return QW_WF_BAD_DEP; }
        const char *ds = lua_tolstring(L, -1, &dl);
        int64_t q = qw_wf_defs_find(d, ds, dl);
        if (q < 0) { /* not defined yet: kept by name */
            if (nbytes + dl > UINT32_MAX || nnames >= INT32_MAX || !qw_wf_reserve_bytes(d, nbytes + dl) ||
                !qw_wf_reserve_names(d, nnames + 1)) {
                lua_pop(L, 1);
                return QW_WF_NOMEM;
            }
            memcpy(d->bytes + nbytes, ds, dl);
            d->name_off[nnames] = (uint32_t)nbytes;
            d->name_len[nnames] = (uint32_t)dl;
            nbytes += dl;
            q = -1 - (int64_t)nnames++;
        }
        d->deps[d->ndeps + k] = (int32_t)q;
        lua_pop(L, 1);
    }
    if (nbytes + len > UINT32_MAX || !qw_wf_reserve_bytes(d, nbytes + len)) return QW_WF_NOMEM;
    /* from here on nothing can fail */
    uint32_t p = d->n;
    if (p == 0) d->dep_start[0] = 0;
    d->ndeps += m;
    d->dep_start[p + 1] = (uint32_t)d->ndeps;
    d->nnames = (uint32_t)nnames;
    memcpy(d->bytes + nbytes, s, len);
    d->off[p] = (uint32_t)nbytes;
    d->len[p] = (uint32_t)len;
    d->nbytes = nbytes + len;
    d->hash[p] = h;
    uint32_t k = h & (d->nslots - 1);
    while (d->slots[k]) k = (k + 1) & (d->nslots - 1);
    d->slots[k] = p + 1;
    d->n++;
    return p;
}

qw_wf_defs *qw_wf_defs_at(lua_State *L, int idx) { return luaL_testudata(L, idx, QW_WF_DEFS); }
uint32_t qw_wf_defs_count(const qw_wf_defs *d) { return d->n; }

const char *qw_wf_defs_id(const qw_wf_defs *d, uint32_t i, size_t *len) {
    *len = d->len[i];
    return d->bytes + d->off[i];
}

const int32_t *qw_wf_defs_deps(const qw_wf_defs *d, uint32_t i, uint32_t *count) {
    *count = d->dep_start[i + 1] - d->dep_start[i];
    return *count ? d->deps + d->dep_start[i] : NULL;
}

const char *qw_wf_defs_name(const qw_wf_defs *d, int32_t dep, size_t *len) {
    uint32_t k = (uint32_t)(-1 - dep);
    *len = d->name_len[k];
    return d->bytes + d->name_off[k];
}

static qw_wf_defs *qw_wf_check_defs(lua_State *L) { return luaL_checkudata(L, 1, QW_WF_DEFS); }

/* defs:count() -> the number of tasks */
static int qw_wf_defs_count_l(lua_State *L) {
    lua_pushinteger(L, qw_wf_check_defs(L)->n);
    return 1;
}

/* defs:id(i) -> the id of the task at place i (1-based), or nil */
static int qw_wf_defs_id_l(lua_State *L) {
    qw_wf_defs *d = qw_wf_check_defs(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (i < 1 || i > (lua_Integer)d->n) return 0;
    lua_pushlstring(L, d->bytes + d->off[i - 1], d->len[i - 1]);
    return 1;
}

/* defs:place(id) -> the place (1-based) of the task with that id, or nil */
static int qw_wf_defs_place_l(lua_State *L) {
    qw_wf_defs *d = qw_wf_check_defs(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int64_t p = qw_wf_defs_find(d, s, len);
    if (p < 0) return 0;
    lua_pushinteger(L, p + 1);
    return 1;
}

/* defs:add(id, deps) -> place (1-based): for tasks checked in Lua (a new id, deps nil or a
   list of strings) */
static int qw_wf_defs_add_l(lua_State *L) {
    qw_wf_defs *d = qw_wf_check_defs(L);
    luaL_checktype(L, 2, LUA_TSTRING);
    int64_t p = qw_wf_add(L, d, 2, lua_type(L, 3) == LUA_TTABLE ? 3 : 0);
    if (p == QW_WF_TWICE) return luaL_error(L, "task '%s' is defined twice", lua_tostring(L, 2));
    if (p == QW_WF_BAD_DEP) return luaL_error(L, "the deps of task '%s' must be task ids", lua_tostring(L, 2));
    if (p < 0) return luaL_error(L, "out of memory defining task '%s'", lua_tostring(L, 2));
    lua_pushinteger(L, p + 1);
    return 1;
}

static int qw_wf_defs_gc(lua_State *L) {
    qw_wf_defs *d = luaL_checkudata(L, 1, QW_WF_DEFS);
    free(d->bytes); free(d->off); free(d->deps); free(d->name_off); free(d->slots);
    if (d->heap) d->heap->used -= d->held;
    memset(d, 0, sizeof *d);
    return 0;
}

/* upvalues: 1 the options that need no check, 2 the task table, 3 specs, 4 optss,
   5 the Lua function that checks and adds any task */
static int qw_wf_add_task(lua_State *L) {
    /* 1 wf, 2 id, 3 spec, 4 opts */
    size_t len;
    lua_settop(L, 4);
    int st = lua_type(L, 3), ot = lua_type(L, 4), deps = 0, keep_opts = 0;
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
            size_t kl;
            const char *k = lua_tolstring(L, -1, &kl);
            if (kl != 4 || memcmp(k, "deps", 4) != 0) keep_opts = 1;
        }
        lua_pushliteral(L, "deps");
        int dt = lua_rawget(L, 4);
        if (dt == LUA_TTABLE) deps = 5;
        else if (dt != LUA_TNIL) goto slow;
    } else if (ot != LUA_TNIL) goto slow;
    int64_t p = qw_wf_add(L, lua_touserdata(L, lua_upvalueindex(2)), 2, deps);
    if (p == QW_WF_TWICE || p == QW_WF_BAD_DEP) goto slow; /* the Lua checks explain */
    if (p < 0) return luaL_error(L, "out of memory defining task '%s'", lua_tostring(L, 2));
    lua_pushvalue(L, 3); lua_rawseti(L, lua_upvalueindex(3), p + 1);
    if (keep_opts) lua_pushvalue(L, 4); else lua_pushboolean(L, 0);
    lua_rawseti(L, lua_upvalueindex(4), p + 1);
    lua_settop(L, 1);
    return 1;
slow:
    /* nothing is changed yet: the Lua checks take the call as it came */
    lua_settop(L, 4);
    lua_pushvalue(L, lua_upvalueindex(5));
    lua_insert(L, 1);
    lua_call(L, 4, LUA_MULTRET);
    return lua_gettop(L);
}

int qw_wf_task_adder(lua_State *L) {
    for (int i = 1; i <= 3; i++) luaL_checktype(L, i, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_settop(L, 4);
    qw_wf_defs *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    void *ud;
    if (lua_getallocf(L, &ud) == qw_alloc) d->heap = ud;
    if (luaL_newmetatable(L, QW_WF_DEFS)) {
        static const luaL_Reg methods[] = {
            {"count", qw_wf_defs_count_l}, {"id", qw_wf_defs_id_l}, {"place", qw_wf_defs_place_l},
            {"add", qw_wf_defs_add_l}, {NULL, NULL}};
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, qw_wf_defs_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "workflow tasks");
        lua_setfield(L, -2, "__name");
    }
    lua_setmetatable(L, -2);
    /* 5: the table; the closure's upvalues: options, table, specs, optss, check */
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 5);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 4);
    lua_pushcclosure(L, qw_wf_add_task, 5);
    lua_insert(L, 5);
    return 2;
}
