/* Sorts a fixed list of numbers with qsort and prints them on one line. */
#include <stdio.h>
#include <stdlib.h>

static int compare(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int main(void) {
    int v[] = {42, 7, 19, 3, 88, 61, 25, 10, 54, 36};
    size_t n = sizeof v / sizeof v[0];
    qsort(v, n, sizeof v[0], compare);
    for (size_t i = 0; i < n; i++) printf("%d%c", v[i], i + 1 < n ? ' ' : '\n');
    return 0;
}
