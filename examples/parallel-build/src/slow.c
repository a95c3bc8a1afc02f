/* Never finishes: the job runs it with a timeout, and being killed is the expected result. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("working on it...\n");
    fflush(stdout);
    for (;;) sleep(1);
}
