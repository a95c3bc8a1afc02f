/* Prints the first 20 Fibonacci numbers. */
#include <stdio.h>

int main(void) {
    unsigned long a = 0, b = 1;
    for (int i = 0; i < 20; i++) {
        printf("%lu\n", a);
        unsigned long next = a + b;
        a = b;
        b = next;
    }
    return 0;
}
