/* libFuzzer target: bus.conf parsing of arbitrary bytes. */
#include "config.h"
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/lexbus-fuzz-conf-%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    struct conf *c;
    char err[512];
    if (conf_load(path, &c, err, sizeof err) == 0) {
        for (size_t i = 0; i < c->n; i++) {
            struct conf_entry *e = conf_get(&c->s[i], "path", NULL);
            (void)e;
            (void)conf_unused(&c->s[i]);
        }
        char *r = conf_resolve(c, "x/y");
        free(r);
        conf_free(c);
    }
    return 0;
}
