/* libFuzzer target: liblexbus's frame writer (client/wire.c) against the
 * envelope scanner.  Whatever a caller hands the writer (any JSON value,
 * any UTF-8 name) must come out as a frame the bus accepts, and decode back
 * to the same value: escaping mistakes are caught here, not on the wire.
 * The input is a JSON value (or else its bytes, used as a string). */
#include "config.h"
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "envelope.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Nesting depth of a value (the bus refuses frames nested deeper than
 * ENV_MAX_DEPTH; the payload sits one level inside the envelope). */
static int depth(const json_t *v)
{
    int d = 0;
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_array(v)) json_array_foreach(v, i, x) { int e = depth(x); if (e > d) d = e; }
    else if (json_is_object(v)) json_object_foreach((json_t *)v, k, x) { int e = depth(x); if (e > d) d = e; }
    else return 0;
    return d + 1;
}

static void check(int ok)
{
    if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!v) v = json_stringn((const char *)data, size);   /* NULL unless valid UTF-8 */
    if (!v) return 0;
    if (depth(v) >= ENV_MAX_DEPTH - 1) { json_decref(v); return 0; }   /* refused by design */
    /* A name: the input's bytes up to the first NUL, if they are UTF-8. */
    char name[256];
    size_t nl = strnlen((const char *)data, size < sizeof name - 1 ? size : sizeof name - 1);
    memcpy(name, data, nl);
    name[nl] = 0;
    json_t *name_ok = json_string(name);

    struct wbuf b = { 0 };
    wb_begin(&b);
    wb_key_str(&b, "type", "EMIT");
    if (name_ok) wb_key_str(&b, "event", name);
    wb_key(&b, "payload");
    wb_json(&b, v);
    long n = wb_finish(&b);
    if (n < 0) goto out;   /* not encodable (jansson refuses), nothing sent */
    uint32_t len;
    memcpy(&len, b.p, 4);
    check(ntohl(len) == (size_t)n - 4);

    struct envelope e;
    const char *err;
    check(envelope_parse(&e, b.p + 4, (size_t)n - 4, &err) == ENV_OK);
    const struct env_val *pv = &e.f[F_PAYLOAD];
    size_t raw_off = pv->kind == J_STRING ? 1 : 0;
    json_t *back = json_loadb(pv->p - raw_off, pv->n + 2 * raw_off, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    check(back && json_equal(back, v));
    json_decref(back);
    if (name_ok) {
        const struct env_val *ev = &e.f[F_EVENT];
        json_t *got = json_loadb(ev->p - 1, ev->n + 2, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        check(got && json_equal(got, name_ok));
        json_decref(got);
    }
out:
    json_decref(name_ok);
    json_decref(v);
    wb_free(&b);
    return 0;
}
