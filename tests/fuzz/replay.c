/* Replays a fuzz corpus through a target without libFuzzer, so every
 * input found so far stays a regression test in `make check` (TAP: one
 * line per input). */
#include "config.h"
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : CORPUS_DIR;
    DIR *d = opendir(dir);
    if (!d) { printf("1..0 # SKIP no corpus at %s\n", dir); return 1; }
    struct dirent *ent;
    int n = 0;
    while ((ent = readdir(d))) {
        if (ent->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        uint8_t *buf = malloc(1 << 20);
        size_t len = fread(buf, 1, 1 << 20, f);
        fclose(f);
        /* An exact-size heap copy, so ASan sees any over-read. */
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        printf("ok %d - %s\n", ++n, ent->d_name);
    }
    closedir(d);
    printf("1..%d\n", n);
    return n ? 0 : 1;
}
