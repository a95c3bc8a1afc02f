/* Prints the FNV-1a 32-bit hash of a few strings. */
#include <stdint.h>
#include <stdio.h>

static uint32_t fnv1a(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

int main(void) {
    const char *words[] = {"", "a", "quantumwala", "parallel"};
    for (int i = 0; i < 4; i++) printf("%08x \"%s\"\n", (unsigned)fnv1a(words[i]), words[i]);
    return 0;
}
