/* Counts the primes below 100000 with a sieve and prints the last five. */
#include <stdio.h>
#include <string.h>

#define N 100000

static char composite[N];

int main(void) {
    int count = 0, last[5] = {0};
    memset(composite, 0, sizeof composite);
    for (int i = 2; i < N; i++) {
        if (composite[i]) continue;
        last[count % 5] = i;
        count++;
        for (long j = (long)i * i; j < N; j += i) composite[j] = 1;
    }
    printf("primes below %d: %d\n", N, count);
    printf("largest:");
    for (int k = 0; k < 5; k++) printf(" %d", last[(count + k) % 5]);
    printf("\n");
    return 0;
}
