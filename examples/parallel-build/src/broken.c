/* Does not compile, on purpose: the job reports the error and goes on with the others. */
#include <stdio.h>

int main(void) {
    printf("this line never runs\n")   /* missing semicolon */
    return undeclared_variable;
}
