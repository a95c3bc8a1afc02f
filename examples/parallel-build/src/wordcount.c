/* Counts lines, words and characters of a built-in text, like wc. */
#include <ctype.h>
#include <stdio.h>

static const char *text =
    "Quantumwala runs real processes in parallel\n"
    "from Lua coroutines, one scheduler, no locks.\n"
    "Each qw.exec yields; the host waits; many children run at once.\n";

int main(void) {
    int lines = 0, words = 0, chars = 0, in_word = 0;
    for (const char *p = text; *p; p++) {
        chars++;
        if (*p == '\n') lines++;
        if (isspace((unsigned char)*p)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    printf("lines %d words %d chars %d\n", lines, words, chars);
    return 0;
}
