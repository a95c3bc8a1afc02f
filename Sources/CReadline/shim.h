#ifndef QW_CREADLINE_SHIM_H
#define QW_CREADLINE_SHIM_H
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <readline/readline.h>
#include <readline/history.h>

/* GNU readline, loaded with dlopen when the REPL starts: only the REPL needs it, and loading
   it (and the terminfo library under it) at every start of qw costs time that `qw -e` and
   `qw run` do not need. The headers give the types; nothing here names a readline symbol
   for the linker. readline keeps its configuration in globals, which Swift 6 cannot touch
   safely: these accessors are the only way the REPL reaches them. */

typedef char *(*qwrl_generator)(const char *text, int state);
typedef void (*qwrl_line_handler)(char *line);

struct qwrl_api {
    int loaded;
    char *(*readline)(const char *);
    void (*add_history)(const char *);
    int (*read_history)(const char *);
    int (*write_history)(const char *);
    int (*append_history)(int, const char *);
    int (*history_truncate_file)(const char *, int);
    void (*callback_handler_install)(const char *, qwrl_line_handler);
    void (*callback_handler_remove)(void);
    void (*callback_read_char)(void);
    void (*callback_sigcleanup)(void);
    void (*redisplay)(void);
    int (*set_prompt)(const char *);
    void (*free_line_state)(void);
    int (*crlf)(void);
    int (*on_new_line)(void);
    const char **readline_name;
    int *catch_signals;
    int *catch_sigwinch;
    qwrl_generator *completion_entry_function;
    const char **basic_word_break_characters;
    int *completion_append_character;
    int *point;
    int *end;
    int *mark;
    char **line_buffer;
};

/* function-local: a static global in an imported header has no storage emitted for it */
static inline struct qwrl_api *qwrl_api_get(void) {
    static struct qwrl_api api;
    return &api;
}
#define qwrl (*qwrl_api_get())

/** Loads readline; 0 when it is there, else -1 with the loader's message in `why`. */
static inline int qwrl_load(const char **why) {
    if (qwrl.loaded) return 0;
    void *h = dlopen("libreadline.so.8", RTLD_NOW | RTLD_GLOBAL);
    if (!h) h = dlopen("libreadline.so", RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        if (why) *why = dlerror();
        return -1;
    }
#define QWRL_FN(field, name) *(void **)(&qwrl.field) = dlsym(h, name); if (!qwrl.field) goto missing;
    QWRL_FN(readline, "readline")
    QWRL_FN(add_history, "add_history")
    QWRL_FN(read_history, "read_history")
    QWRL_FN(write_history, "write_history")
    QWRL_FN(append_history, "append_history")
    QWRL_FN(history_truncate_file, "history_truncate_file")
    QWRL_FN(callback_handler_install, "rl_callback_handler_install")
    QWRL_FN(callback_handler_remove, "rl_callback_handler_remove")
    QWRL_FN(callback_read_char, "rl_callback_read_char")
    QWRL_FN(callback_sigcleanup, "rl_callback_sigcleanup")
    QWRL_FN(redisplay, "rl_redisplay")
    QWRL_FN(set_prompt, "rl_set_prompt")
    QWRL_FN(free_line_state, "rl_free_line_state")
    QWRL_FN(crlf, "rl_crlf")
    QWRL_FN(on_new_line, "rl_on_new_line")
    QWRL_FN(readline_name, "rl_readline_name")
    QWRL_FN(catch_signals, "rl_catch_signals")
    QWRL_FN(catch_sigwinch, "rl_catch_sigwinch")
    QWRL_FN(completion_entry_function, "rl_completion_entry_function")
    QWRL_FN(basic_word_break_characters, "rl_basic_word_break_characters")
    QWRL_FN(completion_append_character, "rl_completion_append_character")
    QWRL_FN(point, "rl_point")
    QWRL_FN(end, "rl_end")
    QWRL_FN(mark, "rl_mark")
    QWRL_FN(line_buffer, "rl_line_buffer")
#undef QWRL_FN
    qwrl.loaded = 1;
    return 0;
missing:
    if (why) *why = "libreadline lacks a function qw needs";
    return -1;
}

static inline void qwrl_setup(const char *name, qwrl_generator gen) {
    *qwrl.readline_name = name;
    *qwrl.catch_signals = 0;
    *qwrl.catch_sigwinch = 1;
    *qwrl.completion_entry_function = gen;  /* used instead of file name completion */
    /* '.' and ':' belong to a Lua name path such as qw.json.encode or s:upper */
    *qwrl.basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^#~[]";
    *qwrl.completion_append_character = '\0';
}
/* readline sets a space to follow each completion before every attempt: undo that, so
   `qw.js<Tab>` can go on with `.encode`. */
static inline void qwrl_no_append(void) { *qwrl.completion_append_character = '\0'; }
static inline void qwrl_cancel_line(void) {
    qwrl.free_line_state();
    qwrl.callback_sigcleanup();
    *qwrl.point = *qwrl.end = 0;
    *qwrl.mark = 0;
    (*qwrl.line_buffer)[0] = '\0';
    qwrl.crlf();
    qwrl.on_new_line();
    qwrl.redisplay();
}
static inline void qwrl_add_history(const char *line) { qwrl.add_history(line); }
static inline int qwrl_read_history(const char *path) { return qwrl.read_history(path); }
static inline int qwrl_write_history(const char *path) { return qwrl.write_history(path); }
static inline int qwrl_append_history(int n, const char *path) { return qwrl.append_history(n, path); }
static inline int qwrl_history_truncate_file(const char *path, int n) { return qwrl.history_truncate_file(path, n); }
static inline void qwrl_handler_install(const char *prompt, qwrl_line_handler h) { qwrl.callback_handler_install(prompt, h); }
static inline void qwrl_handler_remove(void) { qwrl.callback_handler_remove(); }
static inline void qwrl_read_char(void) { qwrl.callback_read_char(); }
static inline void qwrl_set_prompt(const char *prompt) { qwrl.set_prompt(prompt); }
static inline void qwrl_redisplay(void) { qwrl.redisplay(); }
#endif
