/* libFuzzer target: the envelope scanner and its accessors must accept or
 * reject any byte string without crashing, reading out of bounds or
 * looping. */
#include "config.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct envelope e;
    const char *err;
    /* A copy of exactly `size` bytes: any read past the end is caught. */
    if (envelope_parse(&e, (const char *)data, size, &err) != ENV_OK) return 0;
    struct env_val v;
    int64_t n;
    if (env_object_get(&e.f[F_CONTEXT], "deadline", &v) == 0) (void)env_number_i64(&v, &n);
    if (env_object_get(&e.f[F_CONTEXT], "depth", &v) == 0) (void)env_number_i64(&v, &n);
    static const char *const keys[] = { "depth", "deadline", "chain", "root" };
    (void)env_object_unambiguous(&e.f[F_CONTEXT], keys, 4);
    const char *cur = NULL;
    int guard = 0;
    while (env_array_next(&e.f[F_METHODS], &cur, &v) && guard++ < 100000) {}
    cur = NULL;
    while (env_array_next(&e.f[F_EVENTS], &cur, &v) && guard++ < 200000) {}
    return 0;
}
