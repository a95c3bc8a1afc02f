#ifndef QW_CREADLINE_SHIM_H
#define QW_CREADLINE_SHIM_H
#include <stdio.h>
#include <stdlib.h>
#include <readline/readline.h>
#include <readline/history.h>

/* readline keeps its configuration in globals; Swift 6 cannot touch mutable C globals
   safely, so these accessors are the only way the REPL reaches them. */
typedef char *(*qwrl_generator)(const char *text, int state);

static inline void qwrl_setup(const char *name, qwrl_generator gen) {
    rl_readline_name = name;
    rl_catch_signals = 0;
    rl_catch_sigwinch = 1;
    rl_completion_entry_function = gen;  /* used instead of file name completion */
    /* '.' and ':' belong to a Lua name path such as qw.json.encode or s:upper */
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^#~[]";
    rl_completion_append_character = '\0';
}
/* readline sets a space to follow each completion before every attempt: undo that, so
   `qw.js<Tab>` can go on with `.encode`. */
static inline void qwrl_no_append(void) { rl_completion_append_character = '\0'; }
static inline void qwrl_cancel_line(void) {
    rl_free_line_state();
    rl_callback_sigcleanup();
    rl_point = rl_end = 0;
    rl_mark = 0;
    rl_line_buffer[0] = '\0';
    rl_crlf();
    rl_on_new_line();
    rl_redisplay();
}
#endif
